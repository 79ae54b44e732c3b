"""Event displays of the worst-reconstructed events of each task (lib.evaluation.worst_events)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lib.evaluation.worst_events import WorstEvent
from lib.plots.event import plot_event_display


def _values(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


def plot_worst_events(events: list[WorstEvent], raw: Mapping[int, Mapping[str, np.ndarray]],
                      out_dir: str | os.PathLike) -> list[Path]:
    """<task>_<rank>.png per event found in `raw` (raw npho / time by prediction row): the event display
    titled with the task's truth, prediction and residual size."""
    saved: list[Path] = []
    for worst in events:
        if worst.row not in raw:
            continue
        title = (f"{worst.task} #{worst.rank} (run {worst.run}, event {worst.event}): truth {_values(worst.truth)}; "
                 f"pred {_values(worst.pred)}; |residual| = {worst.score:.1f} x w68")
        event = {**raw[worst.row], "run": worst.run, "event": worst.event}
        saved.append(plot_event_display(event, Path(out_dir) / f"{worst.task}_{worst.rank}.png", title=title))
    return saved
