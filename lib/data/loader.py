"""`EventLoader`: the one data loader of training, evaluation and prediction (built from the
config by lib.data.build).

Steps per epoch of a "train" loader (identical on every rank, no communication): every
rank builds every rank's plan from the per-file entry counts (after `max_events`). Rank
r's chunks are dealt round-robin to S streams (S = max(1, num_workers); 1 in memory),
stream w of rank r holds n_rw events, and

    steps_per_epoch = min over r of  sum over w of  floor(n_rw / batch_size)

unless a smaller `steps_per_epoch` is given. Each stream drops fewer than batch_size
events per epoch (which ones changes with the epoch when shuffling).

An "eval" loader (validation and prediction, never training) delivers every event of the
rank: after its full batches each stream yields its leftover (< batch_size events) as one
last, partial batch, and len(loader) is this rank's own number of batches, sum over w of
ceil(n_rw / batch_size), 0 for a rank without events. It may differ between ranks, so
such a loader must not drive per-step collectives (evaluation gathers once at the end);
`steps_per_epoch` does not apply to it.

Order: with shuffle, each stream shuffles its chunk order and then the events within
windows of >= shuffle_buffer events (leftovers carry into the next window), all from
a generator seeded with (seed, epoch, rank, stream); workers are interleaved in
DataLoader's round-robin order. The same seed, epoch, world_size and num_workers give
the same batches; `state_dict` / `load_state_dict` resume mid-epoch exactly.

Worker processes start with the first iteration and stay up for the next epochs (their
file handles and buffers too); what to deliver reaches them through the dataset's plan,
a tensor in shared memory written before each iteration.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from torch.utils.data import DataLoader

from lib.config.schema import DataConfig
from lib.data.files import (
    DataError,
    FileInfo,
    check_consistent_shapes,
    common_truth_branches,
    expand_inputs,
    inspect_files,
)
from lib.data.plan import (
    Chunk,
    file_chunks,
    fixed_boundaries,
    rank_chunks,
    stream_capacities,
    stream_chunks,
    stream_windows,
    worker_assignments,
)
from lib.data.checks import check_first_chunk
from lib.data.readers import EVENT_IDS, BatchRecycler, ChunkReader, Columns, Pool, batch_dtype
from lib.data.stream import (
    EXTRA_COLUMNS, THREADS, Batch, StreamDataset, StreamSpec, epoch_rng, in_order, load_chunk, to_batch,
)
from lib.normalization import NormalizationConfig

logger = logging.getLogger(__name__)

PathSpec = str | os.PathLike | Sequence[str | os.PathLike]
_LAYOUT_KEYS = ("seed", "steps_per_epoch", "n_events", "world_size", "streams", "shuffle", "drop_last")
Role = Literal["train", "eval"]
ROLES = ("train", "eval")


def _check_arguments(role: str, rank: int, world_size: int, extras: Sequence[str]) -> None:
    if role not in ROLES:
        raise ValueError(f"loader role must be one of {ROLES}, got {role!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    unknown = [name for name in extras if name not in EXTRA_COLUMNS]
    if unknown:
        raise ValueError(f"unknown extra loader column(s) {unknown}; choose from {list(EXTRA_COLUMNS)}")


def _check_no_clash(extras: Sequence[str], truth_branches: Sequence[str]) -> None:
    clashes = [name for name in extras if name in truth_branches]
    if clashes:
        raise DataError(f"truth branch(es) {clashes} have the names of the loader's extra columns; "
                        "rename them or leave them out of data.truth_branches")


def _entries_used(infos: Sequence[FileInfo], max_events: int | None) -> list[int]:
    """Entries read from each file: all, or the first `max_events` over the files in order."""
    left = max_events if max_events is not None else sum(i.n_entries for i in infos)
    used = []
    for info in infos:
        used.append(min(info.n_entries, left))
        left -= used[-1]
    return used


_WARNED: set[str] = set()


def _warn_once(message: str, *args: Any) -> None:
    """logger.warning, once per process for the same text (a run builds several loaders)."""
    text = message % args
    if text not in _WARNED:
        _WARNED.add(text)
        logger.warning("%s", text)


def _usable_files(
    paths: PathSpec, tree_name: str, inputs: list[str], truth_branches: list[str] | None
) -> tuple[list[FileInfo], list[str], bool]:
    """Checked non-empty files, the branches to read besides the inputs (None: those common to
    all files; run / event whenever every file has both) and whether run / event must be made up."""
    infos = inspect_files(expand_inputs(paths), tree_name, inputs, truth_branches)
    for info in infos:
        if info.n_entries == 0:
            logger.warning("file %s has zero entries in %r; skipping it", info.path, tree_name)
    infos = [i for i in infos if i.n_entries > 0]
    if not infos:
        raise DataError(f"all input files have zero entries ({paths!r}); check the input path")
    truth = list(truth_branches) if truth_branches is not None else common_truth_branches(infos, inputs)
    has_ids = all(name in info.branches and not info.branches[name].vector for info in infos for name in EVENT_IDS)
    if has_ids:
        truth += [name for name in EVENT_IDS if name not in truth]
    else:
        truth = [name for name in truth if name not in EVENT_IDS]
        _warn_once("the input files (%s, ...) lack a run or event branch: events are identified by run = the file's "
                   "number in the sorted input list, event = the entry number in that file", infos[0].path)
    check_consistent_shapes(infos, [*inputs, *truth])
    return infos, truth, not has_ids


def _steps_per_epoch(plans: list[list[list[Chunk]]], batch_size: int, requested: int | None, n_events: int) -> int:
    """The module docstring's formula (full batches only), checked against a `requested` value."""
    per_rank = [int(stream_capacities(streams, batch_size, drop_last=True).sum()) for streams in plans]
    deliverable = min(per_rank)
    if deliverable == 0:
        r = int(np.argmin(per_rank))
        sizes = [sum(c.size for c in s) for s in plans[r]]
        raise DataError(
            f"batch_size {batch_size} is larger than the data set: rank {r} of {len(plans)} gets {sum(sizes)} "
            f"events (per stream: {sizes}; {n_events} in total) and cannot fill one batch per epoch; "
            "lower the batch size or the number of workers, or add data"
        )
    if requested is not None and not 1 <= requested <= deliverable:
        raise DataError(
            f"steps_per_epoch={requested}, but every rank can deliver only {deliverable} full batches of "
            f"{batch_size} per epoch; set steps_per_epoch between 1 and {deliverable} or leave it unset"
        )
    return requested or deliverable


