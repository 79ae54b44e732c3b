"""Training losses."""
from __future__ import annotations

from lib.losses.reconstruction import AutoChannelWeight, ReconstructionLoss

__all__ = ["AutoChannelWeight", "ReconstructionLoss"]
