"""Submission plans: resolve and validate every config of a submission before anything is submitted.

A `RunPlan` is one training run: its resolved config (checkpoint.auto_resume true, so a
requeued job continues from last.pt), its run directory and the run it waits for. Plans are
built for a single run, a chain (MAE then regressor on the MAE's exported encoder) or a sweep
(one run per grid / list point, named by its values and tagged with the sweep's name). Data, resume and encoder paths are checked to exist here,
except an encoder that a chained job will produce.
"""
from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.knobs import JobError, JobOptions, Knobs
from jobs.launch import ENTRY_MODULES, LaunchSpec
from jobs.run_paths import RunPaths
from jobs.time_limits import checkpoint_grace_s
from lib.config import ROOTS, RunConfig, load_config
from lib.data.dead_channels import read_dead_channels
from lib.data.files import DataError, expand_inputs

DEFAULT_CONFIGS = {"mae": "config/mae/mae_config.yaml", "reg": "config/reg/train_config.yaml",
                   "inp": "config/inp/inpainter_config.yaml"}
"""Config file used when neither the command line nor the environment names one."""
RESUMED = "checkpoint.auto_resume=true"
SWEEP_TAG = "sweep"
"""MLflow tag (config key mlflow.tags.sweep) naming the sweep a run belongs to."""
MAX_RUN_NAME_LENGTH = 80
"""A sweep run whose name by values would be longer is named <base>_<index>."""


@dataclass(frozen=True)
class RunPlan:
    """One training run to submit."""

    kind: str
    """Config root: "mae", "reg" or "inp"."""
    cfg: RunConfig
    config_file: str
    """The YAML file the config was resolved from."""
    overrides: tuple[str, ...] = ()
    """The --set overrides of this run (a sweep point's own overrides come last)."""
    after: int | None = None
    """Index of the plan this run waits for (SLURM afterok), or None."""
    produced_inputs: tuple[str, ...] = field(default=())
    """Paths that the run it waits for will create (not checked to exist)."""

    @property
    def layout(self) -> RunPaths:
        return RunPaths.of(self.cfg)

    @property
    def run_name(self) -> str:
        return self.cfg.checkpoint.run_name


def _load(kind: str, config_file: str, overrides: Sequence[str], knob_values: Mapping[str, Any]) -> RunConfig:
    """The config of `kind` from `config_file` + knobs + overrides, with auto_resume switched on."""
    if not Path(config_file).is_file():
        raise JobError(f"config file not found: {config_file}; pass an existing YAML file as the first "
                       f"argument or in the CONFIG environment variable (default {DEFAULT_CONFIGS[kind]})")
    return load_config(config_file, [*overrides, RESUMED], root=ROOTS[kind], cli=knob_values)


def check_inputs(plan: RunPlan) -> None:
    """Raise JobError unless every input path the run needs exists (chained outputs excepted)."""
    cfg = plan.cfg
    where = f"run {plan.run_name!r} ({plan.config_file})"
    if cfg.data.train_path is None:
        raise JobError(f"{where}: data.train_path is not set; set it in the config or --set data.train_path=PATH")
    for key in ("train_path", "val_path"):
        spec = getattr(cfg.data, key)
        if spec is not None:
            try:
                expand_inputs(spec, config_key=f"data.{key}")
            except DataError as err:
                raise JobError(f"{where}: {err}") from None
    required = {"checkpoint.resume_from": cfg.checkpoint.resume_from}
    if plan.kind in CHAINED_KINDS:
        required["model.pretrained_encoder"] = cfg.model.pretrained_encoder
    if plan.kind == "inp" and cfg.data.dead_channels is not None:
        try:
            read_dead_channels(cfg.data.dead_channels)
        except DataError as err:
            raise JobError(f"{where}: {err}") from None
    for key, path in required.items():
        if path is not None and path not in plan.produced_inputs and not Path(path).is_file():
            raise JobError(f"{where}: {key} = {path} does not exist; fix the path or remove the key")


def plan_single(kind: str, config_file: str, overrides: Sequence[str], knobs: Knobs) -> list[RunPlan]:
    """One run of `kind`."""
    cfg = _load(kind, config_file, overrides, knobs.config_values)
    return [RunPlan(kind, cfg, config_file, tuple(overrides))]


def _named(knobs: Knobs, run_name: str | None) -> dict[str, Any]:
    values = {k: v for k, v in knobs.config_values.items() if k != "checkpoint.run_name"}
    if run_name is not None:
        values["checkpoint.run_name"] = run_name
    return values


def _refuse_resume_from(knobs: Knobs, what: str) -> None:
    if "checkpoint.resume_from" in knobs.config_values:
        raise JobError(f"{knobs.sources['checkpoint.resume_from']}: RESUME_FROM names one checkpoint and cannot "
                       f"apply to a {what}; resume single runs with run_mae.sh / run_regressor.sh")


CHAINED_KINDS = ("reg", "inp")
"""Kinds that start from an MAE encoder (model.pretrained_encoder): the second run of a chain."""


