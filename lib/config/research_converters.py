"""Converters of research-code keys whose value, or whose meaning, depends on more than the key itself
(the table is lib/config/research_keys.py; the vocabulary lib/config/research_rules.py).

Facts about the research code these rely on (weiyuanli-icepp/xec-ml-wl, lib/config.py and its
train_*.py / engines): AMP autocast to bfloat16; OneCycleLR peaks at max_lr (default lr) and ramps
for pct_start of the run; lr is used as given (no batch-size scaling); ema_decay null or <= 0 means
no EMA; grad_clip 0 means no clipping; regression losses act on raw targets; tasks and reweighting
are on only with `enabled: true`; reweighting of angle and uvwFI uses nbins_2d, of energy and
timing nbins; its outer fine grid is (z, phi) = 45 x 72 where ours is (phi, z).
"""
from __future__ import annotations

import re
from typing import Any

from lib.config.research_rules import (
    OldFile,
    Outcome,
    dropped,
    lost,
    mapped,
    new_task_name,
)

SAME_NPHO_SCHEMES = {name: name for name in ("log1p", "sqrt", "anscombe", "linear")}
FUSION_FFN = "the fusion transformer's feed-forward width is always 4 x model.encoder_dim here"
TASK_BETA_UNITS = ("the research code applied loss_beta to raw targets (GeV, s, cm, deg); here beta acts on "
                   "standardized targets (target / target_scale), so tasks.<task>.beta keeps its default")
OUTER_FACE = ("the outer face is always encoded at sensor resolution here: its coarse 24x9 grid and its 6x5 dense "
              "patch (the research code's outer_mode 'split'), no fine grid to pool")
FOREIGN_CHECKPOINT = "a research-code checkpoint cannot be loaded here; the run starts from scratch"
SEED_CONTROL = "applies once checkpoint.resume_from names a checkpoint of this project"
FOREIGN_MAE = ("a research-code MAE checkpoint cannot be loaded here; pretrain with lib.train_mae and give its "
               "encoder_best.pt as model.pretrained_encoder (the encoder starts from scratch until then)")
INPAINTER_HEADS = ("the inpainter's heads here are per-face MLPs that read the face's tokens and each masked "
                   "sensor's same-face neighbourhood")
_TWO_D_REWEIGHTING = ("angle", "uvwFI")
_REWEIGHT_DEFAULTS = {"nbins": 30, "nbins_2d": [20, 20]}
_ONECYCLE_PCT_START = 0.3


def hidden_dim(value: Any, key: str, old: OldFile) -> Outcome:
    """The one head width of the research regressor -> the head width of every enabled task."""
    tasks = old.enabled_tasks()
    if not tasks:
        return dropped("no task is enabled")
    names = [new_task_name(f"tasks.{task}") for task in tasks]
    return mapped({f"tasks.{name}.head_hidden": value for name in names}, "each task has its own head here")


def dim_feedforward(value: Any, key: str, old: OldFile) -> Outcome:
    """Dropped when it equals 4 x encoder_dim (what ours always uses), else lost."""
    encoder_dim = old.get("model.encoder_dim")
    if encoder_dim is not None and value == 4 * encoder_dim:
        return dropped("= 4 x model.encoder_dim, as here")
    return lost(FUSION_FFN)


