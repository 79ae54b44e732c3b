"""XECEncoder: per-face backbones -> one token per face -> transformer fusion.

Every sensor's input is its 2 normalized data channels (npho, time) plus, with
`coord_channels`, its standardized cylindrical (z, phi, rho) (CoordConv), so that the
features know where the light is. Rectangular faces go through ConvNeXt V2 stages at sensor
resolution, one cell per sensor: inner, US, DS, and the outer face as two grids, the coarse
24x9 PMT grid and the 6x5 dense patch (lib.geometry GRID_SHAPES "outer_coarse" /
"outer_dense"). The 12 coarse PMTs that lie inside the dense patch are cells of both grids
and show the same input and mask in each. Each grid runs: a stem conv of kernel = stride =
`stem_stride` (1: full sensor resolution), then per stage a strided downsampling
(stride 2 on each axis longer than 1, so no axis drops below 1 cell). The hexagonal
top/bottom faces go through HexNeXt stages on the hex graph. Each backbone ends in a
masked global mean over its visible positions; a `LightPool` over the face's input
sensors adds light-weighted centroids and log light sums, which a mean of normalized
features cannot express (position needs where the light is, energy a linear sum).
Both are projected to `encoder_dim`; the face tokens plus learned face embeddings are
fused by a pre-norm transformer. Masking semantics are described in lib.models.blocks;
masked sensors get no light-pool weight. Grid activations are channels_last, so the
channel LayerNorms and the channels-last MLPs of the blocks need no permute copies.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lib.geometry import (
    GRID_SHAPES,
    HEX_NEIGHBORS,
    N_SENSORS,
    POSITIONS,
    flat_to_grid,
    flat_to_hex,
    mask_to_grid,
    mask_to_hex,
)
from lib.models.blocks import (
    ConvNeXtV2Block,
    GridDownsample,
    HexNeXtBlock,
    GridStem,
    NodeProjection,
    Stage,
    drop_path_rates,
    init_weights,
)
from lib.config.model_schema import ModelConfig

INPUT_CHANNELS = 2  # normalized npho, normalized time
NPHO_CHANNEL = 0
COORD_CHANNELS = 3  # see sensor_coordinates
HEX_FACES = ("top", "bottom")
GRID_FACES = ("inner", "outer_coarse", "outer_dense", "us", "ds")
"""lib.geometry grid names of the rectangular-face tokens, in token order."""


def backbone_input_channels(cfg: ModelConfig) -> int:
    """Channels a face backbone sees per position: the data channels, plus coordinates if enabled."""
    return INPUT_CHANNELS + (COORD_CHANNELS if cfg.coord_channels else 0)


def sensor_coordinates() -> np.ndarray:
    """(4760, 3) float32 cylindrical (z, phi, rho) of every sensor (lib.geometry.POSITIONS), each
    standardized over all sensors; phi in [0, 2 pi), continuous over the detector (it sits around 180 deg)."""
    x, y, z = POSITIONS.T
    coords = np.stack([z, np.mod(np.arctan2(y, x), 2 * np.pi), np.hypot(x, y)], axis=1)
    return ((coords - coords.mean(0)) / coords.std(0)).astype(np.float32)


class LightPool(nn.Module):
    """Softmax pooling of a face's input channels (B, P, C_in) by `heads` scores linear in those inputs.

    Per head: the softmax-weighted mean of every input channel (with the coordinate channels, a light-
    weighted centroid) and the log-mean-exp of the scores (with a score a * npho_normalized, a log light
    sum for log-like npho normalizations). Masked positions get no weight. The npho weights start
    log-spaced (2, 4, 8, ...), so the heads begin as centroids of increasing sharpness.
    """

    def __init__(self, in_channels: int, heads: int):
        super().__init__()
        self.score = nn.Linear(in_channels, heads)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        with torch.no_grad():
            self.score.weight[:, NPHO_CHANNEL] = 2.0 ** torch.arange(1, heads + 1)
        self.out_dim = heads * (in_channels + 1)

    def forward(self, inputs: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(inputs)  # (B, P, heads)
        if visible is None:
            n_visible = torch.full_like(scores[:, :1], inputs.shape[1])
        else:  # masked positions get exp(-inf) = 0; a face without visible inputs pools to zeros
            scores = scores.masked_fill(visible == 0, float("-inf"))
            n_visible = visible.sum(dim=1, keepdim=True).clamp_min(1.0)
        peak = scores.detach().amax(dim=1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        exp_scores = torch.exp(scores - peak)
        total = exp_scores.sum(dim=1, keepdim=True).clamp_min(1e-30)
        pooled = torch.bmm(exp_scores.transpose(1, 2), inputs) / total.transpose(1, 2)  # divide the small result
        log_mean_exp = torch.log(total) + peak - torch.log(n_visible)
        return torch.cat([pooled.flatten(1), log_mean_exp.flatten(1)], dim=1)


class TokenHead(nn.Module):
    """Masked mean over positions (B, P, C) -> LayerNorm, concatenated with the face's light-pool
    summary (kept unnormalized, so magnitudes survive) -> Linear to the token width."""

    def __init__(self, in_dim: int, summary_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim + summary_dim, out_dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None, summary: torch.Tensor) -> torch.Tensor:
        if visible is None:
            pooled = x.mean(dim=1)
        else:
            pooled = (x * visible).sum(dim=1) / visible.sum(dim=1).clamp_min(1.0)
        return self.proj(torch.cat([self.norm(pooled), summary], dim=1))


class Backbone(nn.Module):
    """Light pool of the inputs; stem -> mask-aware stages -> TokenHead; subclasses define the stem
    and the position layout."""

    stem: nn.Module
    stages: nn.ModuleList
    head: TokenHead

    def _build_pool_and_head(self, in_channels: int, cfg: ModelConfig) -> None:
        self.light_pool = LightPool(in_channels, cfg.light_pool_heads) if cfg.light_pool_heads else None
        summary_dim = self.light_pool.out_dim if self.light_pool is not None else 0
        self.head = TokenHead(cfg.face_widths[-1], summary_dim, cfg.encoder_dim)
        init_weights(self.head)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        if self.light_pool is None:
            summary = x.new_zeros(x.shape[0], 0)
        else:
            summary = self.light_pool(*self.as_positions(x, visible))
        x, visible = self.stem(x, visible)
        for stage in self.stages:
            x, visible = stage(x, visible)
        return self.head(*self.as_positions(x, visible), summary)

    def as_positions(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, visible) as (B, P, C), (B, P, 1)."""
        return x, visible