def plan_chain(mae_file: str, second_file: str, mae_overrides: Sequence[str], second_overrides: Sequence[str],
               knobs: Knobs, second_kind: str = "reg") -> list[RunPlan]:
    """MAE pretraining, then a run of `second_kind` (CHAINED_KINDS: the regressor or the inpainter) started from
    its encoder_best.pt (afterok).

    RUN_NAME, when given, names the two runs <RUN_NAME>_mae and <RUN_NAME>_<second_kind>.
    """
    if second_kind not in CHAINED_KINDS:
        raise JobError(f"a chain's second run is one of {CHAINED_KINDS}, not {second_kind!r}")
    _refuse_resume_from(knobs, "chain")
    prefix = knobs.config_values.get("checkpoint.run_name")
    mae_cfg = _load("mae", mae_file, mae_overrides, _named(knobs, prefix and f"{prefix}_mae"))
    encoder = str(RunPaths.of(mae_cfg).encoder_export)
    second_values = {**_named(knobs, prefix and f"{prefix}_{second_kind}"), "model.pretrained_encoder": encoder}
    second_cfg = _load(second_kind, second_file, second_overrides, second_values)
    return [RunPlan("mae", mae_cfg, mae_file, tuple(mae_overrides)),
            RunPlan(second_kind, second_cfg, second_file, tuple(second_overrides), after=0, produced_inputs=(encoder,))]


def sweep_points(grid: Sequence[str], points: Sequence[str]) -> list[list[str]]:
    """Override lists of a sweep: the product of `--grid key=v1,v2` items, or one per `--points` string."""
    if bool(grid) == bool(points):
        raise JobError("a sweep needs either --grid key=v1,v2 (repeatable) or --points 'key=v ...' (one per "
                       "point), not both and not neither")
    if points:
        return [shlex.split(point) for point in points]
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise JobError(f"invalid --grid {item!r}: expected section.key=v1,v2, e.g. training.lr=1e-4,3e-4")
        axes.append([f"{key}={value}" for value in values.split(",")])
    return [list(combo) for combo in itertools.product(*axes)]


_KEY_LABELS = (
    lambda key: key.rsplit(".", 1)[-1].split("_")[0],  # training.mask_ratio -> mask
    lambda key: key.rsplit(".", 1)[-1],  # data.max_val_events -> max_val_events
    lambda key: key.replace(".", "-"),
)


def _key_labels(keys: Sequence[str]) -> dict[str, str]:
    """Label of each swept key in a run name: the first of _KEY_LABELS that tells all `keys` apart."""
    for label in _KEY_LABELS:
        labels = {key: label(key) for key in keys}
        if len(set(labels.values())) == len(labels):
            return labels
    return labels


def _value_text(value: str) -> str:
    """A value as a run-name part: brackets and quotes dropped, other characters outside [A-Za-z0-9.+-] as '-'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", value.strip("[](){}'\" ")) or "none"


def sweep_run_names(base: str, point_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Run names of a sweep's points by their values, e.g. <base>_lr3e-4_mask0.5; <base>_<index> for a point
    whose name would be longer than MAX_RUN_NAME_LENGTH or the same as another point's."""
    points = [[item.partition("=") for item in point] for point in point_overrides]
    labels = _key_labels(list(dict.fromkeys(key.strip() for point in points for key, _, _ in point)))
    names = ["_".join([base, *(f"{labels[key.strip()]}{_value_text(value)}" for key, _, value in point)])
             for point in points]
    return [name if len(name) <= MAX_RUN_NAME_LENGTH and names.count(name) == 1 else f"{base}_{index}"
            for index, name in enumerate(names)]


def plan_points(kind: str, config_file: str, overrides: Sequence[str], named_points: Sequence[tuple[str, Sequence[str]]],
                knobs: Knobs, sweep: str) -> list[RunPlan]:
    """One run per (run name, point overrides), each tagged mlflow.tags.sweep = `sweep`."""
    _refuse_resume_from(knobs, "sweep")
    plans = []
    for name, point in named_points:
        merged = (*overrides, *point)
        cfg = _load(kind, config_file, merged, {**_named(knobs, name), f"mlflow.tags.{SWEEP_TAG}": sweep})
        plans.append(RunPlan(kind, cfg, config_file, merged))
    return plans


def plan_sweep(kind: str, config_file: str, overrides: Sequence[str], point_overrides: Sequence[Sequence[str]],
               knobs: Knobs) -> list[RunPlan]:
    """One run per point, named by its values (sweep_run_names); the sweep is named by its base: RUN_NAME,
    else the config's run name."""
    base = _load(kind, config_file, overrides, knobs.config_values).checkpoint.run_name
    names = sweep_run_names(base, point_overrides)
    return plan_points(kind, config_file, overrides, list(zip(names, point_overrides)), knobs, base)


def launch_spec(plan: RunPlan, options: JobOptions, entry: str | None = None) -> LaunchSpec:
    """How the job of `plan` starts its trainer: GPUs per node from the config, or CPU_PROCS processes."""
    slurm = plan.cfg.slurm
    cpu = options.cpu_procs is not None
    if not cpu and slurm.num_gpus == 0:
        raise JobError(f"{plan.config_file}: slurm.num_gpus is 0; a GPU job needs at least 1 GPU per node; "
                       "for a CPU-only job set CPU_PROCS=N (or --cpu-procs N)")
    return LaunchSpec(
        entry=entry or ENTRY_MODULES[plan.kind],
        config=str(plan.layout.config.resolve()),
        workdir=os.getcwd(),
        procs_per_node=options.cpu_procs if cpu else slurm.num_gpus,
        grace_s=checkpoint_grace_s(slurm.signal_delay_s),
        nodes=slurm.nodes,
        cpu=cpu,
    )
