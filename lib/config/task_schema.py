"""Typed config of the regression tasks: what each task is (`TASK_SPECS`), `TaskConfig` per task
and the `tasks:` selection. Torch-free, so a config can be validated without importing torch.

The regressor schema uses `tasks: TasksConfig`, which accepts either a list of task
names (`[energy, position]`, every task with default settings) or a mapping
name -> TaskConfig fields (`{energy: {loss: l1}, position: null}`).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

LossName = Literal["smooth_l1", "l1", "mse", "gaussian_nll", "beta_nll", "relative_l1", "relative_smooth_l1",
                   "relative_mse"]
VARIANCE_LOSSES = ("gaussian_nll", "beta_nll")
"""Losses whose head also predicts a log-variance per output (the task then predicts sigma)."""
RELATIVE_LOSSES = ("relative_l1", "relative_smooth_l1", "relative_mse")
"""Losses of the relative residual (pred - true) / true in physical units (tasks with a positive truth)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task predicts: its truth branch, output names and units (the implementation is in lib/tasks)."""

    truth_key: str
    output_names: tuple[str, ...]
    units: tuple[str, ...]
    vector_key: str | None = None
    """Truth branch of the unit-vector form (`use_vector`), for tasks that have one."""
    positive: bool = False
    """The truth is a positive scale (energy): relative losses and the log target apply."""


TASK_SPECS: dict[str, TaskSpec] = {
    "energy": TaskSpec("energyTruth", ("E",), ("GeV",), positive=True),
    "timing": TaskSpec("timeTruth", ("t",), ("s",)),
    "position": TaskSpec("uvwTruth", ("u", "v", "w"), ("cm", "cm", "cm")),
    "angle": TaskSpec("emiAng", ("theta", "phi"), ("deg", "deg"), vector_key="emiVec"),
}

RESEARCH_TASK_NAMES: dict[str, str] = {"angle": "angle", "energy": "energy", "timing": "timing", "uvwFI": "position"}
"""Task names of the research code (weiyuanli-icepp/xec-ml-wl) -> ours."""


class TaskConfig(BaseModel):
    """Settings of one regression task (its loss, weight, target scaling and head size)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    loss: LossName = Field("smooth_l1", description=(
        "smooth_l1 / l1 / mse of the standardized target; gaussian_nll or beta_nll (the head also predicts a "
        "log-variance: the task then predicts sigma); relative_l1 / relative_smooth_l1 / relative_mse of "
        "(pred - true) / true in physical units (energy only)"))
    beta: float = Field(1.0, ge=0.0, description="smooth_l1 transition point (standardized units)")
    relative_beta: float = Field(0.05, gt=0.0, description=(
        "relative_smooth_l1 transition point: the relative error (pred - true) / true where it turns linear"))
    nll_beta: float = Field(0.5, ge=0.0, le=1.0, description=(
        "beta_nll (Seitzer et al. 2022): each event's Gaussian NLL is weighted by its predicted variance^beta "
        "(no gradient through the weight); 0 is gaussian_nll, 1 gives the mean the gradient of mse"))
    log_target: bool = Field(False, description=(
        "energy only: standardize log E instead of E (target_mean / target_scale then in log units); predictions "
        "are E again"))
    weight: float = Field(1.0, ge=0.0, description="manual weight of this task in the total loss")
    reweight_bins: int | None = Field(
        None, ge=2, description="reweight samples by an inverse histogram of the target with this many bins"
    )
    target_mean: list[float] | None = Field(None, description="None: computed once from the training data")
    target_scale: list[float] | None = Field(None, description="None: computed once from the training data")
    use_vector: bool = Field(False, description="angle only: predict the unit vector emiVec with a cosine loss")
    head_hidden: int = Field(256, ge=1)
    head_layers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check_scales(self) -> TaskConfig:
        if self.target_scale is not None and any(not s > 0 for s in self.target_scale):
            raise ValueError(f"target_scale={self.target_scale}: every entry must be > 0")
        if (self.target_mean is None) != (self.target_scale is None):
            raise ValueError(
                "target_mean and target_scale must be given together (or both left out to fit them "
                f"from the training data); got target_mean={self.target_mean}, target_scale={self.target_scale}"
            )
        return self


