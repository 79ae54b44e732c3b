"""The dead-channel study: a regressor's resolutions on the same events with the sensors of a dead-channel
list (i) as they are ("no_dead"), (ii) dead, at the fill value 1e10 ("dead_sentinel"), and (iii, iv)
filled by each filler before the regressor runs ("dead_<filler>": an inpainter, the baselines).

Every scenario's x is normalized from the same raw values (lib.evaluation.inpainting_preprocess), and
its resolutions come from lib.tasks.resolution_metrics through the PredictionCollector (the one
resolution path). Sensors the files already flag as dead stay as they are in every scenario.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.data.dead_channels import DeadChannels
from lib.evaluation.inference import PredictionCollector
from lib.evaluation.inpainting_baselines import Filler
from lib.evaluation.inpainting_masks import listed_dead
from lib.evaluation.inpainting_preprocess import fill_sensors, refilled_batch
from lib.normalization import NormalizationConfig

log = logging.getLogger(__name__)

NO_DEAD, DEAD_SENTINEL = "no_dead", "dead_sentinel"
INPAINTER = "inpainter"
"""The trained inpainter's name among the fillers (its scenario: dead_inpainter)."""
SCENARIO_LABELS = {NO_DEAD: "(i) no dead channels", DEAD_SENTINEL: "(ii) dead channels as sentinels (1e10)"}
HEADLINE_METRICS = ("E_rel_w68_pct", "u_w68", "v_w68", "w_w68", "dist3d_68", "t_w68", "opening_68_deg")
"""Resolutions the study's table shows (when the regressor has the task); metrics.json holds them all."""


def filled_scenario(filler_name: str) -> str:
    """Scenario name of dead channels filled by `filler_name`."""
    return f"dead_{filler_name}"


def scenario_label(scenario: str) -> str:
    """Human-readable name of a scenario for tables and plots."""
    if scenario in SCENARIO_LABELS:
        return SCENARIO_LABELS[scenario]
    filler = scenario.removeprefix("dead_")
    if filler == INPAINTER:
        return "(iii) dead channels inpainted"
    return f"(iv) dead channels filled: {filler} baseline"


def _scenario_batches(batch: Mapping[str, torch.Tensor], dead: np.ndarray, fillers: Mapping[str, Filler],
                      norm: NormalizationConfig) -> dict[str, dict[str, torch.Tensor]]:
    batches = {NO_DEAD: refilled_batch(batch, np.zeros_like(dead), None, norm),
               DEAD_SENTINEL: refilled_batch(batch, dead, None, norm)}
    for name, filler in fillers.items():
        batches[filled_scenario(name)] = refilled_batch(batch, dead, fill_sensors(filler, batch, dead, norm), norm)
    return batches


@torch.no_grad()
def dead_channel_study(model: nn.Module, loader: Any, norm: NormalizationConfig, dead_list: DeadChannels,
                       fillers: Mapping[str, Filler], device: torch.device) -> dict[str, Any]:
    """Resolutions of `model` (a regressor: .tasks, .head_outputs(x)) per scenario over `loader` (built
    with the RAW_INPUTS columns and normalization `norm`): {"events", "dead_sensors_per_event",
    "scenarios": {scenario: resolution metrics}}."""
    model.eval()
    scenarios = [NO_DEAD, DEAD_SENTINEL, *(filled_scenario(name) for name in fillers)]
    collectors = {scenario: PredictionCollector(model.tasks) for scenario in scenarios}
    events, dead_count = 0, 0
    loader.set_epoch(0)
    for batch in loader:
        dead = listed_dead(dead_list, batch["run"].numpy())
        for scenario, variant in _scenario_batches(batch, dead, fillers, norm).items():
            collectors[scenario].add(model.head_outputs(variant["x"].to(device)), variant)
        events += len(dead)
        dead_count += int(dead.sum())
    if events == 0:
        raise ValueError("dead-channel study: the input holds no events")
    results = {scenario: collector.metrics(collector.result()) for scenario, collector in collectors.items()}
    log.info("dead-channel study: %d events, %.1f listed dead sensors per event", events, dead_count / events)
    return {"events": events, "dead_sensors_per_event": dead_count / events, "scenarios": results}


def headline_keys(study: Mapping[str, Any]) -> list[str]:
    """The HEADLINE_METRICS some scenario of `study` has."""
    present = {key for metrics in study["scenarios"].values() for key in metrics}
    return [key for key in HEADLINE_METRICS if key in present]


def study_table(study: Mapping[str, Any]) -> str:
    """Markdown table: one row per scenario, one column per headline resolution."""
    keys = headline_keys(study)
    lines = ["| scenario | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for scenario, metrics in study["scenarios"].items():
        cells = [_cell(metrics.get(key)) for key in keys]
        lines.append(f"| {scenario_label(scenario)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
