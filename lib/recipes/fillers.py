"""Fillers named on a command line (`lib.inpaint`, `lib.predict --inpaint`): a model-free baseline by name
(lib.evaluation.inpainting_baselines.BASELINES) or a trained inpainter by its checkpoint
(lib.recipes.inpainting.load_inpainter), which fills with its own normalization."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lib.engine import CheckpointError
from lib.evaluation.inpainting_baselines import BASELINES, Filler, InpainterFiller, build_baseline
from lib.evaluation.inpainting_study import INPAINTER


def load_inpainter_filler(checkpoint: str | Path, device: str = "cpu") -> InpainterFiller:
    """The trained inpainter of `checkpoint` (best.pt / last.pt of a lib.train_inpainter run) as a filler."""
    try:
        from lib.recipes.inpainting import load_inpainter
    except ImportError:
        raise CheckpointError(f"cannot load the inpainter {checkpoint}: this installation has no trained-inpainter "
                              "loader (lib.recipes.inpainting); use a baseline filler") from None
    inpainter = load_inpainter(checkpoint, device)
    return InpainterFiller(inpainter, inpainter.cfg.normalization, name=INPAINTER)


def filler_factory(spec: str, device: str = "cpu",
                   position_branch: str | None = None) -> Callable[[Sequence[str]], Filler]:
    """branches -> filler for a command-line value `spec`: a baseline name (built for each input's branches;
    solid_angle takes `position_branch` or the input's default) or an inpainter checkpoint path (loaded once,
    here). CheckpointError for anything else."""
    if spec in BASELINES:
        return lambda branches: build_baseline(spec, branches, position_branch)
    if not Path(spec).is_file():
        raise CheckpointError(f"{spec}: neither a baseline ({', '.join(BASELINES)}) nor an existing inpainter "
                              "checkpoint; give one of those")
    inpainter = load_inpainter_filler(spec, device)
    return lambda branches: inpainter
