"""Typed config of the encoder / MAE models (config section `model`).

The field defaults are the "base" architecture: 3.7 GFLOP per event for a forward + backward
MAE step, chosen by the equal-compute study in docs/benchmarks.md. `preset: large` is the
earlier default (about 4x the cost), `preset: tiny` a small model for CPU demos and tests: every
field not given explicitly takes its value from the preset.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lib.config.presets import apply_preset

log = logging.getLogger(__name__)

ENCODER_DIM_MULTIPLE = 32
REMOVED_KEYS = ("outer_mode", "outer_fine_pool")
"""Keys of earlier versions that are dropped with a deprecation warning: the outer face is always
encoded at sensor resolution, as the coarse 24x9 grid plus the 6x5 dense patch."""
PREDICT_CHANNEL_CHOICES = (["npho", "time"], ["npho"])

# Named parameter sets; "base" is the class defaults, so it overrides nothing.
PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    "large": {
        "encoder_dim": 1024,
        "face_widths": [64, 128, 256, 512],
        "face_depths": [2, 2, 4, 2],
        "hex_depths": [1, 1, 1, 1],
        "fusion_depth": 2,
        "fusion_heads": 16,
        "decoder_dim": 128,
        "decoder_upsample_steps": 3,
        "decoder_hex_depth": 1,
        "stem_stride": 1,
    },
    "tiny": {
        "encoder_dim": 64,
        "face_widths": [8, 16],
        "face_depths": [1, 1],
        "hex_depths": [1, 1],
        "fusion_depth": 1,
        "fusion_heads": 2,
        "decoder_dim": 16,
        "decoder_upsample_steps": 2,
        "decoder_hex_depth": 1,
        "stem_stride": 2,
    },
}


def drop_removed_keys(data: Any) -> Any:
    """A copy of a raw `model` section without REMOVED_KEYS, warning once per key found."""
    if not isinstance(data, dict) or not any(key in data for key in REMOVED_KEYS):
        return data
    for key in REMOVED_KEYS:
        if key in data:
            message = (f"model.{key} = {data[key]!r} is deprecated and ignored: the outer face is always encoded "
                       "at sensor resolution (coarse 24x9 grid + 6x5 dense patch); remove the key")
            log.warning(message)
            warnings.warn(message, DeprecationWarning, stacklevel=2)
    return {key: value for key, value in data.items() if key not in REMOVED_KEYS}


class ModelConfig(BaseModel):
    """Architecture of XECEncoder and its MAE decoders."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    preset: Literal["base", "large", "tiny"] = "base"
    """Named size; fields given explicitly win over the preset's values."""
    encoder_dim: int = Field(512, gt=0)
    """Width of the face tokens and the fusion transformer (multiple of 32)."""
    face_widths: list[int] = [48, 96, 192, 384]
    """Channels of each ConvNeXt V2 / HexNeXt stage; stage 1 runs at the stem's resolution (see stem_stride)."""
    face_depths: list[int] = [2, 2, 4, 2]
    """Blocks per stage of the rectangular faces (one entry per stage)."""
    hex_depths: list[int] = [1, 1, 1, 1]
    """HexNeXt blocks per stage of the top/bottom faces (one entry per stage)."""
    fusion_depth: int = Field(2, ge=1)
    """Transformer layers fusing the face tokens."""
    fusion_heads: int = Field(8, ge=1)
    """Attention heads of the fusion transformer (must divide encoder_dim)."""
    decoder_dim: int = Field(64, gt=0)
    """Channels of the MAE face decoders."""
    decoder_upsample_steps: int = Field(3, ge=1)
    """x2 conv-transpose upsamplings of a rectangular face decoder (the last one is its output head)."""
    decoder_hex_depth: int = Field(1, ge=1)
    """HexNeXt blocks of the top/bottom decoders."""
    predict_channels: list[Literal["npho", "time"]] = ["npho", "time"]
    """Channels the MAE reconstructs: ["npho", "time"] or ["npho"]."""
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    """Maximum stochastic-depth rate (linearly increasing over the blocks of a backbone)."""
    stem_stride: int = Field(2, ge=1)
    """Stride (= kernel) of the rectangular faces' stem conv on each axis longer than 1; 1 keeps
    stage 1 at full sensor resolution, 2 makes it ~4x cheaper."""
    coord_channels: bool = True
    """Append each sensor's standardized cylindrical (z, phi, rho) to its input channels (CoordConv)."""
    light_pool_heads: int = Field(4, ge=0)
    """Softmax-pooling heads over each face's input sensors (scores linear in the inputs): each adds the
    pooled input channels and the log-mean-exp of its scores to the face token (0: off)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return apply_preset(drop_removed_keys(data), PRESETS, "model")

    @field_validator("encoder_dim")
    @classmethod
    def _encoder_dim_multiple(cls, value: int) -> int:
        if value % ENCODER_DIM_MULTIPLE:
            raise ValueError(
                f"model.encoder_dim = {value} must be a multiple of {ENCODER_DIM_MULTIPLE} "
                f"(e.g. {max(ENCODER_DIM_MULTIPLE, round(value / ENCODER_DIM_MULTIPLE) * ENCODER_DIM_MULTIPLE)})"
            )
        return value

    @field_validator("face_widths", "face_depths", "hex_depths")
    @classmethod
    def _positive_list(cls, value: list[int], info) -> list[int]:
        if not value or any(v <= 0 for v in value):
            raise ValueError(f"model.{info.field_name} = {value} must be a non-empty list of positive integers")
        return value

    @field_validator("predict_channels")
    @classmethod
    def _known_channel_set(cls, value: list[str]) -> list[str]:
        if value not in PREDICT_CHANNEL_CHOICES:
            raise ValueError(f"model.predict_channels = {value} must be one of {list(PREDICT_CHANNEL_CHOICES)}")
        return value

    @model_validator(mode="after")
    def _consistent_shapes(self) -> ModelConfig:
        n_stages = len(self.face_widths)
        for name in ("face_depths", "hex_depths"):
            if len(getattr(self, name)) != n_stages:
                raise ValueError(
                    f"model.{name} has {len(getattr(self, name))} entries but face_widths has {n_stages}; "
                    "give one entry per stage"
                )
        if self.encoder_dim % self.fusion_heads:
            raise ValueError(
                f"model.fusion_heads = {self.fusion_heads} must divide model.encoder_dim = {self.encoder_dim}"
            )
        return self


class PretrainedEncoderConfig(ModelConfig):
    """Encoder architecture plus how a model built on the encoder (regressor, inpainter) starts from a
    pretrained MAE encoder."""

    pretrained_encoder: str | None = None
    """MAE export (encoder_best.pt) or full MAE checkpoint to initialise the encoder from."""
    allow_normalization_mismatch: bool = False
    """Load a pretrained encoder even when its normalization differs from this run's."""
    freeze_encoder: bool = False
    """Keep every encoder parameter fixed (only the heads train)."""


class RegressorModelConfig(PretrainedEncoderConfig):
    """The regressor's encoder, where it starts, and which of its layers train at which rate."""

    trainable_layers: int | None = Field(None, ge=0)
    """Keep only the last N encoder stage groups trainable (None: all)."""
    layer_decay: float = Field(1.0, gt=0.0, le=1.0)
    """Layer-wise lr decay: stage group k from the top gets lr * layer_decay**k (1.0: off)."""


class InpainterModelConfig(PretrainedEncoderConfig):
    """The inpainter: the encoder (where it starts, frozen or not) and its per-face heads."""

    predict_channels: list[Literal["npho", "time"]] = ["npho"]
    """Channels the inpainter predicts at masked sensors: ["npho"] or ["npho", "time"]."""
    head_hidden: int = Field(64, gt=0)
    """Width of the per-face heads, which read the face's tokens and each masked sensor's neighbourhood."""
