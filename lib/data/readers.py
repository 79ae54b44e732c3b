"""Read entry ranges of ROOT / npz shards into numpy arrays, and gather rows from them.

Arrays come back in their batch dtype (float32 for the inputs and float truth,
int64 for integer truth) so that later steps never convert again. ROOT files are read alike
whether a TTree or an RNTuple holds the events; a std::vector input is read as awkward
arrays and made regular (about 0.65x the rate of a fixed-size array branch). npz members
stored uncompressed (np.savez) are memory-mapped; compressed ones are loaded once per file.
`ChunkReader.read` may be called from several threads at once.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from lib.data.files import BranchInfo, DataError, FileInfo, npz_members, open_root
from lib.geometry import N_SENSORS

Columns = dict[str, np.ndarray]
EVENT_IDS = ("run", "event")
"""The columns that identify an event; made up from (file number, entry) for files without them."""


def batch_dtype(branch: BranchInfo) -> np.dtype:
    """int64 for integer branches (run, event), float32 for everything else."""
    return np.dtype(np.int64) if branch.dtype.kind in "iub" else np.dtype(np.float32)


def read_root_range(events, info: FileInfo, names: Sequence[str], start: int, stop: int) -> Columns:
    """Entries [start, stop) of the branches `names` of a TTree or RNTuple `events` as numpy
    arrays; std::vector branches become (n, N_SENSORS) arrays (any other length is an error)."""
    import awkward as ak

    fixed = [name for name in names if not info.branches[name].vector]
    raw = dict(events.arrays(filter_name=fixed, entry_start=start, entry_stop=stop, library="np")) if fixed else {}
    for name in names:
        if name in raw:
            continue
        values = events[name].array(entry_start=start, entry_stop=stop, library="ak")
        counts = ak.to_numpy(ak.num(values, axis=1))
        wrong = np.flatnonzero(counts != N_SENSORS)
        if wrong.size:
            raise DataError(f"file {info.path}: std::vector branch {name!r} holds {counts[wrong[0]]} values in entry "
                            f"{start + wrong[0]}, expected {N_SENSORS} (one per sensor)")
        raw[name] = ak.to_numpy(ak.flatten(values)).reshape(len(counts), N_SENSORS)
    return raw


class ChunkReader:
    """Reads `branches` for entry ranges of the given files.

    Safe to call from several threads at once: each read takes a file handle no other read
    is using (opening one if needed), so reads overlap (decompression and file reads
    release the GIL). Idle handles stay open for later reads, at most `keep_open` of them
    (least recently used closed first; a stream may visit thousands of shards), until `close`.
    With `made_up_ids` every read also returns EVENT_IDS made up from where the rows are:
    run = the file's number in `files`, event = the entry number in that file (int64).
    """

    def __init__(self, files: Sequence[FileInfo], tree_name: str, branches: Mapping[str, np.dtype],
                 keep_open: int = 8, made_up_ids: bool = False):  # fmt: skip
        self.files = files
        self.tree_name = tree_name
        self.branches = dict(branches)
        self.keep_open = keep_open
        self.made_up_ids = made_up_ids
        self._idle: list[tuple[int, object]] = []  # (file number, handle), least recently used first
        self._lock = threading.Lock()

    def read(self, file: int, start: int, stop: int) -> Columns:
        """Entries [start, stop) of file number `file` as {branch: array (n, ...)}."""
        info = self.files[file]
        try:
            handle = self._checkout(file)
            try:
                if info.kind == "root":
                    raw = read_root_range(handle[self.tree_name], info, list(self.branches), start, stop)
                else:
                    raw = {name: array[start:stop] for name, array in handle.items()}
            finally:
                self._checkin(file, handle)
            columns = {name: np.asarray(raw[name]).astype(dtype, copy=False) for name, dtype in self.branches.items()}
            if self.made_up_ids:
                columns.update(run=np.full(stop - start, file, np.int64), event=np.arange(start, stop, dtype=np.int64))
            return columns
        except DataError:
            raise
        except Exception as err:  # decompression and I/O errors come in many types
            raise DataError(
                f"file {info.path}: cannot read entries {start}-{stop} ({type(err).__name__}: {err}); is it damaged?"
            ) from err

    def _checkout(self, file: int) -> object:
        """An idle handle of `file` (an uproot file, or a dict of npz arrays), or a new one."""
        with self._lock:
            for k in range(len(self._idle) - 1, -1, -1):
                if self._idle[k][0] == file:
                    return self._idle.pop(k)[1]
        info = self.files[file]
        return open_root(info.path) if info.kind == "root" else _open_npz(info, list(self.branches))

    def _checkin(self, file: int, handle: object) -> None:
        with self._lock:
            self._idle.append((file, handle))
            evicted = self._idle.pop(0)[1] if len(self._idle) > self.keep_open else None
        if evicted is not None:
            _close(evicted)

    def close(self) -> None:
        """Close the handles (call when no read is running)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, handle in idle:
            _close(handle)

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close(handle: object) -> None:
    if hasattr(handle, "close"):
        handle.close()


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


