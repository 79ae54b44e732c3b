"""The streaming side of the loader: one stream's batches for one epoch, and the
IterableDataset that runs the streams in DataLoader workers.

All decisions (which chunks, which events in which batch) come from `lib.data.plan`;
this module only reads the chunks a window needs, normalizes each chunk as a whole and
gathers the batches from the normalized rows. Each stream runs that work in `THREADS`
threads (one chunk is read while another is normalized, the next batch is gathered while
the current one is used): uproot's decompression and numpy release the GIL, so a loader
without worker processes can use two cores.
"""
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lib.data.files import FileInfo
from lib.data.plan import Chunk, chunk_offsets, stream_windows
from lib.data.readers import ChunkReader, Columns, Pool, concat_columns
from lib.normalization import NormalizationConfig, normalize

Batch = dict[str, torch.Tensor]
THREADS = 2  # per stream: chunks read / normalized and batches gathered at the same time
T = TypeVar("T")
R = TypeVar("R")


def in_order(threads: Executor, work: Callable[[T], R], items: Iterable[T], ahead: int = THREADS) -> Iterator[R]:
    """`work(item)` for each item, in order, computed by `threads` up to `ahead` items in
    advance of the one being yielded (which bounds the memory held)."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(threads.submit(work, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # abandoned early: drop what has not started, let running work finish
        for future in pending:
            future.cancel()
        wait(pending)


def epoch_rng(seed: int, epoch: int, rank: int, stream: int) -> np.random.Generator:
    """The generator that orders one stream of one rank in one epoch."""
    return np.random.default_rng([seed, epoch, rank, stream])


Normalized = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, npho_valid, time_valid
Prepare = Callable[[Columns, Normalized | None], Columns]  # raw rows, where to normalize into -> batch columns


def model_columns(
    raw: Columns, npho_branch: str, time_branch: str, norm: NormalizationConfig, out: Normalized | None = None
) -> Columns:
    """The columns a batch carries, for raw rows: x / npho_valid / time_valid from the
    input branches (see `lib.normalization.normalize`, written into `out` if given),
    the truth branches unchanged."""
    columns = dict(raw)
    x, npho_valid, time_valid = normalize(columns.pop(npho_branch), columns.pop(time_branch), norm, out)
    return {"x": x, "npho_valid": npho_valid, "time_valid": time_valid, **columns}


class WindowBuffer:
    """x / npho_valid / time_valid arrays for the normalized chunks of one window, kept for
    the next window (and epoch): fresh memory costs page faults that take about as long as
    normalizing. The batches and the carry are copies, so a window may overwrite the last."""

    def __init__(self, sensor_shape: tuple[int, ...]):
        self.sensor_shape = sensor_shape
        self._arrays: Normalized | None = None

    def parts(self, sizes: Sequence[int]) -> list[Normalized]:
        """Consecutive row blocks of `sizes` rows each (the allocation grows when too small)."""
        total = int(sum(sizes))
        if self._arrays is None or len(self._arrays[0]) < total:
            self._arrays = (
                np.empty((total, *self.sensor_shape, 2), np.float32),
                np.empty((total, *self.sensor_shape), bool),
                np.empty((total, *self.sensor_shape), bool),
            )
        bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        return [tuple(a[lo:hi] for a in self._arrays) for lo, hi in zip(bounds[:-1], bounds[1:])]


def to_batch(columns: Columns) -> Batch:
    """Batch dict of tensors sharing memory with the (freshly gathered) columns."""
    return {name: torch.from_numpy(array) for name, array in columns.items()}


def load_chunk(reader: ChunkReader, prepare: Prepare, chunk: Chunk, out: Normalized | None = None) -> Columns:
    """`prepare` of the raw rows of `chunk`, normalizing into `out` if given."""
    return prepare(reader.read(chunk.file, chunk.start, chunk.stop), out)


def read_positions(reader: ChunkReader, chunks: Sequence[Chunk], positions: np.ndarray) -> Columns:
    """Raw rows at the (sorted) stream `positions`, reading only the chunks that hold them."""
    offsets = chunk_offsets(chunks)
    owner = np.searchsorted(offsets, positions, side="right") - 1
    parts = []
    for k in np.unique(owner):
        c = chunks[k]
        parts.append(Pool([reader.read(c.file, c.start, c.stop)]).take(positions[owner == k] - offsets[k]))
    return concat_columns(parts)


def stream_batches(
    reader: ChunkReader,
    threads: Executor,
    buffer: WindowBuffer,
    chunks: Sequence[Chunk],
    prepare: Prepare,
    *,
    batch_size: int,
    window_events: int | None,
    rng: np.random.Generator | None,
    drop_last: bool,
    skip: int,
    stop: int,
) -> Iterator[Columns]:
    """Batches `skip`..`stop - 1` of one stream (chunks in epoch order; unless `drop_last`,
    the last batch is partial) as columns of `prepare(raw rows, out)`; each chunk is prepared once, right after it is read, into
    its rows of `buffer`.

    Windows wholly before `skip` are planned but not read; resuming inside a window
    reads the chunks holding its carried-over events.
    """
    load = functools.partial(load_chunk, reader, prepare)  # (chunk, out) -> columns
    carry: Columns | None = None  # None: the carried-over events are not in memory
    for window in stream_windows(chunks, batch_size, window_events, rng, drop_last):
        end = window.first_batch + len(window.batches)
        if window.first_batch >= stop:
            return
        if end <= skip:
            carry = None
            continue
        if carry is None and len(window.carry):
            carry = prepare(read_positions(reader, chunks, window.carry), None)
        jobs = zip(window.chunks, buffer.parts([c.size for c in window.chunks]))
        fresh = list(in_order(threads, lambda job: load(*job), jobs))
        pool = Pool([carry, *fresh] if carry else fresh)
        wanted = slice(max(skip, window.first_batch) - window.first_batch, min(stop, end) - window.first_batch)
        yield from in_order(threads, pool.take, window.batches[wanted])
        carry = pool.take(window.leftover) if end < stop else None


@dataclass
class StreamSpec:
    """What a worker needs to produce its stream's batches (picklable)."""

    files: list[FileInfo]
    tree_name: str
    npho_branch: str
    time_branch: str
    branch_dtypes: dict[str, np.dtype]
    norm: NormalizationConfig
    batch_size: int
    window_events: int | None
    drop_last: bool
    shuffle: bool
    seed: int
    rank: int
    streams: list[list[Chunk]]

    def prepare(self, raw: Columns, out: Normalized | None = None) -> Columns:
        """`model_columns` of raw rows with this spec's branches and normalization."""
        return model_columns(raw, self.npho_branch, self.time_branch, self.norm, out)

    @property
    def sensor_shape(self) -> tuple[int, ...]:
        return tuple(self.files[0].branches[self.npho_branch].shape)


