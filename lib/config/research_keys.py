"""Every config key of the research code (weiyuanli-icepp/xec-ml-wl: the dataclasses of its
lib/config.py and the keys its config/{mae,reg,inp} YAML files use) and where each went.

`RESEARCH_KEYS` is the one table: `python -m lib.config migrate` converts with it, and the loader
uses its targets to suggest the new name of a research-code key and to recognise a research-code
file. A `*` segment of a key matches any task name. The converters live in research_converters.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from lib.config import research_converters as conv
from lib.config.research_rules import (
    Rule,
    choice,
    companion_of,
    legacy,
    no_equivalent,
    not_needed,
    rename,
)
from lib.config.schema import LEGACY_KEYS

_SAME = ("data.train_path", "data.val_path", "data.tree_name", "data.batch_size", "data.num_workers",
         "data.npho_branch", "data.time_branch", "normalization.npho_scale", "normalization.npho_scale2",
         "normalization.time_scale", "normalization.time_shift", "normalization.npho_threshold",
         "model.encoder_dim", "model.predict_channels", "model.decoder_dim", "training.epochs",
         "training.weight_decay", "training.grad_accum_steps", "training.loss_beta", "training.npho_weight",
         "training.auto_channel_weight", "training.track_mae_rmse", "training.time.weight",
         "training.time.mask_ratio_scale", "training.time.use_npho_weight", "checkpoint.save_interval",
         "mlflow.experiment")

RESEARCH_KEYS: dict[str, Rule] = {
    **{key: rename(key) for key in _SAME},
    **{key: legacy(key, LEGACY_KEYS) for key in ("training.time_weight", "training.use_npho_time_weight",
                                                  "model.time_mask_ratio_scale")},
    # data
    "data.chunksize": not_needed("the loader plans its own reads"),
    "data.num_threads": not_needed("decoding runs in the data.num_workers processes"),
    "data.prefetch_factor": not_needed("the loader keeps its own read-ahead"),
    "data.log_invalid_npho": not_needed("invalid sensors are masked and counted, not logged one by one"),
    "data.fiducial.enabled": Rule("training.fiducial_only", conv.fiducial_switch),
    "data.fiducial.*": Rule("evaluation.fiducial", conv.fiducial_bound),
    # normalization
    "normalization.npho_scheme": choice("normalization.npho_scheme", conv.SAME_NPHO_SCHEMES),
    "normalization.sentinel_value": rename("normalization.time_sentinel", note="the research code's one sentinel "
                                           "marked invalid times"),
    "normalization.sentinel_time": rename("normalization.time_sentinel"),
    "normalization.sentinel_npho": rename("normalization.npho_sentinel"),
    # model
    "model.outer_mode": not_needed(conv.OUTER_FACE),
    "model.outer_fine_pool": not_needed(conv.OUTER_FACE),
    "model.hidden_dim": Rule("tasks.*.head_hidden", conv.hidden_dim),
    "model.drop_path_rate": rename("model.drop_path"),
    "model.dim_feedforward": Rule(None, conv.dim_feedforward, about=conv.FUSION_FFN),
    "model.num_fusion_layers": rename("model.fusion_depth"),
    "model.mask_ratio": rename("training.mask_ratio"),
    "model.mask_ratio.*": Rule("training.mask_ratio", conv.per_face_mask_ratio),
    "model.mask_npho_flat": no_equivalent("masking here is uniform over the valid sensors"),
    # model (inpainter)
    "model.freeze_encoder": rename("model.freeze_encoder"),
    "model.use_local_context": Rule(None, conv.local_context, about=conv.INPAINTER_HEADS),
    "model.use_masked_attention": no_equivalent(conv.INPAINTER_HEADS),
    "model.head_type": Rule(None, conv.head_type, about=conv.INPAINTER_HEADS),
    "model.sensor_positions_file": not_needed("sensor positions come from lib/geometry (geometry.sensor_table "
                                              "reads an as-built table)"),
    **{f"model.{key}": Rule(None, conv.cross_attention_parameter, about=conv.INPAINTER_HEADS)
       for key in ("cross_attn_k", "cross_attn_hidden", "cross_attn_latent_dim", "cross_attn_pos_dim")},
    # tasks (regressor)
    "tasks.*": Rule("tasks.*", conv.task_without_settings),
    "tasks.*.enabled": Rule("tasks.*", conv.task_enabled),
    "tasks.*.loss_fn": Rule("tasks.*.loss", conv.task_loss),
    "tasks.*.loss_beta": Rule(None, conv.task_loss_beta, about=conv.TASK_BETA_UNITS),
    "tasks.*.weight": Rule("tasks.*.weight", conv.task_weight),
    "tasks.*.log_transform": Rule("tasks.energy.log_target", conv.task_log_transform),
    "loss_balance": choice("training.task_balance", {"manual": "manual", "auto": "learned"}),
    "reweighting.*.enabled": Rule("tasks.*.reweight_bins", conv.reweight_enabled),
    "reweighting.*.nbins": Rule("tasks.*.reweight_bins", conv.reweight_bins),
    "reweighting.*.nbins_2d": Rule("tasks.*.reweight_bins", conv.reweight_bins),
    "export.onnx": no_equivalent("no export step yet"),
    # training: schedule and optimizer
    "training.lr": Rule("training.lr", conv.lr),
    "training.lr_scheduler": Rule("training.scheduler", conv.lr_scheduler),
    "training.use_scheduler": Rule("training.scheduler", conv.use_scheduler),
    "training.scheduler": Rule("training.scheduler", conv.legacy_scheduler),
    "training.max_lr": Rule("training.lr", conv.max_lr),
    "training.pct_start": Rule("training.warmup_epochs", conv.pct_start),
    "training.warmup_epochs": Rule("training.warmup_epochs", conv.warmup_epochs),
    "training.lr_min": rename("training.min_lr"),
    "training.lr_patience": Rule(None, conv.schedule_parameter("plateau"), about="no plateau schedule here"),
    "training.lr_factor": Rule(None, conv.schedule_parameter("plateau"), about="no plateau schedule here"),
    "training.lr_restart_period": Rule(None, conv.schedule_parameter("cosine_restarts"),
                                       about="no cosine schedule with restarts here"),
    "training.lr_restart_mult": Rule(None, conv.schedule_parameter("cosine_restarts"),
                                     about="no cosine schedule with restarts here"),
    "training.amp": Rule("training.amp", conv.amp),
    "training.compile": Rule("training.compile", conv.compile_mode),
    "training.compile_fullgraph": no_equivalent("torch.compile runs with its defaults here"),
    "training.ema_decay": Rule("training.ema.decay", conv.ema_decay),
    "training.grad_clip": Rule("training.grad_clip", conv.grad_clip),
    "training.channel_dropout_rate": no_equivalent("no channel dropout here"),
    "training.profile": not_needed("time a configuration with `python -m lib.bench_train` instead"),
    # training: losses
    "training.loss_fn": choice("training.loss_fn", {name: name for name in ("smooth_l1", "mse", "l1", "huber")}),
    "training.npho_threshold": Rule("normalization.npho_threshold", conv.npho_threshold),
    "training.time.npho_threshold": Rule("normalization.npho_threshold", conv.npho_threshold),
    "training.track_train_metrics": no_equivalent("no per-face training metrics here"),
    "training.track_metrics": no_equivalent("no per-face training metrics here"),
    "training.npho_loss_weight.enabled": no_equivalent("no npho-dependent loss weights here"),
    "training.npho_loss_weight.*": companion_of("training.npho_loss_weight.enabled",
                                                "no npho-dependent loss weights here"),
    "training.intensity_reweighting.enabled": no_equivalent("no intensity reweighting of MAE samples here"),
    "training.intensity_reweighting.*": companion_of("training.intensity_reweighting.enabled",
                                                     "no intensity reweighting of MAE samples here"),
    "training.mae_checkpoint": Rule("model.pretrained_encoder", conv.mae_checkpoint, about=conv.FOREIGN_MAE),
    "training.save_root_predictions": not_needed("validation predictions are written once, at the end of the run "
                                                 "(training.num_val_predictions)"),
    # checkpoint, tracking, cluster
    "checkpoint.save_dir": Rule("checkpoint.save_dir", conv.save_dir),
    "checkpoint.resume_from": Rule(None, conv.resume_from, about=conv.FOREIGN_CHECKPOINT),
    "checkpoint.save_predictions": Rule("training.num_val_predictions", conv.save_predictions),
    "checkpoint.root_save_interval": not_needed("predictions are written once, at the end of the run"),
    "checkpoint.save_artifacts": not_needed("plots and predictions are always written"),
    **{f"checkpoint.{key}": Rule(f"checkpoint.{key}", conv.seed_control)
       for key in ("refresh_lr", "reset_epoch", "new_mlflow_run")},
    "mlflow.run_name": Rule("checkpoint.run_name", conv.run_name),
    "distributed.num_gpus": rename("slurm.num_gpus"),
}

RESEARCH_DEFAULTS: dict[str, dict[str, object]] = {
    "reg": {"training.epochs": 20, "training.lr": 3e-4, "training.warmup_epochs": 2, "training.use_scheduler": True,
            "training.lr_min": 1e-7, "training.amp": True, "training.ema_decay": 0.999,
            "training.weight_decay": 1e-4, "training.channel_dropout_rate": 0.1},
    "mae": {"data.batch_size": 1024, "training.epochs": 20, "training.lr": 1e-4, "training.lr_scheduler": None,
            "training.warmup_epochs": 0, "training.amp": True, "training.weight_decay": 1e-4,
            "training.time.use_npho_weight": True},
    "inp": {"data.batch_size": 1024, "training.epochs": 50, "training.lr": 1e-4, "training.lr_scheduler": None,
            "training.warmup_epochs": 0, "training.amp": True, "training.weight_decay": 1e-4,
            "model.mask_ratio": 0.05, "training.track_mae_rmse": True, "training.time.use_npho_weight": True},
}
"""Defaults of the research code's dataclasses that differ from ours in effect; the migration applies
them to keys the old file does not give (unless it gives a key of the same setting, DEFAULT_ALIASES)."""

DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "training.lr_scheduler": ("training.use_scheduler", "training.scheduler"),
    "training.use_scheduler": ("training.lr_scheduler", "training.scheduler"),
    "training.time.use_npho_weight": ("training.use_npho_time_weight",),
}

KIND_MARKERS: dict[str, tuple[str, ...]] = {
    "inp": ("model.freeze_encoder", "model.use_local_context", "model.use_masked_attention", "model.head_type",
            "training.mae_checkpoint", "training.save_root_predictions"),
    "reg": ("tasks", "loss_balance", "reweighting", "export", "model.hidden_dim", "model.drop_path_rate"),
    "mae": ("model.mask_ratio", "model.decoder_dim", "model.predict_channels", "training.auto_channel_weight",
            "checkpoint.save_predictions"),
}
"""Keys (or sections) that only one kind of research-code config has, checked in this order."""


def research_rule(key: str) -> Rule | None:
    """The table's rule for the old dotted `key` (an exact entry first, then a `*` pattern)."""
    rule = RESEARCH_KEYS.get(key)
    if rule is not None:
        return rule
    depth = key.count(".")
    return next((rule for pattern, rule in RESEARCH_KEYS.items()
                 if pattern.count(".") == depth and "*" in pattern and fnmatch.fnmatchcase(key, pattern)), None)


def research_section(key: str) -> list[Rule]:
    """Rules of the table's keys inside the old section `key` (empty when it is no research section)."""
    depth = key.count(".") + 1
    return [rule for pattern, rule in RESEARCH_KEYS.items()
            if pattern.count(".") >= depth and fnmatch.fnmatchcase(key, ".".join(pattern.split(".")[:depth]))]


def guess_kind(keys: Iterable[str]) -> tuple[str, list[str]]:
    """(kind, the marker keys found) of a research-code file with these dotted keys; mae without markers."""
    keys = list(keys)
    for kind, markers in KIND_MARKERS.items():
        found = [m for m in markers if any(k == m or k.startswith(f"{m}.") for k in keys)]
        if found:
            return kind, found
    return "mae", []
