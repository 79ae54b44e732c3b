"""Plan of a label-efficiency study: which fine-tunes, named how, with which overrides (torch-free).

The regressor of one config is trained at each number N of labelled events (data.max_events: the first N
events of data.train_path) and seed, in up to three modes:

- `pretrained`: encoder initialised from the MAE encoder, then fine-tuned with the heads;
- `frozen`: the same encoder, kept fixed (model.freeze_encoder), only the heads train;
- `scratch`: randomly initialised encoder.

Every point gets the same number S of optimizer steps: epochs x data.steps_per_epoch = S with
steps_per_epoch at most one pass over its N events. The warm-up is the same fraction of S as in the
config (warmup_epochs / epochs), and each point validates about `validations` times, the last epoch
always. A point trains in one process (the step arithmetic assumes one rank).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.config import ConfigError, RegressorConfig
from lib.data.files import DataError, expand_inputs, inspect_files

log = logging.getLogger(__name__)

MODES = ("pretrained", "frozen", "scratch")
"""Fine-tuning modes, in the order of tables and legends."""
TAG_STUDY, TAG_MODE, TAG_EVENTS, TAG_SEED = "study", "study_mode", "study_events", "study_seed"
"""MLflow tags (mlflow.tags.*) of every fine-tune of a study."""


@dataclass(frozen=True)
class StepSchedule:
    """How one point spends the study's step budget."""

    epochs: int
    steps_per_epoch: int
    warmup_epochs: float
    val_every: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class StudyPoint:
    """One fine-tune of the study."""

    mode: str
    events: int
    seed_index: int
    run_name: str
    overrides: tuple[str, ...]
    """--set overrides of this point (on top of the config and the study's own overrides)."""


def passes_per_epoch_limit(events: int, cfg: RegressorConfig) -> int:
    """Full batches one pass over `events` training events is sure to deliver in one process: each of the
    loader's streams (1 in memory, else num_workers) may leave fewer than batch_size events over."""
    streams = 1 if cfg.data.in_memory else max(1, cfg.data.num_workers)
    return events // cfg.data.batch_size - (streams - 1)


def step_schedule(total_steps: int, events: int, cfg: RegressorConfig, validations: int) -> StepSchedule:
    """Epochs and steps per epoch with epochs x steps_per_epoch = total_steps, steps_per_epoch as large as one
    pass over `events` allows; warm-up and validation spread as the module docstring says."""
    most = passes_per_epoch_limit(events, cfg)
    if most < 1:
        raise ConfigError(f"{events} labelled events do not fill one batch of {cfg.data.batch_size} per epoch "
                          f"(data.batch_size, data.num_workers); use more events or a smaller batch")
    epochs = math.ceil(total_steps / most)
    while total_steps % epochs:
        epochs += 1
    if total_steps // epochs < most / 2:
        log.warning("%d steps split into %d epochs of only %d steps at N = %d (one pass: %d); a budget with small "
                    "factors (e.g. 480, 960, 1920) keeps the epochs long", total_steps, epochs,
                    total_steps // epochs, events, most)
    warmup_fraction = cfg.training.warmup_epochs / cfg.training.epochs
    return StepSchedule(epochs, total_steps // epochs, round(warmup_fraction * epochs, 6),
                        max(1, epochs // validations))


def default_total_steps(cfg: RegressorConfig, events: Sequence[int]) -> int:
    """The config's own budget at the largest N: training.epochs passes over max(events)."""
    return cfg.training.epochs * max(1, passes_per_epoch_limit(max(events), cfg))


def available_events(cfg: RegressorConfig) -> int:
    """Training events in data.train_path (entries of every file)."""
    try:
        paths = expand_inputs(cfg.data.train_path, config_key="data.train_path")
        infos = inspect_files(paths, cfg.data.tree_name, [cfg.data.npho_branch, cfg.data.time_branch], None)
    except DataError as err:
        raise ConfigError(str(err)) from None
    return sum(info.n_entries for info in infos)


def check_study(cfg: RegressorConfig, events: Sequence[int], seeds: int, modes: Sequence[str],
                encoder: str | None) -> None:
    """Raise ConfigError, saying what to change, for a study that cannot run as asked."""
    if not events or sorted(set(events)) != list(events):
        raise ConfigError(f"--events {','.join(map(str, events))}: give increasing, distinct numbers, e.g. "
                          "250,1000,4000")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: at least 1")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--modes {','.join(modes)}: choose among {','.join(MODES)}")
    if encoder is None and set(modes) & {"pretrained", "frozen"}:
        raise ConfigError("--mae ENCODER is needed for the pretrained and frozen modes (an MAE run's "
                          "encoder_best.pt); or run --modes scratch")
    if encoder is not None and not Path(encoder).is_file():
        raise ConfigError(f"--mae {encoder}: no such file; give an MAE run's encoder_best.pt")
    if cfg.data.train_path is None or cfg.data.val_path is None:
        raise ConfigError("the study needs data.train_path and data.val_path (the resolutions are measured on "
                          "the validation events); set them in the config or with --set")
    have = available_events(cfg)
    if events[-1] > have:
        raise ConfigError(f"--events asks for up to {events[-1]} labelled events but data.train_path holds {have}; "
                          "lower the largest N or simulate more events")


def label_points(name: str, cfg: RegressorConfig, events: Sequence[int], seeds: int, modes: Sequence[str],
                 encoder: str | None, total_steps: int, validations: int) -> list[StudyPoint]:
    """Every point of the study, N by N, seed by seed, mode by mode (a study stopped half-way has comparable
    points); run names <name>_<mode>_n<N>_s<seed>."""
    points = []
    for n in events:
        schedule = step_schedule(total_steps, n, cfg, validations)
        steps = [f"data.max_events={n}", f"training.epochs={schedule.epochs}",
                 f"data.steps_per_epoch={schedule.steps_per_epoch}",
                 f"training.warmup_epochs={schedule.warmup_epochs}", f"training.val_every={schedule.val_every}",
                 f"checkpoint.save_interval={schedule.epochs}"]
        for index in range(seeds):
            for mode in modes:
                start = ([f"model.pretrained_encoder={Path(encoder).resolve()}"] if mode != "scratch"
                         else ["model.pretrained_encoder=null"])
                start.append(f"model.freeze_encoder={str(mode == 'frozen').lower()}")
                tags = [f"mlflow.tags.{TAG_STUDY}='{name}'", f"mlflow.tags.{TAG_MODE}={mode}",
                        f"mlflow.tags.{TAG_EVENTS}='{n}'", f"mlflow.tags.{TAG_SEED}='{index}'"]
                overrides = (*start, *steps, f"training.seed={cfg.training.seed + index}", *tags)
                points.append(StudyPoint(mode, n, index, f"{name}_{mode}_n{n}_s{index}", overrides))
    return points