class EventLoader:
    """Batches of normalized events from ROOT / npz shards, sharded over ranks and workers.

    Yields dicts with "x" (B, n_sensors, 2) float32, "npho_valid" / "time_valid"
    (B, n_sensors) bool, the `extras` asked for (see `lib.data.stream.EXTRA_COLUMNS`),
    one tensor per truth branch (float32, or int64 for integer branches) and always "run" /
    "event" (int64): read from the files, or made up from (file number, entry) with one
    warning when a file lacks them. The inputs of the first chunk are checked before anything
    else (lib.data.checks); `input_summary` holds what was seen.

    `data` is the config section (branches, batch size, workers, shuffle buffer, in-memory,
    event and step limits); `role` says what the loader is for:
      "train": shuffled (unless data.shuffle_buffer is 0), full batches only, exactly
               `len(self)` per epoch on every rank; data.max_events and data.steps_per_epoch apply;
      "eval":  file order, every event of this rank in this rank's own number of batches,
               the last ones partial (see the module docstring); data.max_val_events applies.
    `in_memory` loads this rank's events once (normalized) and shuffles them fully, without workers.
    """

    def __init__(
        self,
        paths: PathSpec,
        data: DataConfig,
        norm: NormalizationConfig,
        *,
        role: Role,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        extras: Sequence[str] = (),
    ):
        train = role == "train"
        _check_arguments(role, rank, world_size, extras)
        inputs = [data.npho_branch, data.time_branch]
        infos, self.truth_branches, made_up_ids = _usable_files(paths, data.tree_name, inputs, data.truth_branches)
        _check_no_clash(extras, self.truth_branches)
        used = _entries_used(infos, data.max_events if train else data.max_val_events)
        self.files = [i for i, n in zip(infos, used) if n > 0]
        used = [n for n in used if n > 0]
        self.n_events = sum(used)
        batch_size = data.batch_size
        per_file = [
            file_chunks(k, info.boundaries if info.kind == "root" else fixed_boundaries(n, batch_size), n, batch_size)
            for k, (info, n) in enumerate(zip(self.files, used))
        ]
        with ChunkReader(self.files, data.tree_name, {name: np.dtype(np.float32) for name in inputs}) as reader:
            self.input_summary = check_first_chunk(reader, per_file[0][0], data, norm)
        if len(per_file) < world_size:
            logger.warning("only %d input file(s) for %d ranks: sharding by entry ranges", len(per_file), world_size)
        if data.in_memory and data.num_workers:
            logger.info("data: in_memory ignores num_workers=%d (batches are sliced in the main process)",
                        data.num_workers)
        n_streams = 1 if data.in_memory else max(1, data.num_workers)
        plans = [stream_chunks(rank_chunks(per_file, r, world_size), n_streams) for r in range(world_size)]
        self._capacities = stream_capacities(plans[rank], batch_size, drop_last=train)
        if train:
            self.steps_per_epoch = _steps_per_epoch(plans, batch_size, data.steps_per_epoch, self.n_events)
        else:
            self.steps_per_epoch = int(self._capacities.sum())
        self.batch_size, self.num_workers, self.in_memory = batch_size, data.num_workers, data.in_memory
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last = train and data.shuffle_buffer > 0, train
        self.epoch, self.batches_done = 0, 0
        self._memory: list[Columns] | None = None
        self._workers: DataLoader | None = None
        self._recycler = BatchRecycler()  # batch arrays of the in-memory mode
        self._spec = self._stream_spec(data, norm, inputs, plans[rank], tuple(extras), made_up_ids)
        self._dataset = StreamDataset(self._spec)
        logger.info(
            "data: %d files, %d events, rank %d/%d, %d streams, %d steps of %d per epoch%s%s",
            len(self.files), self.n_events, rank, world_size, n_streams, self.steps_per_epoch, batch_size,
            "" if train else " (last ones partial, every event)", " (in memory)" if data.in_memory else "",
        )  # fmt: skip

    def _stream_spec(self, data: DataConfig, norm: NormalizationConfig, inputs: list[str],
                     streams: list[list[Chunk]], extras: tuple[str, ...], made_up_ids: bool) -> StreamSpec:
        """What the streams of this rank need to produce its batches."""
        branch_dtypes = {n: batch_dtype(self.files[0].branches[n]) for n in self.truth_branches}
        branch_dtypes.update({name: np.dtype(np.float32) for name in inputs})
        return StreamSpec(
            files=self.files, tree_name=data.tree_name, npho_branch=data.npho_branch, time_branch=data.time_branch,
            branch_dtypes=branch_dtypes, norm=norm, batch_size=data.batch_size, shuffle=self.shuffle,
            window_events=data.shuffle_buffer if self.shuffle else 0, drop_last=self.drop_last, seed=self.seed,
            rank=self.rank, streams=streams, extras=extras, made_up_ids=made_up_ids,
        )  # fmt: skip

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; keeps a restored mid-epoch position of the same epoch."""
        if epoch != self.epoch:
            self.epoch, self.batches_done = epoch, 0

    def __iter__(self) -> Iterator[Batch]:
        self._roll_over_finished_epoch()
        start, delivered = self.batches_done, 0
        source = self._iter_memory(start) if self.in_memory else self._iter_stream(start)
        for batch in source:
            self.batches_done += 1
            delivered += 1
            yield batch
        if start + delivered != self.steps_per_epoch:
            raise RuntimeError(f"data plan delivered {start + delivered} batches, expected {self.steps_per_epoch}")
        self._roll_over_finished_epoch()

    def _roll_over_finished_epoch(self) -> None:
        if self.steps_per_epoch and self.batches_done >= self.steps_per_epoch:  # 0 steps: only set_epoch moves
            self.epoch, self.batches_done = self.epoch + 1, 0

    def _iter_stream(self, start: int) -> Iterator[Batch]:
        self._dataset.set_plan(self.epoch, worker_assignments(self._capacities, self.steps_per_epoch, start))
        if self.num_workers == 0:
            yield from self._dataset
            return
        if self._workers is None:
            self._dataset.plan.share_memory_()  # before the workers start: they see every later plan
            self._workers = DataLoader(
                self._dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=True
            )
        yield from self._workers

    def _iter_memory(self, start: int) -> Iterator[Batch]:
        if start >= self.steps_per_epoch:  # also a rank without events: nothing to load
            return
        if self._memory is None:
            self._memory = self._load_memory()
        rng = epoch_rng(self.seed, self.epoch, self.rank, 0) if self.shuffle else None
        windows = stream_windows(self._spec.streams[0], self.batch_size, None, rng, self.drop_last)
        positions = [window.pool[batch] for window in windows for batch in window.batches]
        pool = Pool(self._memory, self._recycler)
        with ThreadPoolExecutor(THREADS) as threads:  # the next batches are gathered while one is used
            for columns in in_order(threads, pool.take, positions[start : self.steps_per_epoch]):
                yield to_batch(columns)

    def _load_memory(self) -> list[Columns]:
        """All events of this rank, normalized once: one block of columns per chunk, in chunk order."""
        s = self._spec
        with s.reader() as reader, ThreadPoolExecutor(THREADS) as threads:
            parts = list(in_order(threads, functools.partial(load_chunk, reader, s.prepare), s.streams[0]))
        n = sum(len(part["x"]) for part in parts)
        gigabytes = sum(a.nbytes for part in parts for a in part.values()) / 1e9
        logger.info("data: %d events of rank %d loaded into memory (%.2f GB)", n, self.rank, gigabytes)
        return parts

    def state_dict(self) -> dict[str, Any]:
        """Position within the epoch plus the layout it refers to."""
        self._roll_over_finished_epoch()
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "seed": self.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "n_events": self.n_events,
            "world_size": self.world_size,
            "streams": len(self._capacities),
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next batches are exactly those an uninterrupted
        run would have yielded if the layout (seed, data, world size, workers) is unchanged."""
        mine = self.state_dict()
        changed = [k for k in _LAYOUT_KEYS if k in state and state[k] != mine[k]]
        if changed:
            logger.warning(
                "data layout changed since the checkpoint (%s); resuming at the same epoch and batch count, "
                "but the batches will differ from an uninterrupted run",
                ", ".join(f"{k}: {state[k]} -> {mine[k]}" for k in changed),
            )
        self.epoch, self.batches_done = int(state["epoch"]), min(int(state["batches_done"]), self.steps_per_epoch)
        self._roll_over_finished_epoch()
