"""MAE decoders: face token -> per-sensor prediction, gathered into the flat (B, 4760, C) layout.

Rectangular faces use a conv-transpose `FaceDecoder` (token -> small seed grid -> x2
upsamplings, the last one straight to the output channels -> crop to the face grid,
channels_last throughout); top/bottom use a HexNeXt
`GraphFaceDecoder`. Every face predicts at sensor resolution, one cell per sensor; the outer
face as its coarse 24x9 grid and its 6x5 dense patch.

Each sensor gets exactly one prediction. The 12 coarse PMTs inside the dense patch are cells
of both outer grids: they take the dense-patch prediction, which sees them among their true
neighbours at the patch pitch; the coarse decoder's 12 cells there are unused (no loss
reaches them). `sensor_sources` builds that choice once as an index, so assembling the
prediction is one gather.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lib.geometry import GRID_SHAPES, HEX_NEIGHBORS, N_HEX, N_SENSORS, grid_ids, hex_ids
from lib.models.blocks import HexNeXtBlock, LayerNorm2d, init_weights
from lib.config.model_schema import ModelConfig
from lib.models.encoder import HEX_FACES

DENSE_PATCH = "outer_dense"
"""The grid whose prediction wins for sensors shown in two grids."""


def face_sensor_ids(name: str) -> np.ndarray:
    """Sensor ids of a token's prediction cells, in the order its decoder emits them."""
    return hex_ids(name) if name in HEX_FACES else grid_ids(name).ravel()


def sensor_sources(token_names: tuple[str, ...]) -> np.ndarray:
    """(4760,) position of each sensor's prediction among the concatenated cells of all token decoders.

    A sensor shown in several grids takes the cell of the dense patch (DENSE_PATCH); every sensor
    must be covered.
    """
    offsets = np.cumsum([0, *(len(face_sensor_ids(name)) for name in token_names)])
    source = np.full(N_SENSORS, -1, dtype=np.int64)
    ordered = sorted(range(len(token_names)), key=lambda index: token_names[index] == DENSE_PATCH)
    for index in ordered:  # the dense patch last, so it wins
        ids = face_sensor_ids(token_names[index])
        source[ids] = offsets[index] + np.arange(len(ids))
    if (source < 0).any():
        raise ValueError(f"decoder tokens {token_names} leave {int((source < 0).sum())} sensors without a prediction")
    return source


class FaceDecoder(nn.Module):
    """Token (B, D) -> (B, out_channels, H, W) for a rectangular face of shape `out_shape`.

    seed grid (1 / 2**upsample_steps of the face) -> (upsample_steps - 1) x [x2 conv-transpose, LayerNorm,
    GELU] -> a x2 conv-transpose head to the output channels -> crop. Only the head runs at sensor
    resolution, so no norm or activation touches the largest tensors. Activations are held in
    `memory_format` (channels_last; contiguous_format gives the NCHW path).
    """

    memory_format = torch.channels_last

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
            for _ in range(upsample_steps - 1)
        ))
        self.head = nn.ConvTranspose2d(decoder_dim, out_channels, kernel_size=2, stride=2)
        init_weights(self)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        seed = self.seed(token).view(token.shape[0], *self.seed_shape, self.decoder_dim).permute(0, 3, 1, 2)
        x = self.head(self.upsample(seed.contiguous(memory_format=self.memory_format)))
        height, width = self.out_shape
        return x[:, :, :height, :width]


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
        decoders = {}
        for name in token_names:
            if name in HEX_FACES:
                decoders[name] = GraphFaceDecoder(cfg.encoder_dim, cfg.decoder_dim, out_channels, cfg.decoder_hex_depth)
            else:
                decoders[name] = FaceDecoder(cfg.encoder_dim, cfg.decoder_dim, GRID_SHAPES[name], out_channels,
                                             cfg.decoder_upsample_steps)
        self.decoders = nn.ModuleDict(decoders)
        self.register_buffer("sources", torch.from_numpy(sensor_sources(token_names)), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cells = []
        for index, (name, decoder) in enumerate(self.decoders.items()):
            face_pred = decoder(tokens[:, index])
            cells.append(face_pred if name in HEX_FACES else face_pred.permute(0, 2, 3, 1).flatten(1, 2))
        return torch.cat(cells, dim=1).index_select(1, self.sources)
