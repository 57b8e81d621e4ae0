"""Reading prediction files and writing results atomically, for ``logitloss eval``.

``PATH[:KEY]`` names an array: a ``.npy`` file or a directory of them (read row by row on
demand, so larger-than-memory files stream chunk by chunk), an ``.npz`` member, columns of a
CSV file, of a Parquet file or of a directory of Parquet files (``KEY`` a comma-separated list
of column names or fnmatch patterns such as ``logit_*``; several columns make a 2-D array, one
column per class), or a Zarr array (``PATH.zarr[:KEY]``). :func:`load_inputs` reads logits and
labels together, so that logits without a ``KEY`` in the labels' own file take the columns that
are not the labels'. Every failure is a :class:`DataError` whose message names the file and the
problem.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .sources import DataError, NpyStack, ParquetSource, ZarrSource, select_columns

# A KEY as typed (``"a,b"``, ``"logit_*"``), or column names already resolved (a list, so that
# names holding a comma survive), or None for no KEY.
Key = str | list[str] | None

__all__ = [
    "DataError",
    "atomic_path",
    "check_output",
    "load",
    "load_inputs",
    "require",
    "split_spec",
    "write_to",
]

# The extra of pyproject.toml that installs each optional dependency of the command line.
EXTRAS = {"matplotlib": "cli", "pyarrow": "cli", "zarr": "dask", "distributed": "dask"}


def require(module: str, purpose: str) -> None:
    """Import ``module`` now, before any work, or raise a one-line DataError naming it.

    Parameters
    ----------
    module : str
        The module to import, e.g. ``"matplotlib"`` or ``"pyarrow.parquet"``.
    purpose : str
        What needs it, as the user asked for it (``"--plot"``, ``"--engine dask"``).

    Raises
    ------
    DataError
        ``"--plot needs matplotlib ... pip install 'logitloss[cli]'"`` when it cannot be
        imported.
    """
    package = module.partition(".")[0]
    extra = EXTRAS.get(package)
    hint = f"pip install 'logitloss[{extra}]'" if extra else f"pip install {package}"
    try:
        # The package first: a cached submodule would hide a package that cannot be imported.
        importlib.import_module(package)
        importlib.import_module(module)
    except ImportError as error:
        raise DataError(
            f"{purpose} needs {package}, which cannot be imported ({error}); install it: {hint}"
        ) from None


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``'preds.npz:logits'`` -> ``(Path('preds.npz'), 'logits')``; a bare path has no key."""
    path, sep, key = spec.rpartition(":")
    if not sep or not path or "/" in key or key.endswith(tuple(SUFFIXES)):
        return Path(spec), None
    return Path(path), key


def load(spec: str) -> Any:
    """The array named by ``PATH[:KEY]``: a NumPy array (``.npz``, CSV) or a lazy source
    (``.npy``, Parquet, Zarr, directories) that reads the rows it is sliced for."""
    return _load(*split_spec(spec))


def load_inputs(logits_spec: str, labels_spec: str) -> tuple[Any, Any]:
    """The logits and the labels, as :func:`load` reads each, with one rule for a shared file.

    When ``--logits`` has no ``KEY`` and names the labels' own CSV or Parquet file, the logits
    are every column but the labels' (an ``.npz``: the one member that is not the labels').
    Cases that cannot be told apart are refused with the columns and the syntax: neither has a
    ``KEY``, the labels have none, or the columns left are not all logits (a Parquet column that
    is not floating point; in a CSV file, whole numbers only beside columns with fractions).

    Raises
    ------
    DataError
        For those cases, and every error of :func:`load`.
    """
    logits_path, logits_key = split_spec(logits_spec)
    labels_path, labels_key = split_spec(labels_spec)
    columns: list[str] = []
    if (logits_key is None or labels_key is None) and _same_file(logits_path, labels_path):
        if _column_file(logits_path):
            logits_key, columns = _columns_but_labels(logits_path, logits_key, labels_key)
        elif logits_path.suffix.lower() == ".npz" and logits_key is None and labels_key:
            logits_key = _member_but_labels(logits_path, labels_key)
    logits = _load(logits_path, logits_key)
    if columns and logits_path.suffix.lower() == ".csv":
        _check_whole_numbers(logits_path, logits, logits_key, columns)
    return logits, _load(labels_path, labels_key)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # a missing file: load() says so
        return False


def _column_file(path: Path) -> bool:
    """A CSV or Parquet file, or a directory of Parquet files: columns chosen by name."""
    if path.is_dir():
        return path.suffix.lower() != ".zarr" and any(path.glob("*.parquet"))
    return path.suffix.lower() in (".csv", ".parquet")


