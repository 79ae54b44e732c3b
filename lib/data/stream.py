"""The streaming side of the loader: one stream's batches for one epoch, and the
IterableDataset that runs the streams in DataLoader workers.

All decisions (which chunks, which events in which batch) come from `lib.data.plan`;
this module reads the chunks a window needs and normalizes each one straight into its
events' rows of the window's batches (one pass, no second copy to gather them), together
with the extra columns a use asks for (`EXTRA_COLUMNS`: the time-loss weight computed from
raw npho, or the raw inputs themselves for evaluation), so that no later stage has to
invert the normalization to recover a raw value. Each stream runs that in `THREADS`
threads: uproot's decompression, numpy and the compiled normalization release the GIL, so
a loader without worker processes uses two cores.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lib.data.files import FileInfo
from lib.data.plan import Chunk, Placement, chunk_offsets, stream_windows
from lib.data.readers import EVENT_IDS, BatchRecycler, ChunkReader, Columns, Pool, concat_columns
from lib.normalization import NormalizationConfig, normalize, normalize_rows, time_loss_weight

Batch = dict[str, torch.Tensor]
THREADS = 2  # per stream: chunks read and normalized at the same time
TIME_WEIGHT = "time_weight"
"""Batch column (B, sensors) float32: the time-loss weight sqrt(raw npho), 0 where time is invalid."""
RAW_INPUTS = ("npho_raw", "time_raw")
"""Batch columns (B, sensors) float32: the raw npho and time as read from the files."""
EXTRA_COLUMNS = (TIME_WEIGHT, *RAW_INPUTS)
"""Columns a loader adds to x / npho_valid / time_valid and the truth branches only when asked."""
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


Moves = list[tuple[int, np.ndarray, np.ndarray]]  # (output, source rows, destination rows): Placement.moves


def model_columns(raw: Columns, npho_branch: str, time_branch: str, norm: NormalizationConfig,
                  extras: Sequence[str] = ()) -> Columns:
    """The columns a batch carries, for raw rows: x / npho_valid / time_valid from the
    input branches (see `lib.normalization.normalize`), the `extras` of EXTRA_COLUMNS and
    the truth branches unchanged."""
    columns = dict(raw)
    npho, time = columns.pop(npho_branch), columns.pop(time_branch)
    x, npho_valid, time_valid = normalize(npho, time, norm)
    batch = {"x": x, "npho_valid": npho_valid, "time_valid": time_valid}
    if TIME_WEIGHT in extras:
        batch[TIME_WEIGHT] = time_loss_weight(npho, time_valid)
    batch.update({name: values for name, values in zip(RAW_INPUTS, (npho, time)) if name in extras})
    return {**batch, **columns}


@dataclass
class StreamMemory:
    """Arrays of one stream kept for the next windows (and epochs), since fresh memory costs
    page faults that take about as long as the work done in it: `batches` to assemble the
    batches (and carried-over events) in, reused once the consumer has let go of them, and
    `scratch` for the npho transforms of the chunks being normalized."""

    batches: BatchRecycler
    scratch: BatchRecycler = field(default_factory=lambda: BatchRecycler(keep=2 * THREADS))


def copy_rows(columns: Columns, moves: Moves, outputs: list[Columns]) -> None:
    """Rows of `columns` to their places in `outputs` (which have every column of `columns`)."""
    for t, src, dst in moves:
        for name, array in columns.items():
            outputs[t][name][dst] = array[src]


def to_batch(columns: Columns) -> Batch:
    """Batch dict of tensors sharing memory with the (freshly gathered) columns."""
    return {name: torch.from_numpy(array) for name, array in columns.items()}


def load_chunk(reader: ChunkReader, prepare: Callable[[Columns], Columns], chunk: Chunk) -> Columns:
    """`prepare` of the raw rows of `chunk`."""
    return prepare(reader.read(chunk.file, chunk.start, chunk.stop))


def scatter_chunk(
    reader: ChunkReader, spec: StreamSpec, scratch: BatchRecycler, chunk: Chunk, moves: Moves, outputs: list[Columns]
) -> None:
    """Read `chunk` and put its events, normalized and with the spec's extra columns, at their
    places in `outputs`."""
    raw = reader.read(chunk.file, chunk.start, chunk.stop)
    npho, time = raw.pop(spec.npho_branch), raw.pop(spec.time_branch)
    raw.update({name: values for name, values in zip(RAW_INPUTS, (npho, time)) if name in spec.extras})
    npho, time = npho.reshape(len(npho), -1), time.reshape(len(time), -1)
    transform = scratch.empty({"npho": npho[:0]}, len(npho))["npho"]
    targets = []
    for t, src, dst in moves:
        out, n = outputs[t], len(outputs[t]["x"])
        arrays = [out[name].reshape(n, -1) for name in ("npho_valid", "time_valid", TIME_WEIGHT) if name in out]
        targets.append((src, dst, (out["x"], *arrays)))
    normalize_rows(npho, time, spec.norm, targets, transform)
    copy_rows(raw, moves, outputs)  # the truth branches and the raw inputs asked for


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
    memory: StreamMemory,
    chunks: Sequence[Chunk],
    spec: StreamSpec,
    rng: np.random.Generator | None,
    skip: int,
    stop: int,
) -> Iterator[Columns]:
    """Batches `skip`..`stop - 1` of one stream (chunks in epoch order; unless
    `spec.drop_last`, the last batch is partial). Each window's chunks are read and
    normalized in `threads` straight into the window's batches (and the arrays of the
    events it carries over), which are then yielded.

    Windows wholly before `skip` are planned but not read; resuming inside a window
    reads the chunks holding its carried-over events.
    """
    carry: Columns | None = None  # None: the carried-over events are not in memory
    for window in stream_windows(chunks, spec.batch_size, spec.window_events, rng, spec.drop_last):
        end = window.first_batch + len(window.batches)
        if window.first_batch >= stop:
            return
        if end <= skip:
            carry = None
            continue
        if carry is None and len(window.carry):
            carry = spec.prepare(read_positions(reader, chunks, window.carry))
        first = window.first_batch
        groups = list(window.batches[max(skip, first) - first : min(stop, end) - first])
        carry_over = end < stop and len(window.leftover) > 0
        if carry_over:
            groups.append(window.leftover)
        outputs = [memory.batches.empty(spec.template, len(group)) for group in groups]
        placement = Placement.of(groups, len(window.pool))
        if len(window.carry):
            copy_rows(carry, placement.moves(0, len(window.carry)), outputs)
        starts = len(window.carry) + chunk_offsets(window.chunks)
        jobs = [(c, placement.moves(lo, hi)) for c, lo, hi in zip(window.chunks, starts[:-1], starts[1:])]
        for _ in in_order(threads, lambda job: scatter_chunk(reader, spec, memory.scratch, *job, outputs), jobs):
            pass
        carry = outputs.pop() if carry_over else None
        while outputs:  # let go of each batch as it is handed over, so that its arrays can be reused
            yield outputs.pop(0)


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
    extras: tuple[str, ...] = ()
    """Columns of EXTRA_COLUMNS the batches carry."""
    made_up_ids: bool = False
    """The files lack run / event: the batches carry them made up from (file number, entry)."""

    def reader(self) -> ChunkReader:
        """A ChunkReader of this spec's files and branches."""
        return ChunkReader(self.files, self.tree_name, self.branch_dtypes, made_up_ids=self.made_up_ids)

    def prepare(self, raw: Columns) -> Columns:
        """`model_columns` of raw rows with this spec's branches, normalization and extra columns."""
        return model_columns(raw, self.npho_branch, self.time_branch, self.norm, self.extras)

    @property
    def template(self) -> Columns:
        """Arrays of zero rows with the row shape and dtype of each batch column."""
        sensors = self.sensor_shape
        truth = {
            name: np.empty((0, *self.files[0].branches[name].shape), dtype)
            for name, dtype in self.branch_dtypes.items()
            if name not in (self.npho_branch, self.time_branch)
        }
        extras = {name: np.empty((0, *sensors), np.float32) for name in EXTRA_COLUMNS if name in self.extras}
        ids = {name: np.empty(0, np.int64) for name in EVENT_IDS} if self.made_up_ids else {}
        return {"x": np.empty((0, *sensors, 2), np.float32), "npho_valid": np.empty((0, *sensors), bool),
                "time_valid": np.empty((0, *sensors), bool), **extras, **truth, **ids}  # fmt: skip

    @property
    def sensor_shape(self) -> tuple[int, ...]:
        return tuple(self.files[0].branches[self.npho_branch].shape)


