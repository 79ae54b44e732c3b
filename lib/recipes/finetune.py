"""Regressor fine-tuning as a task of the shared engine: build, steps, resolutions, final evaluation."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lib.config import RegressorConfig, to_dict
from lib.data.branches import MC_TRUTH_BRANCHES, is_real_data
from lib.data.build import build_loader, read_branches
from lib.data.files import DataError
from lib.data.stream import RAW_INPUTS
from lib.engine import StepOutput, evaluation_weights
from lib.engine.distributed import DistInfo
from lib.engine.tracking import start_tracking
from lib.io.atomic import atomic_write_text
from lib.evaluation.fiducial import inside_fiducial
from lib.evaluation.inference import (
    FIDUCIAL_POSITION, PredictionCollector, collect_predictions, fiducial_mask, fit_baseline, quoted_metrics,
)
from lib.evaluation.resolution_fit import energy_resolution_report, report_summary, summary_metrics
from lib.evaluation.worst_events import read_raw_events, worst_events
from lib.models.regressor import Regressor
from lib.normalization import describe
from lib.tasks import SELECTED, TaskBalancer, build_tasks, by_output
from lib.recipes.transfer import load_pretrained_encoder, write_transfer_report

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
WORST_EVENTS_NAME = "worst_events.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The Regressor inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class FinetuneTask:
    """Engine task of regression; validation also collects per-event predictions for the resolutions."""

    monitor = "total_loss"

    def __init__(self, cfg: RegressorConfig, transfer_report: dict[str, Any] | None, tasks: dict[str, Any]) -> None:
        self.cfg, self.transfer_report = cfg, transfer_report
        self._collector = PredictionCollector(tasks)

    def _selected(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch, with training.fiducial_only marking the events inside evaluation.fiducial as SELECTED
        (validation files without uvwTruth are not cut; training files without it are refused in `build`)."""
        if not self.cfg.training.fiducial_only or FIDUCIAL_POSITION not in batch:
            return batch
        return {**batch, SELECTED: inside_fiducial(batch[FIDUCIAL_POSITION], self.cfg.evaluation.fiducial)}

    def training_step(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> StepOutput:
        """Balanced multi-task loss of one batch."""
        loss, metrics, _ = model(self._selected(batch))
        return StepOutput(loss, metrics, batch["x"].shape[0])

    def validation_step(self, model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        """Loss of a validation batch; keeps its predictions and truth for the resolutions (of every event)."""
        loss, metrics, outputs = model(self._selected(batch))
        self._collector.add(outputs, batch)
        return StepOutput(loss, metrics, batch["x"].shape[0])

    def validation_epoch_end(self) -> dict[str, float]:
        """Resolutions over the events of all ranks (gathered, never averaged per rank)."""
        return self._collector.metrics(self._collector.result(across_ranks=True))

    def export(self, model: nn.Module, run_dir: Path, tag: str) -> None:
        """Regressor weights are exported through best.pt / last.pt (EMA inside); nothing extra."""


def _check_truth_branches(cfg: RegressorConfig, loader: Any, tasks: dict[str, Any]) -> None:
    available = set(loader.truth_branches)
    if is_real_data(available) and not cfg.training.allow_real_data:
        raise DataError(f"the files of data.train_path have no MC truth (none of {', '.join(MC_TRUTH_BRANCHES)}): "
                        "they look like real data, whose emiAng / emiVec / xyzVTX are reconstructed, not true; train "
                        "the regressor on MC, or set training.allow_real_data=true to learn those values anyway")
    if cfg.training.fiducial_only and FIDUCIAL_POSITION not in available:
        raise DataError(f"training.fiducial_only needs the branch {FIDUCIAL_POSITION!r}, which the files of "
                        "data.train_path lack (or data.truth_branches leaves out); add it or unset fiducial_only")
    for name, task in tasks.items():
        missing = [key for key in task.truth_keys if key not in available]
        if missing:
            raise DataError(f"task '{name}' needs the truth branch(es) {missing}, which the files of "
                            f"data.train_path lack (they have {sorted(available)}); remove '{name}' from tasks "
                            "or give data with that truth")


def _training_truth(loader: Any, keys: list[str], tree_name: str) -> dict[str, Tensor]:
    """Truth branches `keys` of exactly the events `loader` trains on: the first loader.n_events entries of its
    files, in order (data.max_events cuts there)."""
    files, left = [], loader.n_events
    for info in loader.files:
        used = min(info.n_entries, left)
        if used:
            files.append(dataclasses.replace(info, n_entries=used))
        left -= used
    return {key: torch.as_tensor(values) for key, values in read_branches(files, keys, tree_name).items()}


def build_regressor(cfg: RegressorConfig) -> Regressor:
    """The regressor a run config describes (its model, tasks and task-balance sections)."""
    targets = build_tasks(cfg.tasks)
    weights = {name: task_cfg.weight for name, task_cfg in cfg.tasks.items()}
    return Regressor(cfg.model, targets, TaskBalancer(list(targets), cfg.training.task_balance, weights))


def build(cfg: RegressorConfig, dist: DistInfo, train_loader: Any) -> tuple[Regressor, FinetuneTask]:
    """Regressor with fitted target standardization and (optionally) the pretrained encoder loaded."""
    model = build_regressor(cfg)
    _check_truth_branches(cfg, train_loader, dict(model.tasks.items()))
    keys = sorted({key for task in model.tasks.values() for key in task.truth_keys})
    truth = _training_truth(train_loader, keys, cfg.data.tree_name)
    for task in model.tasks.values():
        if task.needs_fit:
            task.fit(task.target(truth))
    report = None
    if cfg.model.pretrained_encoder:
        report = load_pretrained_encoder(model.encoder, cfg.model.pretrained_encoder, cfg.model,
                                         cfg.normalization, cfg.model.allow_normalization_mismatch)
    return model, FinetuneTask(cfg, report, dict(model.tasks.items()))


def _log_headline(regressor: dict[str, float], baseline: dict[str, float]) -> None:
    keys = [k for k in ("E_rel_w68_pct", "u_w68", "v_w68", "w_w68", "dist3d_68", "t_w68", "opening_68_deg")
            if k in regressor]
    for key in keys:
        log.info("%-16s regressor %-12.4g baseline %s", key, regressor[key],
                 f"{baseline[key]:.4g}" if key in baseline else "-")


def passthrough_columns(result: dict[str, Any], cfg: RegressorConfig) -> dict[str, Any]:
    """The prediction file's pass-through columns: the reconstruction branches the input files carry
    and in_fiducial (uvwTruth inside evaluation.fiducial, when the files have uvwTruth)."""
    columns = {name: values for name, values in result["kept"].items() if name != FIDUCIAL_POSITION}
    inside = fiducial_mask(result, cfg.evaluation.fiducial)
    if inside is not None:
        columns["in_fiducial"] = inside
    return columns


def evaluate_run(cfg: RegressorConfig, device: torch.device, checkpoint: Path, run_dir: Path) -> dict[str, Any]:
    """Predictions file, metrics.json (regressor beside the classical baseline) and plots of a finished run."""
    from lib.plots import make_regression_plots
    from lib.plots.history import load_history
    from lib.evaluation.prediction_files import write_regression_predictions

    _, weights = evaluation_weights(checkpoint)
    model = build_regressor(cfg).to(device)
    model.load_state_dict(weights)
    raw = RAW_INPUTS if cfg.baseline.enabled or cfg.evaluation.worst_events else ()  # baseline, event displays
    val_loader = build_loader(cfg, "val", 0, 1, extras=raw)
    baseline = None
    if cfg.baseline.enabled:
        train_loader = build_loader(cfg, "train", 0, 1, extras=raw)
        baseline = fit_baseline(train_loader, cfg.baseline.fit_events, cfg.baseline)
    tasks = dict(model.tasks.items())
    result = collect_predictions(model, val_loader, device, baseline)
    metrics = quoted_metrics(tasks, result, cfg.evaluation.fiducial, cfg.evaluation.resolution_estimator)
    metrics["energy_resolution"] = resolution_studies(cfg, tasks, result, val_loader, run_dir)
    atomic_write_text(run_dir / METRICS_NAME, json.dumps(metrics, indent=1))
    pred_file = write_regression_predictions(
        run_dir / "predictions" / "predictions_val.root", run=result["run"], event=result["event"],
        truth=by_output(tasks, result["truth"]), pred=by_output(tasks, result["pred"]),
        sigma=by_output(tasks, result["sigma"]) or None, passthrough=passthrough_columns(result, cfg),
        metadata={"tasks": list(tasks), "normalization": describe(cfg.normalization),
                  "checkpoint": str(checkpoint), "split": "val", "fiducial": cfg.evaluation.fiducial},
    )
    history_file = run_dir / "training_history.json"
    make_regression_plots(pred_file, run_dir / "plots", load_history(history_file) if history_file.exists() else None)
    _log_headline(metrics["regressor"], metrics["baseline"])
    return metrics


def resolution_studies(cfg: RegressorConfig, tasks: dict[str, Any], result: dict[str, Any], val_loader: Any,
                       run_dir: Path) -> dict[str, Any]:
    """The energy-resolution fits (plot, and the metrics.json section returned) and the event displays of the
    worst-reconstructed events (plots/worst_events, worst_events.json) of a final evaluation."""
    from lib.plots import plot_energy_resolution, plot_worst_events

    evaluation = cfg.evaluation
    report = energy_resolution_report(result, fiducial_mask(result, evaluation.fiducial),
                                      evaluation.resolution_estimator, evaluation.resolution_bins)
    plot_energy_resolution(report, evaluation.resolution_estimator, run_dir / "plots")
    worst = worst_events(tasks, result, evaluation.worst_events)
    if worst:
        raw = read_raw_events(val_loader, {w.row for w in worst})
        plot_worst_events(worst, raw, run_dir / "plots" / "worst_events")
        atomic_write_text(run_dir / WORST_EVENTS_NAME, json.dumps([dataclasses.asdict(w) for w in worst], indent=1))
    return report_summary(report, evaluation.resolution_estimator)


def finish(cfg: RegressorConfig, dist: DistInfo, result: dict[str, Any], task: FinetuneTask,
           val_loader: Any) -> None:
    """Rank 0: transfer report, final evaluation on the whole validation set, metrics into MLflow."""
    if not dist.is_main:
        return
    run_dir = Path(result["run_dir"])
    write_transfer_report(run_dir, task.transfer_report)
    checkpoint = result.get("best_checkpoint") or result.get("last_checkpoint")
    if cfg.data.val_path is None or checkpoint is None:
        return
    metrics = evaluate_run(cfg, dist.device, Path(checkpoint), run_dir)
    tracker = start_tracking(cfg, to_dict(cfg), result.get("mlflow_run_id"), dist.is_main)
    prefixes = {"regressor": "final", "baseline": "baseline", "regressor_fiducial": "final_fiducial",
                "baseline_fiducial": "baseline_fiducial"}
    flat = {f"{prefix}/{k}": v for section, prefix in prefixes.items() for k, v in metrics.get(section, {}).items()}
    flat.update(summary_metrics(metrics["energy_resolution"]))
    tracker.log_metrics(flat, result["global_step"])
    tracker.log_artifacts([run_dir / METRICS_NAME, run_dir / "plots"])
    tracker.end("FINISHED")