def _unused(arrays: Columns) -> bool:
    """True when `arrays` (a dict) is the only holder of each of its arrays: no batch, tensor
    or view refers to them any more (getrefcount counts its own argument as one more)."""
    return all(sys.getrefcount(arrays[name]) == 2 for name in arrays)


class BatchRecycler:
    """Arrays to assemble batches in, reused once nothing else refers to them.

    Fresh memory for every batch costs a page fault per page touched: about as long as
    filling it, and for arrays of 4 MB and more (which numpy advises Linux to back
    with huge pages) stalls of about 20 ms now and then in a VM. A set of arrays handed out
    (also inside the torch tensors of a batch) is reused only after every other reference
    to each of its arrays is gone, so a consumer that keeps a batch keeps its values. A
    request takes the smallest free set with enough rows (as views of its first rows).
    At most `keep` sets are remembered; beyond that, fresh arrays are handed out.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._sets: list[tuple[tuple, int, Columns]] = []  # (row shapes and dtypes, rows, arrays)
        self._lock = threading.Lock()

    def empty(self, template: Columns, n: int) -> Columns:
        """Uninitialized arrays of n rows with template's row shapes and dtypes."""
        key = tuple((name, a.shape[1:], a.dtype) for name, a in template.items())
        with self._lock:
            fits = [(rows, arrays) for k, rows, arrays in self._sets if k == key and rows >= n]
            for _, arrays in sorted(fits, key=lambda fit: fit[0]):
                if _unused(arrays):
                    return {name: a[:n] for name, a in arrays.items()}
            fresh = {name: np.empty((n, *shape), dtype) for name, shape, dtype in key}
            if len(self._sets) < self.keep:
                self._sets.append((key, n, fresh))
            return dict(fresh)


class Pool:
    """Consecutive row blocks (`parts`) addressed by one running row index; `take` gathers
    into arrays of `recycler` if given, else into fresh ones."""

    def __init__(self, parts: Sequence[Columns], recycler: BatchRecycler | None = None):
        if not parts:
            raise ValueError("a Pool needs at least one part")
        self.parts = list(parts)
        self.recycler = recycler
        sizes = [len(next(iter(p.values()))) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def take(self, rows: np.ndarray) -> Columns:
        """Rows `rows` (sorted ascending) gathered into new arrays, one copy per column."""
        bounds = np.searchsorted(rows, self.starts)
        template = self.parts[0]
        if self.recycler is not None:
            out = self.recycler.empty(template, len(rows))
        else:
            out = {name: np.empty((len(rows), *a.shape[1:]), dtype=a.dtype) for name, a in template.items()}
        for part, start, lo, hi in zip(self.parts, self.starts, bounds[:-1], bounds[1:]):
            if hi > lo:
                local = rows[lo:hi] - start
                for name, array in part.items():
                    np.take(array, local, axis=0, out=out[name][lo:hi], mode="clip")
        return out
