"""XECMAE: invalid-aware random masking -> XECEncoder -> per-face decoders."""
from __future__ import annotations

import torch
from torch import nn

from lib.config.model_schema import ModelConfig
from lib.models.decoders import MAEDecoder
from lib.models.encoder import XECEncoder
from lib.models.masking import random_mask
from lib.normalization import NormalizationConfig


class XECMAE(nn.Module):
    """Masked autoencoder over the 4760 sensors.

    Masked sensors get the normalization sentinels (so they look like invalid
    sensors) and the encoder also receives the mask (sparse-conv semantics).
    `predict_channels` orders the channels of `pred`.
    """

    def __init__(self, cfg: ModelConfig, norm: NormalizationConfig):
        super().__init__()
        self.predict_channels: list[str] = list(cfg.predict_channels)
        self.encoder = XECEncoder(cfg)
        self.decoder = MAEDecoder(self.encoder.token_names, cfg, len(self.predict_channels))
        sentinels = torch.tensor([norm.npho_sentinel, norm.time_sentinel])
        self.register_buffer("sentinels", sentinels, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        npho_valid: torch.Tensor,
        time_valid: torch.Tensor,
        mask_ratio: float,
        time_mask_ratio_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """x (B, 4760, 2) normalized -> {"pred": (B, 4760, C), "mask": (B, 4760) bool, True = masked}."""
        mask = random_mask(npho_valid, time_valid, mask_ratio, time_mask_ratio_scale, generator)
        masked_input = torch.where(mask.unsqueeze(-1), self.sentinels.to(x.dtype), x)
        tokens = self.encoder(masked_input, mask)
        return {"pred": self.decoder(tokens), "mask": mask}
