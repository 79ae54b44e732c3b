"""The streaming side of the loader: one stream's batches for one epoch, and the
IterableDataset that runs the streams in DataLoader workers.

All decisions (which chunks, which events in which batch) come from `lib.data.plan`;
this module only reads the chunks a window needs, gathers each batch and normalizes it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lib.data.files import FileInfo
from lib.data.plan import Chunk, chunk_offsets, stream_windows
from lib.data.readers import ChunkReader, Columns, Pool, concat_columns
from lib.normalization import NormalizationConfig, normalize

Batch = dict[str, torch.Tensor]


def epoch_rng(seed: int, epoch: int, rank: int, stream: int) -> np.random.Generator:
    """The generator that orders one stream of one rank in one epoch."""
    return np.random.default_rng([seed, epoch, rank, stream])


def to_batch(columns: Columns, npho_branch: str, time_branch: str, norm: NormalizationConfig | None) -> Batch:
    """Batch dict from gathered columns: normalizes the raw input branches when `norm` is
    given, else expects the already normalized x / npho_valid / time_valid columns."""
    columns = dict(columns)
    if norm is not None:
        x, npho_valid, time_valid = normalize(columns.pop(npho_branch), columns.pop(time_branch), norm)
        columns = {"x": x, "npho_valid": npho_valid, "time_valid": time_valid, **columns}
    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in columns.items()}


def read_positions(reader: ChunkReader, chunks: Sequence[Chunk], positions: np.ndarray) -> Columns:
    """Rows at the (sorted) stream `positions`, reading only the chunks that hold them."""
    offsets = chunk_offsets(chunks)
    owner = np.searchsorted(offsets, positions, side="right") - 1
    parts = []
    for k in np.unique(owner):
        c = chunks[k]
        parts.append(Pool([reader.read(c.file, c.start, c.stop)]).take(positions[owner == k] - offsets[k]))
    return concat_columns(parts)


def stream_batches(
    reader: ChunkReader,
    chunks: Sequence[Chunk],
    *,
    batch_size: int,
    window_events: int | None,
    rng: np.random.Generator | None,
    skip: int,
    stop: int,
) -> Iterator[Columns]:
    """Batches `skip`..`stop - 1` of one stream (chunks in epoch order) as raw columns.

    Windows wholly before `skip` are planned but not read; resuming inside a window
    reads the chunks holding its carried-over events.
    """
    carry: Columns | None = None  # None: the carried-over events are not in memory
    for window in stream_windows(chunks, batch_size, window_events, rng):
        end = window.first_batch + len(window.batches)
        if window.first_batch >= stop:
            return
        if end <= skip:
            carry = None
            continue
        if carry is None and len(window.carry):
            carry = read_positions(reader, chunks, window.carry)
        fresh = [reader.read(c.file, c.start, c.stop) for c in window.chunks]
        pool = Pool([carry, *fresh] if carry else fresh)
        for k in range(max(skip, window.first_batch), min(stop, end)):
            yield pool.take(window.batches[k - window.first_batch])
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
    shuffle: bool
    seed: int
    rank: int
    streams: list[list[Chunk]]


class StreamDataset(IterableDataset):
    """Yields ready batches; DataLoader worker i runs `assignments[i]` = (stream, skip, stop)
    of `epoch` (see `lib.data.plan.worker_assignments`), the main process runs slot 0."""

    def __init__(self, spec: StreamSpec):
        self.spec = spec
        self.epoch = 0
        self.assignments: list[tuple[int, int, int] | None] = []

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
        with ChunkReader(s.files, s.tree_name, s.branch_dtypes) as reader:
            for columns in stream_batches(
                reader, chunks, batch_size=s.batch_size, window_events=s.window_events, rng=rng, skip=skip, stop=stop
            ):
                yield to_batch(columns, s.npho_branch, s.time_branch, s.norm)
