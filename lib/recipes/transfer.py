"""Encoder weight transfer from MAE pretraining to the regressor.

The MAE exports `encoder_best.pt` / `encoder_last.pt`: the encoder weights (EMA when
enabled) plus the model and normalization config they were trained with. The regressor
loads such an export, or the encoder part of a full xecmae checkpoint (detected by the
file's content, not its name), and refuses an encoder of another architecture or a
normalization that differs from its own.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.config.schema import SCHEMA_VERSION
from lib.engine.checkpoint import CHECKPOINT_KIND, CheckpointError, evaluation_state, read_torch_file
from lib.io.atomic import atomic_write
from lib.config import ModelConfig, NormalizationConfig
from lib.normalization import check_compatible

log = logging.getLogger(__name__)

ENCODER_KIND = "xecmae-encoder"
ENCODER_FIELDS = (
    "encoder_dim", "face_widths", "face_depths", "hex_depths", "fusion_depth", "fusion_heads", "stem_stride",
    "coord_channels", "light_pool_heads",
)
"""ModelConfig fields that fix the encoder's architecture (decoder and regularisation fields do not)."""
ENCODER_PREFIXES = ("mae.encoder.", "encoder.")
"""Where the encoder sits in the state dict of an MAE model and of a regressor."""


class TransferError(CheckpointError):
    """A pretrained encoder cannot be loaded as asked."""


def encoder_architecture(model_cfg: ModelConfig | dict[str, Any]) -> dict[str, Any]:
    """The architecture-defining fields of a model config, as plain JSON values."""
    data = model_cfg.model_dump(mode="json") if isinstance(model_cfg, ModelConfig) else dict(model_cfg)
    return {name: data.get(name) for name in ENCODER_FIELDS}


def save_encoder(encoder: nn.Module, model_cfg: ModelConfig, norm: NormalizationConfig, path: Path,
                 source: dict[str, Any]) -> None:
    """Write an encoder export atomically: weights + model and normalization config + provenance."""
    path = Path(path)
    state = {
        "kind": ENCODER_KIND, "schema_version": SCHEMA_VERSION,
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "model": model_cfg.model_dump(mode="json"), "normalization": norm.model_dump(mode="json"),
        "source": source,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _encoder_from_checkpoint(checkpoint: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    weights = evaluation_state(checkpoint)
    for prefix in ENCODER_PREFIXES:
        encoder = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if encoder:
            return encoder
    raise TransferError(f"{path} is an xecmae checkpoint without encoder weights (no keys under {ENCODER_PREFIXES})")


def read_encoder_source(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], str]:
    """(encoder weights, model config, normalization config, what the file is) of an export or checkpoint."""
    path = Path(path)
    try:
        content = read_torch_file(path, f"model.pretrained_encoder={path}", "give the path of an MAE "
                                  "encoder_best.pt / encoder_last.pt or of an xecmae checkpoint")
    except CheckpointError as exc:
        raise TransferError(str(exc)) from exc
    kind = content.get("kind") if isinstance(content, dict) else None
    if kind == ENCODER_KIND:
        return content["encoder"], content["model"], content["normalization"], "MAE encoder export"
    if kind == CHECKPOINT_KIND:
        config = content["config"]
        weights = _encoder_from_checkpoint(content, path)
        return weights, config["model"], config["normalization"], f"{config.get('kind', 'xecmae')} checkpoint"
    raise TransferError(f"model.pretrained_encoder={path} is neither an MAE encoder export nor an xecmae "
                        "checkpoint; give encoder_best.pt from an MAE run directory")


def load_pretrained_encoder(encoder: nn.Module, path: str | Path, model_cfg: ModelConfig,
                            norm: NormalizationConfig, allow_normalization_mismatch: bool) -> dict[str, Any]:
    """Load the encoder weights of `path` into `encoder` after checking architecture and normalization.

    Returns a report {path, source, missing_keys, unexpected_keys, normalization_differs}.
    """
    weights, saved_model, saved_norm, source = read_encoder_source(path)
    saved_arch, wanted_arch = encoder_architecture(saved_model), encoder_architecture(model_cfg)
    differing = [k for k in ENCODER_FIELDS if saved_arch[k] != wanted_arch[k]]
    if differing:
        details = "; ".join(f"model.{k}: pretrained={saved_arch[k]!r}, this run={wanted_arch[k]!r}"
                            for k in differing)
        raise TransferError(f"the encoder in {path} ({source}) has another architecture: {details}. "
                            "Use the pretraining run's model settings for the regressor")
    norm_diff = check_compatible(NormalizationConfig(**saved_norm), norm)
    if norm_diff:
        details = "; ".join(f"normalization.{k}: pretrained={saved_norm.get(k)!r}, this run={getattr(norm, k)!r}"
                            for k in norm_diff)
        if not allow_normalization_mismatch:
            raise TransferError(f"the encoder in {path} was trained with another normalization: {details}. "
                                "Use the pretraining normalization, or pass --allow_normalization_mismatch")
        log.warning("loading %s despite a normalization mismatch (%s)", path, details)
    expected = set(encoder.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise TransferError(f"the encoder weights in {path} ({source}) do not fit this encoder: {len(missing)} missing "
                            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); it was "
                            "written by another version of the encoder (e.g. before the outer face was encoded at "
                            "sensor resolution): pretrain again with this version")
    encoder.load_state_dict(weights)
    report = {"path": str(path), "source": source, "missing_keys": missing, "unexpected_keys": unexpected,
              "normalization_differs": norm_diff}
    log.info("loaded pretrained encoder from %s (%s): %d tensors", path, source, len(weights))
    return report
