"""Figure creation and saving: mplhep ROOT style, the Agg canvas, no pyplot global state."""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import mplhep
from matplotlib.figure import Figure

from lib.io.atomic import atomic_write

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_style() -> Iterator[None]:
    """mplhep's ROOT style, with the font-fallback warnings of a machine lacking its fonts silenced."""
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context(mplhep.style.ROOT):
            warnings.filterwarnings("ignore", message=".*[Ff]ont.*")
            warnings.filterwarnings("ignore", message=".*[Gg]lyph.*")
            yield
    finally:
        font_log.setLevel(level)


@contextlib.contextmanager
def figure(path: Path, saved: list[Path], **subplots_kwargs) -> Iterator[tuple[Figure, object]]:
    """Yield (fig, axes) of a styled figure (Figure.subplots arguments); on exit save it as
    PNG at `path` (atomically, parents created) and append the path to `saved`."""
    with _quiet_style():
        fig = Figure(figsize=subplots_kwargs.pop("figsize", None), layout="constrained")
        axes = fig.subplots(**subplots_kwargs)
        yield fig, axes
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    saved.append(path)
    log.debug("saved %s", path)
