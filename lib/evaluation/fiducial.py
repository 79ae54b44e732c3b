"""The fiducial volume: which events lie inside a box in u, v, w (config evaluation.fiducial)."""
from __future__ import annotations

from typing import Any

from lib.config.evaluation_schema import FiducialConfig
from lib.tasks import valid_rows


def inside_fiducial(uvw: Any, cfg: FiducialConfig) -> Any:
    """(N,) bool of uvw (N, 3) in cm (numpy array or torch tensor): inside the volume `cfg`, with a
    valid value (NaN, inf or fill values are outside)."""
    u, v, w = uvw[:, 0], uvw[:, 1], uvw[:, 2]
    inside = valid_rows(uvw) & (abs(u) <= cfg.u_max) & (abs(v) <= cfg.v_max) & (w >= cfg.w_min)
    return inside & (w <= cfg.w_max) if cfg.w_max is not None else inside