class GridBackbone(Backbone):
    """ConvNeXt V2 backbone of one rectangular face: (B, 2, H, W), visible (B, 1, H, W) -> (B, encoder_dim).

    Activations are held in `memory_format` (channels_last; contiguous_format gives the NCHW path).
    """

    memory_format = torch.channels_last

    def __init__(self, grid_shape: tuple[int, int], cfg: ModelConfig):
        super().__init__()
        widths = cfg.face_widths
        in_channels = backbone_input_channels(cfg)
        stride = tuple(cfg.stem_stride if extent > 1 else 1 for extent in grid_shape)
        self.stem = GridStem(in_channels, widths[0], stride)
        stages, size = [], tuple(math.ceil(extent / step) for extent, step in zip(grid_shape, stride))
        for index, rates in enumerate(drop_path_rates(cfg.face_depths, cfg.drop_path)):
            downsample = None
            if index > 0:
                stride = tuple(2 if extent > 1 else 1 for extent in size)
                size = tuple(math.ceil(extent / step) for extent, step in zip(size, stride))
                downsample = GridDownsample(widths[index - 1], widths[index], stride)
            stages.append(Stage(downsample, [ConvNeXtV2Block(widths[index], rate) for rate in rates]))
        self.stages = nn.ModuleList(stages)
        init_weights(self)
        self._build_pool_and_head(in_channels, cfg)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=self.memory_format), visible)

    def as_positions(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        flat = x.flatten(2).transpose(1, 2)
        return flat, None if visible is None else visible.flatten(2).transpose(1, 2)


class HexBackbone(Backbone):
    """HexNeXt backbone of a hexagonal face: (B, 73, 2), visible (B, 73, 1) -> (B, encoder_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = cfg.face_widths
        in_channels = backbone_input_channels(cfg)
        self.stem = NodeProjection(in_channels, widths[0], norm_first=False)
        stages = []
        for index, rates in enumerate(drop_path_rates(cfg.hex_depths, cfg.drop_path)):
            projection = NodeProjection(widths[index - 1], widths[index]) if index > 0 else None
            stages.append(Stage(projection, [HexNeXtBlock(widths[index], HEX_NEIGHBORS, rate) for rate in rates]))
        self.stages = nn.ModuleList(stages)
        init_weights(self)
        self._build_pool_and_head(in_channels, cfg)


class XECEncoder(nn.Module):
    """Whole-detector encoder: forward(x (B, 4760, 2), mask (B, 4760) bool or None) -> (B, n_tokens, encoder_dim).

    `mask` marks sensors hidden by the MAE; their input values are ignored.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token_names: tuple[str, ...] = (*GRID_FACES, *HEX_FACES)
        self.grid_backbones = nn.ModuleDict({name: GridBackbone(GRID_SHAPES[name], cfg) for name in GRID_FACES})
        self.hex_backbones = nn.ModuleDict({face: HexBackbone(cfg) for face in HEX_FACES})
        self.face_embedding = nn.Embedding(self.n_tokens, cfg.encoder_dim)
        nn.init.trunc_normal_(self.face_embedding.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.encoder_dim,
            cfg.fusion_heads,
            dim_feedforward=4 * cfg.encoder_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = nn.TransformerEncoder(layer, cfg.fusion_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.encoder_dim)
        coords = torch.from_numpy(sensor_coordinates()) if cfg.coord_channels else torch.zeros(N_SENSORS, 0)
        self.register_buffer("coords", coords, persistent=False)

    @property
    def n_tokens(self) -> int:
        return len(self.token_names)

    @staticmethod
    def _grid_input(name: str, x: torch.Tensor, visible: torch.Tensor | None):
        grid_visible = None if visible is None else mask_to_grid(visible, name).unsqueeze(1).to(x.dtype)
        return flat_to_grid(x, name), grid_visible

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1:] != (N_SENSORS, INPUT_CHANNELS):
            raise ValueError(f"XECEncoder input must be (B, {N_SENSORS}, {INPUT_CHANNELS}), got {tuple(x.shape)}")
        if mask is not None and (mask.shape != x.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        visible = None if mask is None else ~mask
        x = torch.cat([x, self.coords.to(x.dtype).expand(x.shape[0], -1, -1)], dim=2)
        tokens = [backbone(*self._grid_input(name, x, visible)) for name, backbone in self.grid_backbones.items()]
        for face, backbone in self.hex_backbones.items():
            hex_visible = None if visible is None else mask_to_hex(visible, face).unsqueeze(-1).to(x.dtype)
            tokens.append(backbone(flat_to_hex(x, face), hex_visible))
        tokens = torch.stack(tokens, dim=1) + self.face_embedding.weight
        return self.norm(self.fusion(tokens))

    def stage_groups(self) -> list[nn.Module]:
        """Parameter groups from input to output: stems and light pools, each backbone stage, token heads +
        face embeddings, each fusion layer (the last one together with the final norm). Covers every parameter."""
        backbones = [*self.grid_backbones.values(), *self.hex_backbones.values()]
        input_modules = [module for backbone in backbones for module in (backbone.stem, backbone.light_pool)
                         if module is not None]
        groups: list[nn.Module] = [nn.ModuleList(input_modules)]
        n_stages = len(self.cfg.face_widths)
        groups += [nn.ModuleList([backbone.stages[i] for backbone in backbones]) for i in range(n_stages)]
        groups.append(nn.ModuleList([*(backbone.head for backbone in backbones), self.face_embedding]))
        *first_layers, last_layer = self.fusion.layers
        groups += first_layers
        groups.append(nn.ModuleList([last_layer, self.norm]))
        return groups
