"""The checkpoint manager: saves and restores the stateful parts of a training run (after torchtitan's).

The trainer hands it its parts, each with state_dict() / load_state_dict(). Shared parts are
the same on every rank (model, optimizer, scheduler, grad scaler, EMA, early stopping, train
state): rank 0 writes them. Per-rank parts differ between ranks (RNG, train-loader position,
partial metrics of the epoch in progress): every rank's are gathered into the file's
"rank_states" list, indexed by rank. A file is

    {"kind", "schema_version", "config", <shared part>: its state, ..., <train-state fields>,
     "rank_states": [{<per-rank part>: its state, ...}, one per rank]}

The train state is attached `flat`: its fields (epoch, global_step, mlflow_run_id, ...) sit at
the top of the file, where tools read them without the manager.

A resumed run's checkpoint (the run directory's own last.pt once it exists, else
checkpoint.resume_from) is read once per rank, when the manager is made, and checked against
the config there (lib.config.compatibility, through check_resume_compatible). A checkpoint of
another run directory seeds this run (`seeded_from`): the seed controls checkpoint.{reset_epoch, refresh_lr,
new_mlflow_run} (lib.engine.seed_controls) decide what the run takes from it, and by default it gets a new
MLflow run (`mlflow_tags` name its parent). `attach` restores shared parts at once; per-rank
parts wait for `restore_rank`, which the trainer calls at the point of its loop where they were
captured. A part for which the checkpoint holds no state (or an empty one: an EMA or fp16
scaler the saving run did not use) keeps its fresh state.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Collection, Mapping, Protocol, Sequence

from lib.config import to_dict
from lib.engine.checkpoint import (
    CheckpointError, check_resume_compatible, copy_checkpoint, find_resume_checkpoint, in_run_dir, load_checkpoint,
    prune_epoch_checkpoints, save_checkpoint,
)
from lib.engine.distributed import DistInfo, broadcast_object, gather_objects
from lib.engine.seed_controls import SCHEDULE_START, SeedControls
from lib.engine.tracking import PARENT_CHECKPOINT_TAG, PARENT_RUN_TAG
from lib.engine.tracking_worker import recorded_run_id
from lib.engine.train_state import TrainState
from lib.io.run_files import BEST_NAME, CHECKPOINT_DIR, LAST_NAME

log = logging.getLogger(__name__)

RANK_STATES = "rank_states"


class Stateful(Protocol):
    """A part of the run the checkpoint manager saves and restores."""

    def state_dict(self) -> dict[str, Any]:
        """The part's state, storable with torch.save and loadable with weights_only=True."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by state_dict."""
        ...