def _for_enabled_task(convert):
    """Wrap a task-key converter: keys of a task that is not enabled are dropped."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        name = key.split(".")[1]
        if not old.task_enabled(name):
            return dropped(f"task {name} is not enabled")
        return convert(value, key, old)

    return apply


def task_without_settings(value: Any, key: str, old: OldFile) -> Outcome:
    """`tasks.<name>: null` (or any non-mapping): the research code left such a task off."""
    return dropped("no settings: the task was off")


def task_enabled(value: Any, key: str, old: OldFile) -> Outcome:
    """`enabled: true` selects the task (under our name); off tasks are left out."""
    if value is not True:
        return dropped("task off")
    return mapped({f"tasks.{new_task_name(key)}": {}})


@_for_enabled_task
def task_loss(value: Any, key: str, old: OldFile) -> Outcome:
    """Per-task loss name; huber becomes smooth_l1 (huber(d) = d * smooth_l1(beta=d): the same shape)."""
    target = f"tasks.{new_task_name(key)}.loss"
    if value in ("smooth_l1", "l1", "mse", "gaussian_nll"):
        return mapped({target: value})
    if value == "huber":
        return mapped({target: "smooth_l1"}, "huber(delta) = delta x smooth_l1(beta=delta): the same shape")
    return lost(f"no {value!r} loss here; the default (smooth_l1) applies")


task_loss_beta = _for_enabled_task(lambda value, key, old: lost(TASK_BETA_UNITS))
task_weight = _for_enabled_task(lambda value, key, old: mapped({f"tasks.{new_task_name(key)}.weight": value}))


@_for_enabled_task
def task_log_transform(value: Any, key: str, old: OldFile) -> Outcome:
    """log_transform: true -> tasks.energy.log_target (log E standardized, E predicted); other targets are not."""
    if not value:
        return dropped("off, as here")
    name = new_task_name(key)
    if name != "energy":
        return lost(f"only energy has a log target here (tasks.energy.log_target); {name} is standardized as it is")
    return mapped({"tasks.energy.log_target": True})


def reweight_enabled(value: Any, key: str, old: OldFile) -> Outcome:
    """`reweighting.<task>.enabled: true` -> tasks.<task>.reweight_bins from nbins (or nbins_2d)."""
    name = key.split(".")[1]
    if value is not True:
        return dropped("reweighting off")
    if not old.task_enabled(name):
        return dropped(f"task {name} is not enabled")
    if name not in _TWO_D_REWEIGHTING:
        bins = old.get(f"reweighting.{name}.nbins", _REWEIGHT_DEFAULTS["nbins"])
        return mapped({f"tasks.{new_task_name(key)}.reweight_bins": bins})
    bins_2d = old.get(f"reweighting.{name}.nbins_2d", _REWEIGHT_DEFAULTS["nbins_2d"])
    if len(set(bins_2d)) != 1:
        return lost(f"nbins_2d {bins_2d}: one bin count per task here (tasks.<task>.reweight_bins)")
    return mapped({f"tasks.{new_task_name(key)}.reweight_bins": bins_2d[0]},
                  "here the weight is a product of per-output histograms, not one joint histogram")


def reweight_bins(value: Any, key: str, old: OldFile) -> Outcome:
    """nbins / nbins_2d are read together with `reweighting.<task>.enabled`."""
    _, name, leaf = key.split(".")
    if (leaf == "nbins_2d") != (name in _TWO_D_REWEIGHTING):
        return dropped(f"the research code did not use {leaf} for {name}")
    if old.get(f"reweighting.{name}.enabled") is not True or not old.task_enabled(name):
        return dropped("reweighting off")
    return mapped({}, f"read with reweighting.{name}.enabled")


def _schedule(name: str, old: OldFile) -> Outcome:
    if name in ("cosine", "none"):
        return mapped({"training.scheduler": name})
    if name != "onecycle":
        return lost(f"no {name!r} schedule here; the default (cosine) applies")
    peak = old.get("training.max_lr") or old.get("training.lr")
    ramp = old.get("training.pct_start", _ONECYCLE_PCT_START) * old.get("training.epochs")
    assignments = {"training.scheduler": "onecycle", "training.warmup_epochs": ramp}
    if peak is not None:
        assignments.update({"training.lr": peak, "training.lr_scaling": False})
    return mapped(assignments, "peak lr = max_lr (or lr); warm-up = pct_start x epochs")


def lr_scheduler(value: Any, key: str, old: OldFile) -> Outcome:
    """The research code's schedule name (null: constant lr)."""
    return _schedule(old.scheduler(), old)


def use_scheduler(value: Any, key: str, old: OldFile) -> Outcome:
    """The older on/off switch of the schedule (scheduler named by `training.scheduler`, default cosine)."""
    if old.has("training.lr_scheduler"):
        return dropped("training.lr_scheduler decides")
    if old.has("training.scheduler") and value is not False:
        return mapped({}, "read with training.scheduler")
    return _schedule("cosine" if value is not False else "none", old)


