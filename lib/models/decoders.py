"""MAE decoders: face token -> per-sensor prediction, scattered back to the flat (B, 4760, C) layout.

Rectangular faces use a conv-transpose `FaceDecoder` (token -> small seed grid ->
x2 upsamplings -> bilinear resize to the face grid); top/bottom use a HexNeXt
`GraphFaceDecoder`. With outer_mode "fine" the outer decoder predicts the full
72x45 fine grid (also when the encoder pools it) and each outer sensor gets the
mean over the fine cells it covers (lib.geometry.outer_fine_to_flat, both channels
intensive). With outer_mode "split" the coarse and dense grids are predicted
directly; the 12 coarse sensors inside the dense patch appear in both grids and
take the dense-patch prediction (it is written last).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lib.geometry import GRID_SHAPES, HEX_NEIGHBORS, N_HEX, N_SENSORS, grid_to_flat, hex_to_flat, outer_fine_to_flat
from lib.models.blocks import HexNeXtBlock, LayerNorm2d, init_weights
from lib.config.model_schema import ModelConfig
from lib.models.encoder import HEX_FACES


class FaceDecoder(nn.Module):
    """Token (B, D) -> (B, out_channels, H, W) for a rectangular face of shape `out_shape`."""

    def __init__(self, encoder_dim: int, decoder_dim: int, out_shape: tuple[int, int], out_channels: int,
                 upsample_steps: int):
        super().__init__()
        factor = 2**upsample_steps
        self.out_shape = tuple(out_shape)
        self.seed_shape = tuple(math.ceil(extent / factor) for extent in out_shape)
        self.decoder_dim = decoder_dim
        self.seed = nn.Linear(encoder_dim, decoder_dim * math.prod(self.seed_shape))
        self.upsample = nn.Sequential(*(
            nn.Sequential(
                nn.ConvTranspose2d(decoder_dim, decoder_dim, kernel_size=2, stride=2),
                LayerNorm2d(decoder_dim),
                nn.GELU(),
            )
            for _ in range(upsample_steps)
        ))
        self.head = nn.Conv2d(decoder_dim, out_channels, kernel_size=3, padding=1)
        init_weights(self)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        x = self.seed(token).view(token.shape[0], self.decoder_dim, *self.seed_shape)
        x = self.head(self.upsample(x))
        if tuple(x.shape[-2:]) != self.out_shape:
            x = F.interpolate(x, size=self.out_shape, mode="bilinear", align_corners=False)
        return x


class GraphFaceDecoder(nn.Module):
    """Token (B, D) -> (B, 73, out_channels) for a hex face: token + learned node embeddings -> HexNeXt blocks."""

    def __init__(self, encoder_dim: int, decoder_dim: int, out_channels: int, depth: int):
        super().__init__()
        self.seed = nn.Linear(encoder_dim, decoder_dim)
        self.node_embedding = nn.Parameter(torch.zeros(N_HEX, decoder_dim))
        self.blocks = nn.ModuleList(HexNeXtBlock(decoder_dim, HEX_NEIGHBORS) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(decoder_dim), nn.Linear(decoder_dim, out_channels))
        init_weights(self)
        nn.init.trunc_normal_(self.node_embedding, std=0.02)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        x = self.seed(token).unsqueeze(1) + self.node_embedding
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class MAEDecoder(nn.Module):
    """One decoder per encoder token; forward(tokens (B, T, D)) -> pred (B, 4760, out_channels)."""

    def __init__(self, token_names: tuple[str, ...], cfg: ModelConfig, out_channels: int):
        super().__init__()
        self.token_names = token_names
        self.out_channels = out_channels
        decoders = {}
        for name in token_names:
            if name in HEX_FACES:
                decoders[name] = GraphFaceDecoder(cfg.encoder_dim, cfg.decoder_dim, out_channels, cfg.decoder_hex_depth)
            else:
                decoders[name] = FaceDecoder(cfg.encoder_dim, cfg.decoder_dim, GRID_SHAPES[name], out_channels,
                                             cfg.decoder_upsample_steps)
        self.decoders = nn.ModuleDict(decoders)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pred = tokens.new_zeros(tokens.shape[0], N_SENSORS, self.out_channels)
        for index, (name, decoder) in enumerate(self.decoders.items()):
            face_pred = decoder(tokens[:, index])
            if name in HEX_FACES:
                hex_to_flat(face_pred, name, pred)
            elif name == "outer_fine":
                outer_fine_to_flat(face_pred, pred, extensive_channels=())
            else:
                grid_to_flat(face_pred, name, pred)
        return pred