class StreamDataset(IterableDataset):
    """Yields ready batches; DataLoader worker i runs slot i of `plan` (the epoch and, per
    slot, (stream, skip, stop) of `lib.data.plan.worker_assignments`), the main process
    runs slot 0."""

    def __init__(self, spec: StreamSpec):
        self.spec = spec
        # epoch, then (stream, skip, stop) per worker slot, -1 for a slot without work
        self.plan = torch.full((1 + 3 * max(1, len(spec.streams)),), -1, dtype=torch.int64)
        self._memory: StreamMemory | None = None  # kept between epochs of this process
        self._reader: ChunkReader | None = None  # likewise, with its open files

    def set_plan(self, epoch: int, assignments: Sequence[tuple[int, int, int] | None]) -> None:
        """What the next iteration runs; written in place, so workers sharing `plan` see it."""
        self.plan.fill_(-1)
        self.plan[0] = epoch
        for slot, assignment in enumerate(assignments):
            if assignment is not None:
                self.plan[1 + 3 * slot : 4 + 3 * slot] = torch.tensor(assignment)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memory": None, "_reader": None}  # workers make their own

    def _new_memory(self) -> StreamMemory:
        """Memory for the batches of a window (plus the carried-over events and the
        batches still in use) and the chunks being normalized."""
        s = self.spec
        largest_chunk = max((c.size for stream in s.streams for c in stream), default=0)
        per_window = -(-((s.window_events or 0) + largest_chunk) // s.batch_size)
        return StreamMemory(BatchRecycler(keep=per_window + 2 * THREADS + 2))

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        slot = worker.id if worker is not None else 0
        epoch, (stream, skip, stop) = int(self.plan[0]), self.plan[1 + 3 * slot : 4 + 3 * slot].tolist()
        if stream < 0:
            return
        s = self.spec
        rng = epoch_rng(s.seed, epoch, s.rank, stream) if s.shuffle else None
        chunks = s.streams[stream]
        if rng is not None:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        memory = self._memory = self._memory or self._new_memory()  # shared by iterations at once: thread-safe
        reader = self._reader = self._reader or s.reader()
        with ThreadPoolExecutor(THREADS) as threads:
            for columns in stream_batches(reader, threads, memory, chunks, s, rng, skip, stop):
                yield to_batch(columns)
