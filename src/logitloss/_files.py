"""Reading prediction files and writing results atomically, for ``logitloss eval``.

``PATH[:KEY]`` names an array: a ``.npy`` file or a directory of them (read row by row on
demand, so larger-than-memory files stream chunk by chunk), an ``.npz`` member, columns of a
CSV file, of a Parquet file or of a directory of Parquet files (``KEY`` a comma-separated list
of column names; several columns make a 2-D array, one column per class), or a Zarr array
(``PATH.zarr[:KEY]``). Every failure is a :class:`DataError` whose message names the file and
the problem.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._sources import DataError, NpyStack, ParquetSource, ZarrSource, _columns

__all__ = ["DataError", "atomic_path", "load", "split_spec", "write_to"]


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``'preds.npz:logits'`` -> ``(Path('preds.npz'), 'logits')``; a bare path has no key."""
    path, sep, key = spec.rpartition(":")
    if not sep or not path or "/" in key or key.endswith(tuple(SUFFIXES)):
        return Path(spec), None
    return Path(path), key


def load(spec: str) -> Any:
    """The array named by ``PATH[:KEY]``: a NumPy array (``.npz``, CSV) or a lazy source
    (``.npy``, Parquet, Zarr, directories) that reads the rows it is sliced for."""
    path, key = split_spec(spec)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir() and suffix != ".zarr":
        return _load_directory(path, key)
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix!r} (use {', '.join(SUFFIXES)})")
    try:
        return SUFFIXES[suffix](path, key)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataError(f"{path}: cannot read it ({error})") from None


def _load_directory(path: Path, key: str | None) -> Any:
    """A directory of ``.parquet`` files (a dataset) or of ``.npy`` files (a stack)."""
    if any(path.glob("*.parquet")):
        return ParquetSource(path, key)
    return _load_npy(path, key)


def _load_npy(path: Path, key: str | None) -> NpyStack:
    if key is not None:
        raise DataError(f"{path}: .npy files hold one array each; drop ':{key}'")
    return NpyStack(path)


def _load_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as members:
        names = list(members.files)
        if key is None:
            if len(names) != 1:
                raise DataError(f"{path}: holds {names}; name one as {path}:KEY")
            key = names[0]
        if key not in names:
            raise DataError(f"{path}: no member {key!r} (it holds {names})")
        return members[key]


def _stack(path: Path, columns: list[np.ndarray]) -> np.ndarray:
    if len(columns) == 1:
        return columns[0]
    return np.stack(columns, axis=1)


def _load_csv(path: Path, key: str | None) -> np.ndarray:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file")
        names = _columns(path, key, header)
        index = [header.index(name) for name in names]
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[i]) for i in index])
            except (ValueError, IndexError):
                raise DataError(f"{path}: line {line} is not numeric in {names}") from None
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(index))
    return _stack(path, [data[:, i] for i in range(len(index))])


def _load_parquet(path: Path, key: str | None) -> ParquetSource:
    return ParquetSource(path, key)


def _load_zarr(path: Path, key: str | None) -> ZarrSource:
    return ZarrSource(path, key)


SUFFIXES = {
    ".npy": _load_npy,
    ".npz": _load_npz,
    ".csv": _load_csv,
    ".parquet": _load_parquet,
    ".zarr": _load_zarr,
}
OUTPUT_SUFFIXES = (".npy", ".csv", ".parquet")


def check_output(path: Path, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> Path:
    """``path`` if it can be written as an output: a known type and an existing directory
    (checked before long work, and again by :func:`atomic_path`)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{path}: unknown output type (use {', '.join(suffixes)})")
    if not path.parent.exists():
        raise DataError(f"{path}: no such directory {path.parent}")
    return path


@contextlib.contextmanager
def atomic_path(path: Path, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    An error or Ctrl-C inside the block removes the temporary file: no partial output is left.
    ``suffixes`` are the accepted output types.
    """
    path = check_output(path, suffixes)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_to(path: Path, suffix: str, values: np.ndarray) -> None:
    """Write per-row losses to ``path`` in the format of ``suffix`` (.npy, .csv or .parquet)."""
    if suffix == ".npy":
        with path.open("wb") as handle:
            np.save(handle, values)
    elif suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(_column_names(values))
            writer.writerows(values.reshape(len(values), -1).tolist())
    else:
        _write_parquet(path, values)


def _column_names(values: np.ndarray) -> list[str]:
    if values.ndim == 1:
        return ["loss"]
    return [f"loss_{i}" for i in range(int(np.prod(values.shape[1:])))]


def _write_parquet(path: Path, values: np.ndarray) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow)") from None
    flat = values.reshape(len(values), -1)
    names = _column_names(values)
    pq.write_table(pa.table({n: flat[:, i] for i, n in enumerate(names)}), path)
