"""Dead-channel lists (`data.dead_channels`): which sensors were dead in real runs.

A list is a text file with one sensor id per line (one list for every run), or one `run id` pair per
line (a list per run); `#` starts a comment, blank lines are ignored, and a file uses one of the two
forms. Ids are integers in 0..4759, listed once per run. A list that kills every sensor of a face is
refused: the inpainter fills a sensor from its own face's visible sensors and token, so such a pattern
has nothing to fill it from. Every error is one line that starts with `file:line`.

The lists serve MC pseudo-experiments (`training.mask_mode: dead_pattern | mixed`: each event gets one
run's pattern, applied on the fly) and real data (`DeadChannels.for_run`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.files import DataError
from lib.geometry import FACE_NAMES, N_SENSORS, SENSOR_FACE

ALL_RUNS = None
"""Run key of a file in the one-id-per-line form: its list applies to every run."""


class DeadChannelError(DataError):
    """A dead-channel list cannot be used; the message starts with file:line and says what to change."""


@dataclass(frozen=True)
class DeadChannels:
    """The sensor ids of one file, per run (key ALL_RUNS for a file without run numbers), in file order."""

    path: Path
    runs: dict[int | None, np.ndarray]

    def patterns(self) -> np.ndarray:
        """(n_runs, 4760) bool: one row per run of the file, True = dead."""
        rows = np.zeros((len(self.runs), N_SENSORS), dtype=bool)
        for row, ids in zip(rows, self.runs.values()):
            row[ids] = True
        return rows

    def for_run(self, run: int) -> np.ndarray:
        """Sorted dead sensor ids of `run` (the one list of a file without run numbers; empty for a run
        the file does not name)."""
        ids = self.runs.get(ALL_RUNS if ALL_RUNS in self.runs else int(run))
        return np.sort(ids) if ids is not None else np.empty(0, dtype=np.int64)


def _integer(token: str, what: str, where: str) -> int:
    try:
        return int(token, 10)
    except ValueError:
        raise DeadChannelError(f"{where}: {token!r} is not an integer {what}; write one sensor id per line, "
                               "or one `run id` pair per line") from None


def _parse_line(tokens: list[str], where: str) -> tuple[int | None, int]:
    """(run or ALL_RUNS, sensor id) of one non-empty line."""
    if len(tokens) > 2:
        raise DeadChannelError(f"{where}: {len(tokens)} values on one line; write one sensor id, or one `run id` "
                               "pair, per line")
    run = _integer(tokens[0], "run number", where) if len(tokens) == 2 else ALL_RUNS
    sensor = _integer(tokens[-1], "sensor id", where)
    if run is not None and run < 0:
        raise DeadChannelError(f"{where}: run number {run} is negative")
    if not 0 <= sensor < N_SENSORS:
        raise DeadChannelError(f"{where}: sensor id {sensor} is out of range; ids run from 0 to {N_SENSORS - 1}")
    return run, sensor


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DeadChannelError(f"data.dead_channels={path} does not exist; give a text file with one dead sensor "
                               "id per line (or `run id` pairs)")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DeadChannelError(f"{path}: not a text file ({err.reason} at byte {err.start}); give a text file "
                               "with one dead sensor id per line") from None


def _check_faces(path: Path, runs: dict[int | None, np.ndarray], first_lines: dict[int | None, int]) -> None:
    """Refuse a pattern that kills a whole face."""
    sizes = np.bincount(SENSOR_FACE, minlength=len(FACE_NAMES))
    for run, ids in runs.items():
        full = np.flatnonzero(np.bincount(SENSOR_FACE[ids], minlength=len(FACE_NAMES)) == sizes)
        if full.size:
            which = "the list" if run is ALL_RUNS else f"run {run}"
            raise DeadChannelError(
                f"{path}:{first_lines[run]}: {which} marks all {sizes[full[0]]} sensors of the {FACE_NAMES[full[0]]} "
                "face dead; the inpainter fills a sensor from the visible sensors of its own face, so a face without "
                "any cannot be filled: remove that run's list or some ids of that face")


def read_dead_channels(path: str | Path) -> DeadChannels:
    """Read and check a dead-channel list (see the module docstring); DeadChannelError on the first problem."""
    path = Path(path)
    found: dict[int | None, dict[int, int]] = {}  # run -> {sensor id: line}
    form_line: tuple[bool, int] | None = None  # (has run numbers, line that set the form)
    for number, text in enumerate(_read_lines(path), start=1):
        tokens = text.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        run, sensor = _parse_line(tokens, where)
        if form_line is None:
            form_line = (run is not ALL_RUNS, number)
        elif form_line[0] != (run is not ALL_RUNS):
            forms = ("a bare sensor id", "a `run id` pair")
            raise DeadChannelError(f"{where}: {forms[run is not ALL_RUNS]} in a file whose line {form_line[1]} gives "
                                   f"{forms[form_line[0]]}; use one form in the whole file")
        seen = found.setdefault(run, {})
        if sensor in seen:
            which = "" if run is ALL_RUNS else f" for run {run}"
            raise DeadChannelError(f"{where}: sensor id {sensor} is listed twice{which} "
                                   f"(first at line {seen[sensor]}); remove one")
        seen[sensor] = number
    if not found:
        raise DeadChannelError(f"{path}: no sensor ids (only blank or comment lines); list one dead sensor id per "
                               "line, or unset data.dead_channels")
    runs = {run: np.fromiter(ids, dtype=np.int64, count=len(ids)) for run, ids in found.items()}
    _check_faces(path, runs, {run: min(ids.values()) for run, ids in found.items()})
    return DeadChannels(path, runs)