def _normalize_selection(value: Any) -> dict[str, Any]:
    """List / single name / mapping -> mapping name -> settings, with names checked."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        duplicates = sorted({name for name in value if list(value).count(name) > 1})
        if duplicates:
            raise ValueError(f"tasks: {duplicates} listed more than once; list each task once")
        entries: Mapping[Any, Any] = {name: None for name in value}
    elif isinstance(value, Mapping):
        entries = value
    else:
        raise ValueError(
            f"tasks: expected a list of task names or a mapping name -> settings, got {type(value).__name__} {value!r}"
        )
    if not entries:
        raise ValueError(f"tasks: the selection is empty; choose at least one of {sorted(TASK_SPECS)}")
    for name in entries:
        if name not in TASK_SPECS:
            nearest = difflib.get_close_matches(str(name), list(TASK_SPECS), n=1)
            hint = f"; did you mean '{nearest[0]}'?" if nearest else ""
            if name in RESEARCH_TASK_NAMES:
                hint = f"; did you mean '{RESEARCH_TASK_NAMES[name]}'? ('{name}' is the research code's name)"
            raise ValueError(f"tasks: unknown task '{name}'; known tasks are {sorted(TASK_SPECS)}{hint}")
    return {name: {} if settings is None else settings for name, settings in entries.items()}


def check_task_config(name: str, cfg: TaskConfig) -> None:
    """Raise ValueError for settings task `name` does not support."""
    spec = TASK_SPECS[name]
    if cfg.use_vector and spec.vector_key is None:
        with_vector = sorted(n for n, s in TASK_SPECS.items() if s.vector_key)
        raise ValueError(f"tasks.{name}.use_vector: only {with_vector} support use_vector; remove it")
    if cfg.use_vector and "loss" in cfg.model_fields_set:
        raise ValueError(f"tasks.{name}: use_vector trains with the cosine loss, so loss={cfg.loss!r} would be "
                         "ignored; remove 'loss' or set use_vector: false")
    if not spec.positive and (cfg.log_target or cfg.loss in RELATIVE_LOSSES):
        setting = "log_target" if cfg.log_target else f"loss={cfg.loss}"
        positive = sorted(n for n, s in TASK_SPECS.items() if s.positive)
        raise ValueError(f"tasks.{name}.{setting}: only tasks with a positive truth {positive} support it; "
                         "choose another loss or remove it")
    n = len(spec.output_names)
    for key in ("target_mean", "target_scale"):
        values = getattr(cfg, key)
        if values is not None and len(values) != n:
            raise ValueError(f"tasks.{name}.{key}={values}: needs {n} value(s), one per output {spec.output_names}")


def _check_task_support(parsed: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
    """Let each task reject settings it does not support (e.g. use_vector outside angle)."""
    for name, cfg in parsed.items():
        check_task_config(name, cfg)
    return parsed


TasksConfig = Annotated[
    dict[str, TaskConfig], BeforeValidator(_normalize_selection), AfterValidator(_check_task_support)
]
"""Schema type of the `tasks:` key: use `tasks: TasksConfig` in the regressor config."""

_TASKS_ADAPTER = TypeAdapter(TasksConfig, config=ConfigDict(title="tasks"))


def parse_tasks(value: Any) -> dict[str, TaskConfig]:
    """Turn a `tasks:` value (list of names or mapping name -> settings) into name -> TaskConfig.

    Raises pydantic.ValidationError (a ValueError) for an empty selection, an unknown task name
    (naming the known tasks and the nearest match), bad settings or settings a task does not support.
    """
    return _TASKS_ADAPTER.validate_python(value)
