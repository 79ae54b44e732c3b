"""Building blocks: ConvNeXt V2 blocks for rectangular faces, HexNeXt blocks for hex faces.

Masking (FCMAE-style sparse convolution, emulated densely): `visible` is a float
{0, 1} tensor broadcastable to the activations. Masked positions are zeroed right
after every spatial mixing (depthwise conv, graph conv), before GRN takes its
global statistics and at the block output, so a masked position neither feeds
anything to its neighbours nor carries anything itself. Stage transitions follow
the same rule (see `GridStem`, `GridDownsample`, `NodeProjection`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MLP_RATIO = 4
_INIT_STD = 0.02


def init_weights(module: nn.Module) -> None:
    """Truncated-normal weights (std 0.02) and zero biases for every conv / linear layer below `module`."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.trunc_normal_(layer.weight, std=_INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def drop_path_rates(depths: list[int], max_rate: float) -> list[list[float]]:
    """Per-stage lists of stochastic-depth rates rising linearly from 0 to `max_rate` over all blocks."""
    rates = np.linspace(0.0, max_rate, sum(depths)).tolist()
    starts = np.cumsum([0, *depths])
    return [rates[start:start + depth] for start, depth in zip(starts, depths)]


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability `rate` (training only)."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor.

    The output keeps the input's memory format. For channels_last input the (B, H, W, C) view is
    contiguous, so nothing is copied; NCHW input costs a copy on the way in and one on the way out.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if x.is_contiguous(memory_format=torch.channels_last):
            return y
        return y.contiguous()


class GRN(nn.Module):
    """Global response normalization (ConvNeXt V2) over the positions of channels-last (B, ..., C) input."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = tuple(range(1, x.ndim - 1))
        global_norm = torch.linalg.vector_norm(x, dim=positions, keepdim=True)
        relative = global_norm / (global_norm.mean(dim=-1, keepdim=True) + 1e-6)
        return torch.addcmul(self.beta, x, self.gamma * relative + 1.0)  # gamma * (x * rel) + beta + x, one pass


class InvertedBottleneck(nn.Module):
    """Channels-last LayerNorm -> Linear (x4) -> GELU -> GRN -> Linear -> drop path."""

    def __init__(self, dim: int, drop_path: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, MLP_RATIO * dim)
        self.act = nn.GELU()
        self.grn = GRN(MLP_RATIO * dim)
        self.project = nn.Linear(MLP_RATIO * dim, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        x = self.act(self.expand(self.norm(x)))
        if visible is not None:
            x = x * visible
        x = self.project(self.grn(x))
        if visible is not None:
            x = x * visible
        return self.drop_path(x)


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7x7 conv + inverted bottleneck with GRN, residual; x (B, C, H, W), visible (B, 1, H, W)."""

    def __init__(self, dim: int, drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.mlp = InvertedBottleneck(dim, drop_path)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dwconv(x)
        visible_last = None
        if visible is not None:
            y = y * visible
            visible_last = visible.permute(0, 2, 3, 1)
        return x + self.mlp(y.permute(0, 2, 3, 1), visible_last).permute(0, 3, 1, 2)


class HexDepthwiseConv(nn.Module):
    """Graph depthwise conv: out[n] = sum over self + neighbour slots s of w[s] * x[neighbour_s(n)] + b.

    `neighbors` is (N, S) local indices with -1 for a missing neighbour, which
    contributes zero. Slots must mean the same direction for every node (as
    lib.geometry.HEX_NEIGHBORS does), so that a slot weight acts like a kernel tap.
    """

    def __init__(self, dim: int, neighbors: np.ndarray):
        super().__init__()
        n_nodes, n_slots = neighbors.shape
        taps = np.concatenate([np.arange(n_nodes)[:, None], neighbors], axis=1)
        taps = np.where(taps < 0, n_nodes, taps)  # index n_nodes = an appended zero row
        self.register_buffer("taps", torch.as_tensor(taps, dtype=torch.long), persistent=False)
        bound = 1.0 / math.sqrt(n_slots + 1)
        self.weight = nn.Parameter(torch.empty(n_slots + 1, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, 0, 0, 1))
        taps = padded.index_select(1, self.taps.flatten()).view(x.shape[0], *self.taps.shape, x.shape[2])
        return (taps * self.weight).sum(dim=2) + self.bias  # index_select's backward is a fast index_add


class HexNeXtBlock(nn.Module):
    """Graph depthwise conv + inverted bottleneck with GRN, residual; x (B, N, C), visible (B, N, 1)."""

    def __init__(self, dim: int, neighbors: np.ndarray, drop_path: float = 0.0):
        super().__init__()
        self.graph_conv = HexDepthwiseConv(dim, neighbors)
        self.mlp = InvertedBottleneck(dim, drop_path)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        y = self.graph_conv(x)
        if visible is not None:
            y = y * visible
        return x + self.mlp(y, visible)


class GridDownsample(nn.Module):
    """LayerNorm + non-overlapping strided conv (kernel = stride, per axis); pads to a multiple of the stride.

    Mask after downsampling: a coarse cell is visible if ANY of its children is
    visible (max-pool of `visible`); masked children enter the conv as zeros, and
    cells with no visible child are zeroed. (Max-pooling the *mask* instead would
    hide almost every coarse cell at MAE mask ratios of ~0.6 with per-sensor masks.)
    """

    def __init__(self, in_dim: int, out_dim: int, stride: tuple[int, int]):
        super().__init__()
        self.stride = stride
        self.norm = LayerNorm2d(in_dim)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.norm(x)
        pad = (0, -x.shape[3] % self.stride[1], 0, -x.shape[2] % self.stride[0])
        if visible is not None:
            x = x * visible
            visible = F.max_pool2d(F.pad(visible, pad), self.stride)
        x = self.conv(F.pad(x, pad))
        return (x, None) if visible is None else (x * visible, visible)


class GridStem(nn.Module):
    """Stem of a rectangular face: non-overlapping conv (kernel = stride, per axis; 1x1 keeps the sensor
    resolution) + LayerNorm; pads to a multiple of the stride. Masked inputs enter the conv as zeros and
    a cell is visible if any of its sensors is (as in `GridDownsample`)."""

    def __init__(self, in_dim: int, out_dim: int, stride: tuple[int, int]):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=stride, stride=stride)
        self.norm = LayerNorm2d(out_dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        pad = (0, -x.shape[3] % self.stride[1], 0, -x.shape[2] % self.stride[0])
        if visible is not None:
            x = x * visible
            visible = F.max_pool2d(F.pad(visible, pad), self.stride)
        x = self.norm(self.conv(F.pad(x, pad)))
        return (x, None) if visible is None else (x * visible, visible)


class NodeProjection(nn.Module):
    """Linear width change with a LayerNorm before (between hex stages) or after it (hex stem); nodes
    stay, so the mask stays."""

    def __init__(self, in_dim: int, out_dim: int, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.LayerNorm(in_dim if norm_first else out_dim)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.linear(self.norm(x)) if self.norm_first else self.norm(self.linear(x))
        return (x, None) if visible is None else (x * visible, visible)


class Stage(nn.Module):
    """Optional transition (downsample / projection) followed by blocks, all mask-aware."""

    def __init__(self, transition: nn.Module | None, blocks: list[nn.Module]):
        super().__init__()
        self.transition = transition
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.transition is not None:
            x, visible = self.transition(x, visible)
        for block in self.blocks:
            x = block(x, visible)
        return x, visible