def legacy_scheduler(value: Any, key: str, old: OldFile) -> Outcome:
    """The older schedule name, used when `use_scheduler` is not false."""
    if old.has("training.lr_scheduler"):
        return dropped("training.lr_scheduler decides")
    if old.get("training.use_scheduler") is False:
        return dropped("training.use_scheduler is false")
    return _schedule(old.scheduler(), old)


def lr(value: Any, key: str, old: OldFile) -> Outcome:
    """lr as given (lr_scaling: false); with onecycle the schedule carries the peak."""
    if old.scheduler() == "onecycle":
        if old.get("training.max_lr") is None:
            return mapped({}, "the onecycle peak, written with the schedule")
        return dropped("onecycle runs up to max_lr; lr is unused")
    return mapped({"training.lr": value, "training.lr_scaling": False},
                  "lr_scaling: false keeps lr as given (the research code did not scale it with the batch)")


def max_lr(value: Any, key: str, old: OldFile) -> Outcome:
    """The onecycle peak, written with the schedule."""
    if old.scheduler() != "onecycle":
        return dropped("only used by the onecycle schedule")
    if value is None:
        return dropped("the peak is training.lr")
    return mapped({}, "the onecycle peak, written with the schedule")


def pct_start(value: Any, key: str, old: OldFile) -> Outcome:
    """The onecycle ramp, written with the schedule as warmup_epochs."""
    if old.scheduler() != "onecycle":
        return dropped("only used by the onecycle schedule")
    return mapped({}, "the onecycle warm-up, written with the schedule")


def warmup_epochs(value: Any, key: str, old: OldFile) -> Outcome:
    """Warm-up epochs, except with onecycle, whose ramp is pct_start x epochs."""
    if old.scheduler() == "onecycle":
        return dropped("onecycle ramps for pct_start x epochs instead")
    return mapped({"training.warmup_epochs": value})


