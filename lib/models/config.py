"""Typed config of the encoder / MAE / regressor models (config section `model`).

(Contract stub: the model work extends this with the fields it needs.)
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    """Architecture of XECEncoder and its MAE decoders."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["base", "tiny"] = "base"
    encoder_dim: int = 1024
    decoder_dim: int = 128
    predict_channels: list[Literal["npho", "time"]] = ["npho", "time"]
    drop_path: float = 0.0
