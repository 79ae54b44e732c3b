"""Read entry ranges of ROOT / npz shards into numpy arrays, and gather rows from them.

Arrays come back in their batch dtype (float32 for the inputs and float truth,
int64 for integer truth) so that later steps never convert again. npz members stored
uncompressed (np.savez) are memory-mapped; compressed ones are loaded once per file.
`ChunkReader.read` may be called from several threads (reads take turns).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np

from lib.data.files import BranchInfo, DataError, FileInfo, npz_members

Columns = dict[str, np.ndarray]


def batch_dtype(branch: BranchInfo) -> np.dtype:
    """int64 for integer branches (run, event), float32 for everything else."""
    return np.dtype(np.int64) if branch.dtype.kind in "iub" else np.dtype(np.float32)


class ChunkReader:
    """Reads `branches` for entry ranges of the given files; keeps files open until `close`."""

    def __init__(self, files: Sequence[FileInfo], tree_name: str, branches: Mapping[str, np.dtype]):
        self.files = files
        self.tree_name = tree_name
        self.branches = dict(branches)
        self._open: dict[int, object] = {}
        self._lock = threading.Lock()  # open files are read by one thread at a time

    def read(self, file: int, start: int, stop: int) -> Columns:
        """Entries [start, stop) of file number `file` as {branch: array (n, ...)}."""
        info = self.files[file]
        try:
            read = self._read_root if info.kind == "root" else self._read_npz
            with self._lock:
                raw = read(file, start, stop)
            return {name: np.asarray(raw[name]).astype(dtype, copy=False) for name, dtype in self.branches.items()}
        except DataError:
            raise
        except Exception as err:  # decompression and I/O errors come in many types
            raise DataError(
                f"file {info.path}: cannot read entries {start}-{stop} ({type(err).__name__}: {err}); is it damaged?"
            ) from err

    def _read_root(self, file: int, start: int, stop: int) -> Mapping[str, np.ndarray]:
        import uproot

        if file not in self._open:
            self._open[file] = uproot.open(self.files[file].path, array_cache=None)  # every range is read once
        tree = self._open[file][self.tree_name]
        return tree.arrays(filter_name=list(self.branches), entry_start=start, entry_stop=stop, library="np")

    def _read_npz(self, file: int, start: int, stop: int) -> Mapping[str, np.ndarray]:
        if file not in self._open:
            self._open[file] = _open_npz(self.files[file], list(self.branches))
        return {name: array[start:stop] for name, array in self._open[file].items()}

    def close(self) -> None:
        for handle in self._open.values():
            if hasattr(handle, "close"):
                handle.close()
        self._open.clear()

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_npz(info: FileInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    members = npz_members(info.path)
    arrays: dict[str, np.ndarray] = {}
    loaded = None
    for name in names:
        m = members[name]
        if m.offset is not None:
            order = "F" if m.fortran_order else "C"
            arrays[name] = np.memmap(info.path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape, order=order)
        else:
            loaded = loaded if loaded is not None else np.load(info.path)
            arrays[name] = loaded[name]
    return arrays


def concat_columns(parts: Sequence[Columns]) -> Columns:
    """Row-wise concatenation of column dicts with the same keys."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class Pool:
    """Consecutive row blocks (`parts`) addressed by one running row index."""

    def __init__(self, parts: Sequence[Columns]):
        if not parts:
            raise ValueError("a Pool needs at least one part")
        self.parts = list(parts)
        sizes = [len(next(iter(p.values()))) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def take(self, rows: np.ndarray) -> Columns:
        """Rows `rows` (sorted ascending) gathered into new arrays, one copy per column."""
        bounds = np.searchsorted(rows, self.starts)
        template = self.parts[0]
        out = {name: np.empty((len(rows), *a.shape[1:]), dtype=a.dtype) for name, a in template.items()}
        for part, start, lo, hi in zip(self.parts, self.starts, bounds[:-1], bounds[1:]):
            if hi > lo:
                local = rows[lo:hi] - start
                for name, array in part.items():
                    np.take(array, local, axis=0, out=out[name][lo:hi], mode="clip")
        return out