def schedule_parameter(schedule: str):
    """Converter of a parameter of the research code's `schedule` (which has no equivalent here)."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        if old.scheduler() == schedule:
            return lost(f"a parameter of the {schedule} schedule, which has no equivalent here")
        return dropped(f"only used by the {schedule} schedule")

    return apply


def amp(value: Any, key: str, old: OldFile) -> Outcome:
    """true -> bf16 (the research code's autocast dtype), false -> none."""
    if not isinstance(value, bool):
        return lost(f"{value!r} is not true/false")
    return mapped({"training.amp": "bf16" if value else "none"})


def compile_mode(value: Any, key: str, old: OldFile) -> Outcome:
    """A torch.compile mode (or true/false) -> true/false; the mode itself has no equivalent."""
    off = value is False or (isinstance(value, str) and value.lower() in ("false", "none", ""))
    if off:
        return mapped({"training.compile": False})
    note = "" if value is True else f"mode {value or 'reduce-overhead'!r} dropped: torch.compile's default mode here; "
    return mapped({"training.compile": True}, note + "the research code compiled only on CUDA with Triton")


def ema_decay(value: Any, key: str, old: OldFile) -> Outcome:
    """null or <= 0: EMA off; else EMA on with this decay."""
    if value is None or value <= 0:
        return mapped({"training.ema.enabled": False})
    return mapped({"training.ema.enabled": True, "training.ema.decay": value})


def grad_clip(value: Any, key: str, old: OldFile) -> Outcome:
    """0 or null: no clipping (null here)."""
    if not value:
        return mapped({"training.grad_clip": None}, "no clipping")
    return mapped({"training.grad_clip": value})


def npho_threshold(value: Any, key: str, old: OldFile) -> Outcome:
    """The time-validity threshold (raw photons) -> the one threshold of the normalization here."""
    if value is None:
        return dropped("the default threshold applies")
    return mapped({"normalization.npho_threshold": value})


def save_dir(value: Any, key: str, old: OldFile) -> Outcome:
    """Output folder; runs go to save_dir/<run_name> here."""
    note = "" if old.kind == "reg" else "the research code wrote into save_dir itself; here into save_dir/<run_name>"
    return mapped({"checkpoint.save_dir": value}, note)


def resume_from(value: Any, key: str, old: OldFile) -> Outcome:
    """A research-code checkpoint is not loadable here."""
    return dropped("nothing to resume") if value is None else lost(FOREIGN_CHECKPOINT)


def seed_control(value: Any, key: str, old: OldFile) -> Outcome:
    """checkpoint.{reset_epoch, refresh_lr, new_mlflow_run}: the same controls here, for a run seeded from
    checkpoint.resume_from (reset_epoch also restarts the schedule here); without resume_from they did nothing."""
    if value is None or old.get("checkpoint.resume_from") in (None, ""):
        return dropped("no effect without checkpoint.resume_from, in the research code too")
    return mapped({key: bool(value)}, SEED_CONTROL)


def save_predictions(value: Any, key: str, old: OldFile) -> Outcome:
    """false -> no saved validation predictions; true is the default here."""
    if value:
        return mapped({}, "validation predictions are saved by default here (training.num_val_predictions)")
    return mapped({"training.num_val_predictions": 0})


def run_name(value: Any, key: str, old: OldFile) -> Outcome:
    """The MLflow run name -> the run's name here (its folder and MLflow run), made a plain folder name."""
    if not value:
        return dropped("a name is generated, as here")
    name = re.sub(r"[\s/\\]+", "_", str(value))
    return mapped({"checkpoint.run_name": name}, "" if name == value else "spaces and slashes became _")



FIDUCIAL_BOUNDS = ("u_max", "v_max", "w_min", "w_max")


def fiducial_switch(value: Any, key: str, old: OldFile) -> Outcome:
    """data.fiducial.enabled: the research code cut its training data to the fiducial volume."""
    if value is not True:
        return dropped("off, as here")
    if old.kind != "reg":
        return lost("a fiducial cut of the training data exists for the regressor only")
    return mapped({"training.fiducial_only": True})


def fiducial_bound(value: Any, key: str, old: OldFile) -> Outcome:
    """data.fiducial.<bound> -> evaluation.fiducial.<bound>, when the cut was on (null w_max: no bound, as here)."""
    bound = key.rsplit(".", 1)[1]
    if old.get("data.fiducial.enabled") is not True or old.kind != "reg":
        return dropped("data.fiducial.enabled is off")
    if bound not in FIDUCIAL_BOUNDS or (value is None and bound != "w_max"):
        return lost(f"evaluation.fiducial has {', '.join(FIDUCIAL_BOUNDS)}, and only w_max may be null")
    return mapped({f"evaluation.fiducial.{bound}": value})


def per_face_mask_ratio(value: Any, key: str, old: OldFile) -> Outcome:
    """Per-face mask ratios of the research inpainter: one training.mask_ratio here."""
    return lost("one training.mask_ratio for every face here (the inpainter's default is 0.05)")


def local_context(value: Any, key: str, old: OldFile) -> Outcome:
    """The heads here always read the neighbourhood of each masked sensor."""
    return dropped(f"on, as here: {INPAINTER_HEADS}") if value else lost(INPAINTER_HEADS)


def head_type(value: Any, key: str, old: OldFile) -> Outcome:
    """per_face is what the heads here are; any other head type is lost."""
    return dropped(f"as here: {INPAINTER_HEADS}") if value == "per_face" else lost(INPAINTER_HEADS)


def cross_attention_parameter(value: Any, key: str, old: OldFile) -> Outcome:
    """A parameter of the research code's cross-attention head: lost with it, dropped when another head is used."""
    if old.get("model.head_type") == "cross_attention":
        return lost(INPAINTER_HEADS)
    return dropped("model.head_type is not cross_attention")


def mae_checkpoint(value: Any, key: str, old: OldFile) -> Outcome:
    """The research code's MAE checkpoint is not loadable here."""
    return dropped("the encoder starts from scratch") if value in (None, "") else lost(FOREIGN_MAE)