class StreamDataset(IterableDataset):
    """Yields ready batches; DataLoader worker i runs `assignments[i]` = (stream, skip, stop)
    of `epoch` (see `lib.data.plan.worker_assignments`), the main process runs slot 0."""

    def __init__(self, spec: StreamSpec):
        self.spec = spec
        self.epoch = 0
        self.assignments: list[tuple[int, int, int] | None] = []
        self._buffer: WindowBuffer | None = None  # kept between epochs of this process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_buffer": None}  # workers allocate their own

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        assignment = self.assignments[worker.id if worker is not None else 0]
        if assignment is None:
            return
        stream, skip, stop = assignment
        s = self.spec
        rng = epoch_rng(s.seed, self.epoch, s.rank, stream) if s.shuffle else None
        chunks = s.streams[stream]
        if rng is not None:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        # taken while iterating, so two iterations at once never share it
        buffer, self._buffer = self._buffer or WindowBuffer(s.sensor_shape), None
        try:
            with ChunkReader(s.files, s.tree_name, s.branch_dtypes) as reader, ThreadPoolExecutor(THREADS) as threads:
                for columns in stream_batches(
                    reader, threads, buffer, chunks, s.prepare,
                    batch_size=s.batch_size, window_events=s.window_events, rng=rng, drop_last=s.drop_last,
                    skip=skip, stop=stop,
                ):  # fmt: skip
                    yield to_batch(columns)
        finally:  # the threads have finished here, also when the consumer stopped early
            self._buffer = buffer
