"""Row-addressable datasets on disk: ``.npy`` files and stacks, Parquet files and datasets, Zarr.

A source has ``shape``, ``dtype``, ``ndim``, ``len()`` and ``source[start:stop]`` -> a NumPy
array of those rows, read from disk on demand, so both engines of ``logitloss eval`` slice it
like an array. Sources are small and picklable (paths and metadata, no data, no open handles), so
the Dask engine ships them to workers, which read their own rows. ``.npy`` rows are read with
plain file reads, not memory maps: pages of a map stay in the process's resident memory after
use, which a Dask worker's memory limit would count against it.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import numpy as np


class DataError(Exception):
    """A problem with an input or output file, reported in one line (exit status 1)."""


class _Rows:
    """Shared array-like surface: ``shape``, ``ndim``, ``len()``, ``[start:stop]``."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    boundaries: list[int]  # row offsets where a file (or row group) starts, then the row count

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"{self.name}: only row slices [start:stop] are supported")
        start, stop, _ = rows.indices(len(self))
        stop = max(start, stop)
        pieces = []
        for i in range(len(self.boundaries) - 1):
            lo, hi = self.boundaries[i], self.boundaries[i + 1]
            if hi > start and lo < stop:
                pieces.append(self._read(i, max(start, lo) - lo, min(stop, hi) - lo))
        if not pieces:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _read(self, part: int, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


def _consistent(name: str, shapes: list[tuple[Path, tuple[int, ...], np.dtype]]) -> None:
    """Every part of a stack has the first part's row shape and dtype."""
    _, shape0, dtype0 = shapes[0]
    for path, shape, dtype in shapes[1:]:
        if shape[1:] != shape0[1:] or dtype != dtype0:
            raise DataError(
                f"{path}: rows of shape {shape[1:]} {dtype} differ from {shapes[0][0].name}'s "
                f"{shape0[1:]} {dtype0} in {name}"
            )


class NpyStack(_Rows):
    """One ``.npy`` file, or a directory of them concatenated along rows (sorted by name)."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: a directory with no .npy or .parquet files")
        self.parts: list[tuple[str, int, bool]] = []  # (file, data offset, fortran order)
        shapes = []
        for file in files:
            try:
                with file.open("rb") as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read_header(handle)
                    offset = handle.tell()
            except (OSError, ValueError, EOFError) as error:
                raise DataError(f"{file}: cannot read it ({error})") from None
            if dtype.hasobject:
                raise DataError(f"{file}: holds Python objects, not numbers")
            if len(shape) == 0:
                raise DataError(f"{file}: need rows, got a scalar")
            expected = offset + int(np.prod(shape)) * dtype.itemsize
            if file.stat().st_size < expected:
                raise DataError(f"{file}: cannot read it (truncated: {file.stat().st_size} bytes)")
            shapes.append((file, tuple(shape), dtype))
            self.parts.append((str(file), offset, fortran))
        _consistent(self.name, shapes)
        self.dtype = shapes[0][2]
        self.shape = (sum(s[1][0] for s in shapes), *shapes[0][1][1:])
        self.boundaries = [0, *np.cumsum([s[1][0] for s in shapes]).tolist()]
        self._row_shapes = [s[1] for s in shapes]

    def _read(self, part: int, start: int, stop: int) -> np.ndarray:
        file, offset, fortran = self.parts[part]
        shape = self._row_shapes[part]
        if fortran:  # rows are not contiguous on disk; a memory map reads the strided values
            return np.array(np.load(file, mmap_mode="r")[start:stop])
        row_items = int(np.prod(shape[1:]))
        try:
            data = np.fromfile(
                file,
                dtype=self.dtype,
                count=(stop - start) * row_items,
                offset=offset + start * row_items * self.dtype.itemsize,
            )
        except OSError as error:
            raise DataError(f"{file}: cannot read it ({error})") from None
        return data.reshape(stop - start, *shape[1:])


GLOB_CHARACTERS = frozenset("*?[")


def select_columns(path: Path, key: str | list[str] | None, available: list[str]) -> list[str]:
    """The column names of ``KEY`` (all columns without one).

    ``KEY`` is a comma-separated list of names or fnmatch patterns (``logit_*``); a pattern
    stands for the columns it matches, in the file's order. A list holds exact names (already
    resolved). A name that is not a column, or a pattern that matches none, is a DataError
    listing the columns.
    """
    if key is None:
        return available
    exact = isinstance(key, list)
    wanted: list[str] = []
    for item in key if exact else (name.strip() for name in key.split(",")):
        if item in available:  # an exact name wins, even one with * in it
            wanted.append(item)
            continue
        if exact or GLOB_CHARACTERS.isdisjoint(item):
            raise DataError(f"{path}: no column {item!r} (columns: {', '.join(available)})")
        matched = [name for name in available if fnmatch.fnmatchcase(name, item)]
        if not matched:
            raise DataError(f"{path}: no column matches {item!r} (columns: {', '.join(available)})")
        wanted += matched
    return wanted


class ParquetSource(_Rows):
    """Columns of a Parquet file, or of a directory of them (a dataset), read by row group."""

    def __init__(self, path: Path, key: str | list[str] | None) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                f"{path}: reading Parquet needs pyarrow (pip install 'logitloss[cli]')"
            ) from None
        self.name = str(path)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        self.groups: list[tuple[str, int]] = []
        sizes = []
        names: list[str] | None = None
        for file in files:
            try:
                meta = pq.ParquetFile(file).metadata
            except Exception as error:  # pyarrow raises its own error types for corrupt files
                raise DataError(f"{file}: cannot read it ({error})") from None
            available = meta.schema.to_arrow_schema().names
            names = select_columns(file, key, available) if names is None else names
            select_columns(file, names, available)  # every file of a dataset has the columns
            for group in range(meta.num_row_groups):
                self.groups.append((str(file), group))
                sizes.append(meta.row_group(group).num_rows)
        self.columns = names or []
        self.boundaries = [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
        first = self._read_group(0) if self.groups else np.zeros(0)
        self.dtype = first.dtype
        self.shape = (self.boundaries[-1], *first.shape[1:])

    def _read_group(self, part: int) -> np.ndarray:
        import pyarrow.parquet as pq

        file, group = self.groups[part]
        try:
            table = pq.ParquetFile(file).read_row_group(group, columns=self.columns)
            columns = [table.column(name).to_numpy() for name in self.columns]
        except Exception as error:  # nulls, nested columns, corrupt pages: pyarrow's own types
            raise DataError(f"{file}: cannot read {self.columns} as numbers ({error})") from None
        return columns[0] if len(columns) == 1 else np.stack(columns, axis=1)

    def _read(self, part: int, start: int, stop: int) -> np.ndarray:
        return self._read_group(part)[start:stop]


class ZarrSource(_Rows):
    """A Zarr array (``PATH.zarr``, or ``PATH.zarr:KEY`` for an array in a group)."""

    def __init__(self, path: Path, key: str | None) -> None:
        self.name = f"{path}:{key}" if key else str(path)
        self.path, self.key = str(path), key
        array = self._open()
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        if not self.shape:
            raise DataError(f"{self.name}: need rows, got a scalar")
        step = int(array.chunks[0]) if array.chunks and array.chunks[0] else self.shape[0]
        self.boundaries = [*range(0, self.shape[0], max(step, 1)), self.shape[0]]

    def _open(self) -> Any:
        try:
            import zarr
        except ImportError:
            raise DataError(
                f"{self.path}: reading Zarr needs zarr (pip install 'logitloss[dask]')"
            ) from None
        try:
            node = zarr.open(self.path, mode="r")
            if self.key is not None:
                node = node[self.key]
        except KeyError:
            raise DataError(f"{self.path}: no array {self.key!r}") from None
        except Exception as error:  # zarr raises several types for missing or corrupt stores
            raise DataError(f"{self.path}: cannot read it ({error})") from None
        if not hasattr(node, "dtype"):
            names = sorted(node.array_keys()) if hasattr(node, "array_keys") else []
            raise DataError(f"{self.path}: a group; name an array as {self.path}:KEY ({names})")
        return node

    def _read(self, part: int, start: int, stop: int) -> np.ndarray:
        lo = self.boundaries[part]
        try:
            return np.asarray(self._open()[lo + start : lo + stop])
        except DataError:
            raise
        except Exception as error:  # a corrupt chunk
            raise DataError(
                f"{self.name}: cannot read rows {lo + start}:{lo + stop} ({error})"
            ) from None


class MovedAxis(_Rows):
    """A source (or array) seen with its axis ``axis`` moved last, as ``np.moveaxis`` would.

    ``logitloss eval --axis`` computes along the last axis (the sparse loss has no other), so
    the class axis of N-D logits is moved there one slice of rows at a time; the rows (axis 0)
    stay first. Small and picklable like the sources it wraps, for the Dask engine.
    """

    def __init__(self, source: Any, axis: int) -> None:
        if not 0 < axis < source.ndim:
            raise ValueError(f"axis {axis} is not one of 1..{source.ndim - 1}")
        self.source, self.axis = source, axis
        self.name = getattr(source, "name", "array")
        shape = tuple(source.shape)
        self.shape = (*shape[:axis], *shape[axis + 1 :], shape[axis])
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.moveaxis(np.asarray(self.source[rows]), self.axis, -1)
