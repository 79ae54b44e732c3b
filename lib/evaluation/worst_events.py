"""The events a task reconstructs worst, found in the predictions and read back from the evaluation loader.

"Worst" is the largest residual of the task, each output's residual in units of its 68 % half-width and
the outputs summed in quadrature (energy: |E_pred - E| / w68; position: a standardized 3-D distance).
Rows index the predictions in the order of the (unshuffled) evaluation loader, so a second pass over the
same loader finds their raw inputs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.data.stream import RAW_INPUTS
from lib.tasks import valid_rows
from lib.tasks.metrics import half_width_68


@dataclass(frozen=True)
class WorstEvent:
    """One badly reconstructed event: where it is in the predictions and what the task made of it."""

    task: str
    rank: int
    row: int
    run: int
    event: int
    truth: dict[str, float]
    pred: dict[str, float]
    score: float
    """The residual in units of the 68 % half-width (quadrature sum over the task's outputs)."""


def _scores(task: Any, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) standardized residual size; -inf for events without a valid truth or a finite prediction."""
    keep = valid_rows(truth) & np.isfinite(pred).all(1)
    scores = np.full(len(truth), -np.inf)
    if keep.sum() < 2:
        return scores
    residuals = task.residuals(np.asarray(pred[keep], np.float64), np.asarray(truth[keep], np.float64))
    widths = np.array([half_width_68(residuals[:, i]) or 1.0 for i in range(residuals.shape[1])])
    scores[keep] = np.sqrt(((residuals / widths) ** 2).sum(1))
    return scores


def worst_events(tasks: Mapping[str, Any], result: Mapping[str, Any], k: int) -> list[WorstEvent]:
    """The k events with the largest residuals of each task of `result` (PredictionCollector.result)."""
    found: list[WorstEvent] = []
    for name, task in tasks.items():
        if name not in result["pred"] or name not in result["truth"]:
            continue
        pred, truth = result["pred"][name], result["truth"][name]
        scores = _scores(task, pred, truth)
        for rank, row in enumerate(np.argsort(-scores)[: min(k, int(np.isfinite(scores).sum()))]):
            found.append(WorstEvent(name, rank + 1, int(row), int(result["run"][row]), int(result["event"][row]),
                                    dict(zip(task.output_names, truth[row].tolist())),
                                    dict(zip(task.output_names, pred[row].tolist())), float(scores[row])))
    return found


def read_raw_events(loader: Any, rows: set[int]) -> dict[int, dict[str, np.ndarray]]:
    """{row: {"npho", "time": (sensors,) raw values}} of the given rows of an evaluation `loader` built with the
    RAW_INPUTS extra columns, read in one whole pass (a loader stopped early would continue from there)."""
    found: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    loader.set_epoch(0)
    for batch in loader:
        size = len(batch[RAW_INPUTS[0]])
        for row in (r for r in rows if start <= r < start + size):
            npho, time = (batch[name][row - start].double().numpy() for name in RAW_INPUTS)
            found[row] = {"npho": npho, "time": time}
        start += size
    return found