class CheckpointManager:
    """Writes, prunes and restores the checkpoints of one run directory (see the module docstring)."""

    def __init__(self, cfg: Any, run_dir: Path, dist: DistInfo) -> None:
        """Find and read the checkpoint this run resumes from, if any (CheckpointError when it cannot)."""
        self.settings, self.config, self.dist = cfg.checkpoint, to_dict(cfg), dist
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        controls = SeedControls.of(cfg.checkpoint)
        seed = cfg.checkpoint.resume_from
        controls.check(seed, seed_in_run_dir=seed is not None and in_run_dir(Path(seed), run_dir))
        self.resume_path = find_resume_checkpoint(cfg.checkpoint, run_dir)
        self.rank_state_lost = False
        """True when resuming from a checkpoint whose per-rank parts cannot be used (another world size)."""
        self.seeded_from: Path | None = None
        """The checkpoint of another run directory this run starts from, if any."""
        self.parent_mlflow_run_id: str | None = None
        """The MLflow run of `seeded_from` (this run gets a new one unless checkpoint.new_mlflow_run is false)."""
        self.seed_controls: SeedControls | None = None
        """The controls applied to `seeded_from` now (None when not seeded now: a requeue never applies them again)."""
        self._shared: dict[str, Stateful] = {}
        self._flat: set[str] = set()
        self._per_rank: dict[str, Stateful] = {}
        self._saved: dict[str, Any] = {}
        self._saved_for_rank: dict[str, Any] = {}
        if self.resume_path is not None:
            self._saved = load_checkpoint(self.resume_path)
            check_resume_compatible(self._saved, self.config, self.resume_path)
            self._saved_for_rank = self._this_ranks_state(self._saved.pop(RANK_STATES))
            if not in_run_dir(self.resume_path, run_dir):
                self._seed(controls, cfg.training.epochs)

    def _seed(self, controls: SeedControls, epochs: int) -> None:
        """Start from the checkpoint of another run directory, as the seed `controls` say."""
        assert self.resume_path is not None
        self.seeded_from, self.seed_controls = self.resume_path, controls
        self.parent_mlflow_run_id = self._saved["mlflow_run_id"] or recorded_run_id(self.resume_path.parents[1])
        self._saved_for_rank = controls.apply(self._saved, self._saved_for_rank, self.resume_path, epochs)
        self._saved["mlflow_run_id"] = None if controls.new_mlflow_run else self.parent_mlflow_run_id

    @property
    def resuming(self) -> bool:
        """True when the run continues from a checkpoint."""
        return self.resume_path is not None

    @property
    def schedule_start_step(self) -> int:
        """The global step at which this run's learning-rate schedule began (0 unless a seed's refresh_lr started
        a new one later): the schedule spans from there to the end of training.epochs."""
        return int(self._saved.get(SCHEDULE_START, 0)) if self.resuming else 0

    @property
    def mlflow_tags(self) -> dict[str, str]:
        """Tags of this run's MLflow run when it is seeded now: the seed controls and, in a new MLflow run, its
        parent (run id, checkpoint)."""
        if self.seeded_from is None or self.seed_controls is None:
            return {}
        tags = self.seed_controls.tags()
        if self.seed_controls.new_mlflow_run:
            tags[PARENT_CHECKPOINT_TAG] = str(self.seeded_from.resolve())
            if self.parent_mlflow_run_id:
                tags[PARENT_RUN_TAG] = self.parent_mlflow_run_id
        return tags

    @property
    def last_path(self) -> Path:
        """The run's checkpoints/last.pt."""
        return self.directory / LAST_NAME

    def _this_ranks_state(self, rank_states: list[dict[str, Any]]) -> dict[str, Any]:
        if len(rank_states) == self.dist.world_size:
            return dict(rank_states[self.dist.rank])
        log.warning("%s was written by %d ranks, this run has %d: the per-rank RNG states, data positions and "
                    "partial epoch metrics are not restored", self.resume_path, len(rank_states),
                    self.dist.world_size)
        self.rank_state_lost = True
        return {}

    def _restore(self, name: str, part: Stateful, state: Any) -> None:
        if state:
            part.load_state_dict(state)
        else:
            log.info("%s holds no %s state; it starts fresh", self.resume_path, name)

    def attach(self, parts: Mapping[str, Stateful], flat: Collection[str] = ()) -> None:
        """Save the shared `parts` in every checkpoint from now on and, when resuming, restore them now.

        Parts named in `flat` keep their fields at the top of the file (and are handed the whole top level).
        """
        for name, part in parts.items():
            self._shared[name] = part
            if name in flat:
                self._flat.add(name)
            if self.resuming:
                state = self._saved if name in flat else self._saved.pop(name, None)
                if self.seed_controls is not None:
                    state = self.seed_controls.part_state(name, part, state)
                self._restore(name, part, state)

    def attach_per_rank(self, parts: Mapping[str, Stateful]) -> None:
        """Save this rank's `parts` in every checkpoint from now on; `restore_rank` restores them when resuming."""
        self._per_rank.update(parts)
        if self.resuming and not self.rank_state_lost:
            for name in parts.keys() - self._saved_for_rank.keys():
                log.info("%s holds no %s state for rank %d; it starts fresh", self.resume_path, name, self.dist.rank)

    def restore_rank(self, *names: str) -> None:
        """Restore this rank's saved state of the per-rank parts `names`; each is restored at most once per run."""
        for name in names:
            state = self._saved_for_rank.pop(name, None)
            if state is not None:
                self._per_rank[name].load_state_dict(state)

    def _states(self, parts: Mapping[str, Stateful]) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for name, part in parts.items():
            if name in self._flat:
                states.update(part.state_dict())
            else:
                states[name] = part.state_dict()
        return states

    def save(self, names: Sequence[str]) -> None:
        """Write one checkpoint under each of `names` (the first written, the others copies), then prune.

        Collective: every rank must call it (each contributes its per-rank parts); rank 0 writes.
        Only the newest checkpoint.keep_last_n epoch_NNNN.pt files are kept.
        """
        rank_states = gather_objects(self._states(self._per_rank))
        if not self.dist.is_main:
            return
        state = {"schema_version": self.config["schema_version"], "config": self.config,
                 **self._states(self._shared), RANK_STATES: rank_states}
        first = self.directory / names[0]
        save_checkpoint(state, first)
        for name in names[1:]:
            copy_checkpoint(first, self.directory / name)
        pruned = prune_epoch_checkpoints(self.directory, self.settings.keep_last_n)
        log.debug("saved %s (pruned %s)", list(names), [path.name for path in pruned])

    def reconcile_best(self, state: TrainState) -> bool:
        """Make best.pt agree with the resumed `state`'s record of the best epoch (collective, after `attach`).

        The end of a best epoch writes last.pt, then best.pt, then the export of the best weights. A run
        killed in between resumes from that last.pt: best.pt is rewritten from it when it holds another
        epoch, and True is returned (the model holds the best weights: export them again, the export may
        be older). A last.pt recording a best that neither best.pt nor itself holds (left by older code)
        makes the state adopt the record of the best.pt that exists (none: no best yet).
        """
        decision = self._best_decision(state) if self.dist.is_main else None
        repaired, state.best_metric, state.best_epoch = broadcast_object(decision)
        return repaired

    def _best_decision(self, state: TrainState) -> tuple[bool, float | None, int | None]:
        if state.best_epoch is None:
            return False, None, None
        best = self.directory / BEST_NAME
        try:
            held = load_checkpoint(best, mmap=True) if best.is_file() else None
        except CheckpointError:
            held = None
        at_end_of_best = state.epoch == state.best_epoch and state.batch_in_epoch == 0
        if held is not None and held["epoch"] == state.best_epoch:
            return at_end_of_best, state.best_metric, state.best_epoch
        if at_end_of_best:
            copy_checkpoint(self.resume_path, best)
            log.warning("%s held %s, but %s records epoch %d as the best: rewrote %s from it", best,
                        f"epoch {held['epoch']}" if held else "nothing", self.resume_path, state.best_epoch, best.name)
            return True, state.best_metric, state.best_epoch
        log.warning("%s records epoch %d as the best, which %s does not hold and which is lost; the best so far is "
                    "now %s", self.resume_path, state.best_epoch, best,
                    f"epoch {held['epoch']} ({best.name})" if held else "unknown (the next validation sets it)")
        return (False, held["best_metric"], held["epoch"]) if held else (False, None, None)
