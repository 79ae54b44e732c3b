"""Epoch plans as pure index arithmetic: chunks, rank/worker sharding, steps per epoch,
shuffle windows. Nothing here reads a file, so every rank can compute every other
rank's plan from the per-file entry counts alone.

Vocabulary: a *chunk* is an entry range of one file, aligned to ROOT baskets (fixed
size for npz). A rank's chunks are dealt round-robin to its *streams*, one per
DataLoader worker (one stream without workers). A stream's *positions* number its
events in the epoch's (shuffled) chunk order.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """Entries [start, stop) of file number `file`."""

    file: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def file_chunks(file: int, boundaries: Sequence[int], n_used: int, min_events: int) -> list[Chunk]:
    """Chunks covering entries [0, n_used) of one file, cut only at `boundaries` and
    each holding at least `min_events` entries (except possibly the last)."""
    cuts = [b for b in boundaries if 0 < b < n_used] + [n_used]
    chunks, start = [], 0
    for cut in cuts:
        if cut - start >= min_events or cut == n_used:
            chunks.append(Chunk(file, start, cut))
            start = cut
    return [c for c in chunks if c.size > 0]


def fixed_boundaries(n_entries: int, step: int) -> list[int]:
    """Boundaries every `step` entries (npz shards have no baskets)."""
    return [*range(0, n_entries, step), n_entries]


def rank_chunks(per_file: Sequence[Sequence[Chunk]], rank: int, world_size: int) -> list[Chunk]:
    """The chunks of global rank `rank`.

    With at least `world_size` files, rank r reads files r, r + world_size, ...
    (round-robin). With fewer files, the concatenated entries are cut into
    `world_size` contiguous, nearly equal ranges instead, so that every rank gets data.
    """
    if len(per_file) >= world_size:
        return [c for chunks in per_file[rank::world_size] for c in chunks]
    flat = [c for chunks in per_file for c in chunks]
    total = sum(c.size for c in flat)
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    out, offset = [], 0
    for c in flat:
        a, b = max(lo - offset, 0), min(hi - offset, c.size)
        if a < b:
            out.append(Chunk(c.file, c.start + a, c.start + b))
        offset += c.size
    return out


def stream_chunks(chunks: Sequence[Chunk], n_streams: int) -> list[list[Chunk]]:
    """Chunks dealt round-robin to `n_streams` streams (fixed for all epochs)."""
    return [list(chunks[w::n_streams]) for w in range(n_streams)]


def stream_capacities(streams: Sequence[Sequence[Chunk]], batch_size: int, drop_last: bool) -> np.ndarray:
    """Batches each stream delivers per epoch: floor(events of the stream / batch_size) full
    ones, plus one partial batch of the rest unless `drop_last`."""
    events = np.array([sum(c.size for c in s) for s in streams], dtype=np.int64)
    return events // batch_size if drop_last else -(-events // batch_size)


def round_robin_counts(capacities: np.ndarray, n: int) -> np.ndarray:
    """How many of the first `n` batches come from each stream when streams take turns in
    index order and a stream drops out once it has delivered `capacities[w]` batches
    (the order in which torch's DataLoader interleaves its workers)."""
    capacities = np.asarray(capacities, dtype=np.int64)
    if n > capacities.sum():
        raise ValueError(f"{n} batches requested, the streams hold only {capacities.sum()}")
    lo, hi = 0, int(capacities.max(initial=0))  # largest number of complete rounds r with total(r) <= n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(capacities, mid).sum() <= n else (lo, mid - 1)
    counts = np.minimum(capacities, lo)
    rest = n - counts.sum()
    next_round = np.flatnonzero(capacities > lo)[:rest]
    counts[next_round] += 1
    return counts


def worker_assignments(capacities: np.ndarray, steps: int, done: int) -> list[tuple[int, int, int] | None]:
    """(stream, batches to skip, batches to stop after) for each DataLoader worker slot, so
    that workers taking turns from slot 0 deliver batches `done`..`steps - 1` of the
    uninterrupted epoch in order; None for a slot with nothing left to do."""
    quota = round_robin_counts(capacities, steps)
    skip = round_robin_counts(capacities, done)
    active = [w for w in range(len(capacities)) if quota[w] > skip[w]]
    if active:
        first = int(np.argmax(round_robin_counts(capacities, done + 1) - skip))
        active.sort(key=lambda w: (w - first) % len(capacities))
    slots: list[tuple[int, int, int] | None] = [(w, int(skip[w]), int(quota[w])) for w in active]
    return slots + [None] * (len(capacities) - len(slots))


@dataclass(frozen=True)
class Window:
    """One shuffle window of a stream.

    The window's `pool` holds stream positions: `carry` (left over from earlier windows)
    followed by the positions of `chunks`; `batches` (n, batch_size) and `leftover` are
    sorted indices into that pool. `first_batch` numbers batches[0] within the epoch.
    """

    chunks: list[Chunk]
    carry: np.ndarray
    pool: np.ndarray
    batches: np.ndarray
    leftover: np.ndarray
    first_batch: int


def stream_windows(
    chunks: Sequence[Chunk],
    batch_size: int,
    window_events: int | None,
    rng: np.random.Generator | None,
    drop_last: bool,
) -> Iterator[Window]:
    """Windows of a stream for one epoch, `chunks` being in the epoch's order.

    A window takes chunks until it holds >= `window_events` events (None: all chunks;
    0: one chunk). With `rng` the pool is permuted, else kept in order; the events
    that do not fill a whole batch carry over into the next window, so a stream
    delivers floor(events / batch_size) full batches. Unless `drop_last`, a last window
    without chunks then holds the final carry as one partial batch. The order within a
    batch is sorted by position (it carries no meaning and sorted reads are cheaper).
    """
    sizes = np.array([c.size for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    carry = np.empty(0, dtype=np.int64)
    first, i = 0, 0
    while i < len(chunks):
        j, n = i + 1, sizes[i]
        while j < len(chunks) and (window_events is None or n < window_events):
            n += sizes[j]
            j += 1
        pool = np.concatenate([carry, np.arange(offsets[i], offsets[j])])
        order = rng.permutation(len(pool)) if rng is not None else np.arange(len(pool))
        n_batches = len(pool) // batch_size
        batches = np.sort(order[: n_batches * batch_size].reshape(n_batches, batch_size), axis=1)
        leftover = np.sort(order[n_batches * batch_size :])
        yield Window(list(chunks[i:j]), carry, pool, batches, leftover, first)
        carry, first, i = pool[leftover], first + n_batches, j
    if not drop_last and len(carry):
        yield Window([], carry, carry, np.arange(len(carry))[np.newaxis], np.empty(0, np.int64), first)


def chunk_offsets(chunks: Sequence[Chunk]) -> np.ndarray:
    """Stream position at which each chunk starts, plus the total at the end."""
    return np.concatenate([[0], np.cumsum([c.size for c in chunks], dtype=np.int64)])


@dataclass(frozen=True)
class Placement:
    """Where the events of a window's pool go: output `target[p]` (an index into the
    window's outputs, -1 for none) at row `row[p]`, for each pool index p."""

    target: np.ndarray
    row: np.ndarray

    @classmethod
    def of(cls, groups: Sequence[np.ndarray], pool_size: int) -> Placement:
        """Output t holds the pool indices groups[t] (sorted), in that order."""
        target, row = np.full(pool_size, -1, np.int64), np.zeros(pool_size, np.int64)
        for t, indices in enumerate(groups):
            target[indices], row[indices] = t, np.arange(len(indices))
        return cls(target, row)

    def moves(self, lo: int, hi: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(output, source rows counted from lo, destination rows) for the pool indices
        lo..hi-1 that go somewhere; rows ascending within each output."""
        targets = self.target[lo:hi]
        order = np.argsort(targets, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(targets[order])) + 1)
        return [(int(targets[run[0]]), run, self.row[lo + run]) for run in runs if len(run) and targets[run[0]] >= 0]
