"""Typed config of the detector geometry (config section `geometry`); the table it names is read and
validated by lib.geometry.sensor_table.sensor_geometry."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class GeometryConfig(BaseModel):
    """Sensor geometry of a run (config section `geometry`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    sensor_table: str | None = None
    """As-built sensor table: a text file of `id x y z [nx ny nz]` lines (cm, MEG frame, normals into the
    xenon) replacing the nominal positions and normals; null keeps the nominal layout."""

    @field_validator("sensor_table")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("geometry.sensor_table is empty; give a file path, or null for the nominal layout")
        return value