def _column_types(path: Path) -> dict[str, str]:
    """The columns of a CSV file (type unknown: ``""``) or a Parquet file or dataset (its type,
    e.g. ``"double"``), in the file's order."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), None)
        if header is None:
            raise DataError(f"{path}: empty file")
        return dict.fromkeys(header, "")
    require("pyarrow.parquet", f"reading {path}")
    import pyarrow.parquet as pq

    first = min(path.glob("*.parquet")) if path.is_dir() else path
    try:
        schema = pq.read_schema(first)
    except Exception as error:  # pyarrow raises its own error types for corrupt files
        raise DataError(f"{first}: cannot read it ({error})") from None
    return {field.name: str(field.type) for field in schema}


def _columns_but_labels(
    path: Path, logits_key: Key, labels_key: Key
) -> tuple[list[str], list[str]]:
    """The logits' columns of a file that holds the labels too (see :func:`load_inputs`), and
    all its columns."""
    types = _column_types(path)
    listed = f"(columns: {', '.join(types)})"
    if labels_key is None:
        both = "--logits and --labels" if logits_key is None else "--labels"
        raise DataError(
            f"{path}: {both} without :KEY would take every column of the same file {listed}; "
            f"name the columns, e.g. --logits {path}:logit_* --labels {path}:label"
        )
    labels = select_columns(path, labels_key, list(types))
    rest = [name for name in types if name not in labels]
    if not rest:
        raise DataError(
            f"{path}: --logits without :KEY has no column left besides the labels' {listed}; "
            f"name the logits' file and columns, e.g. --logits FILE:logit_*"
        )
    if any(types.values()):  # Parquet: every logit column is floating point
        other = [name for name in rest if not _floating_type(types[name])]
        if other:
            kinds = ", ".join(f"{name!r} ({types[name]})" for name in other)
            floats = [name for name in rest if name not in other] or ["a", "b"]
            raise DataError(
                f"{path}: --logits without :KEY cannot tell the logits from {kinds} {listed}; "
                f"name them, e.g. --logits {path}:{','.join(floats)} or {path}:PREFIX*"
            )
    return rest, list(types)


def _floating_type(arrow_type: str) -> bool:
    return arrow_type in ("halffloat", "float", "double", "float16", "float32", "float64")


def _check_whole_numbers(
    path: Path, logits: np.ndarray, rest: list[str], columns: list[str]
) -> None:
    """CSV has no column types: a column of whole numbers only (an id, a class) beside columns
    with fractions is not taken for logits without asking."""
    values = logits.reshape(len(logits), -1)
    whole = [name for i, name in enumerate(rest) if np.all(values[:, i] == np.round(values[:, i]))]
    if whole and len(whole) < len(rest):
        floats = [name for name in rest if name not in whole]
        raise DataError(
            f"{path}: --logits without :KEY cannot tell the logits from "
            f"{', '.join(map(repr, whole))} (whole numbers only) (columns: {', '.join(columns)}); "
            f"name them, e.g. --logits {path}:{','.join(floats)} or {path}:PREFIX*"
        )


def _member_but_labels(path: Path, labels_key: str) -> str:
    """The one member of an ``.npz`` file that is not the labels'."""
    with np.load(path, allow_pickle=False) as members:
        rest = [name for name in members.files if name != labels_key]
    if len(rest) != 1:
        raise DataError(
            f"{path}: --logits without :KEY is ambiguous, the file holds {rest} besides the "
            f"labels' {labels_key!r}; name one as --logits {path}:KEY"
        )
    return rest[0]


def _load(path: Path, key: Key) -> Any:
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


def _load_directory(path: Path, key: Key) -> Any:
    """A directory of ``.parquet`` files (a dataset) or of ``.npy`` files (a stack)."""
    if any(path.glob("*.parquet")):
        return ParquetSource(path, key)
    return _load_npy(path, key)


def _load_npy(path: Path, key: Key) -> NpyStack:
    if key is not None:
        raise DataError(f"{path}: .npy files hold one array each; drop ':{key}'")
    return NpyStack(path)


def _load_npz(path: Path, key: Key) -> np.ndarray:
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


def _load_csv(path: Path, key: Key) -> np.ndarray:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file")
        names = select_columns(path, key, header)
        index = [header.index(name) for name in names]
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[i]) for i in index])
            except (ValueError, IndexError):
                raise DataError(f"{path}: line {line} is not numeric in {names}") from None
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(index))
    return _stack(path, [data[:, i] for i in range(len(index))])


def _load_parquet(path: Path, key: Key) -> ParquetSource:
    return ParquetSource(path, key)


def _load_zarr(path: Path, key: Key) -> ZarrSource:
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
        # mkstemp creates the file 0600 and the rename keeps that: give it the mode that
        # open(path, "w") would have (an existing file's, else 0666 less the umask).
        os.chmod(temporary, _output_mode(path))
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _output_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` leaves ``path`` with."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)  # open() truncates, the mode stays
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere it can only be read by setting
    it, so it is set back at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
