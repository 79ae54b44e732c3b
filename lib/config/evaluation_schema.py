"""Config sections of the regressor's final evaluation: the classical baseline, the fiducial volume and how
resolutions are quoted (`baseline`, `evaluation`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lib.config.section import Section


class BaselineConfig(Section):
    """Settings of the classical baseline."""

    enabled: bool = Field(True, description="fit and report the baseline at the end of regressor training")
    fit_events: int = Field(5000, ge=10, description="training events used to calibrate the baseline")
    window: int = Field(5, ge=1, description="odd side of the inner-grid window around the hottest sensor")
    time_sensors: int = Field(100, ge=1, description="brightest valid sensors averaged for the time estimate")
    time_depth_shifts_cm: list[float] = Field(
        [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0],
        min_length=1,
        description="candidate depths of the light centre behind the estimated first interaction; "
        "fit keeps the one with the best training time resolution",
    )

    @field_validator("window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"baseline.window={value}: must be odd so the hottest sensor is the centre")
        return value


ResolutionEstimator = Literal["w68", "gaussian_core", "sigma_eff"]


class FiducialConfig(Section):
    """A box in the inner-face coordinates u, v, w (cm): |u| <= u_max, |v| <= v_max, w_min <= w <= w_max.
    The defaults are MEG II's fiducial volume (xectools kXECFiducialUMax/VMax/WMin/WMax)."""

    u_max: float = Field(23.9, gt=0.0)
    v_max: float = Field(67.9, gt=0.0)
    w_min: float = 0.0
    w_max: float | None = 42.0
    """None: no upper bound in w."""

    @model_validator(mode="after")
    def _ordered_w(self) -> FiducialConfig:
        if self.w_max is not None and not self.w_min < self.w_max:
            raise ValueError(f"need w_min < w_max, got w_min={self.w_min}, w_max={self.w_max}")
        return self


class EvaluationConfig(Section):
    """How the final resolutions are quoted (config section `evaluation`)."""

    fiducial: FiducialConfig = FiducialConfig()
    """Resolutions are quoted for all events and for those whose uvwTruth lies inside this volume."""
    resolution_estimator: ResolutionEstimator = "w68"
    """Width quoted as `<output>_<estimator>` beside w68 and used for the energy-resolution fit: w68 (half the
    central 68.27 % interval), gaussian_core (sigma of a Gaussian fitted to the core) or sigma_eff (half the
    smallest interval holding 68.27 %)."""
    resolution_bins: int = Field(10, ge=4)
    """Equally populated bins of the true energy in which sigma_E / E is measured for the resolution fit."""
    worst_events: int = Field(3, ge=0)
    """Event displays of this many events with the largest residuals per task (plots/worst_events; 0: none)."""
