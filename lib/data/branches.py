"""Branches of the experiment's files with a meaning of their own: MC truth, and the conventional
reconstruction that prediction files carry beside the model's predictions.

From the research code's preprocessing macros (weiyuanli-icepp/xec-ml-wl): others/MCXECPreprocess.C
writes MC files (truth and reconstruction), macro/PrepareRealData.C real-data files (the
reconstruction only, and emiVec / emiAng / xyzVTX computed from the reconstructed gamma position
and positron vertex). See docs/conventions.md.
"""
from __future__ import annotations

from collections.abc import Iterable

MC_TRUTH_BRANCHES = ("energyTruth", "uvwTruth", "timeTruth")
"""A file with none of these is real data."""
RECO_BRANCHES = ("energyReco", "timeReco", "uvwRecoFI", "xyzRecoFI", "uvwRecoLC", "xyzRecoLC")
"""The conventional reconstruction, in MC and in real data."""
DIRECTION_BRANCHES = ("emiAng", "emiVec", "xyzVTX")
"""Truth in MC files; in real-data files computed from the reconstruction."""


def is_real_data(branches: Iterable[str]) -> bool:
    """Whether files with these branches are real data (no MC truth branch at all)."""
    return not set(MC_TRUTH_BRANCHES) & set(branches)


def reconstruction_branches(branches: Iterable[str]) -> list[str]:
    """The branches among `branches` that hold the conventional reconstruction: RECO_BRANCHES, and
    DIRECTION_BRANCHES too in real data."""
    names = set(branches)
    reco = [*RECO_BRANCHES, *(DIRECTION_BRANCHES if is_real_data(names) else ())]
    return [name for name in reco if name in names]
