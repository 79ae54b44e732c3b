"""Inverse-histogram sample weights of a regression target (rare target values weigh more)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class InverseHistogramWeights(nn.Module):
    """Per output, `bins` equal-width bins over the training range; a sample's weight is the product
    over outputs of 1 / (count of its bin), normalised to mean 1 on the training targets."""

    def __init__(self, n_outputs: int, bins: int):
        super().__init__()
        self.register_buffer("edges", torch.zeros(n_outputs, bins + 1, dtype=torch.float64))
        self.register_buffer("table", torch.zeros(n_outputs, bins, dtype=torch.float64))

    @torch.no_grad()
    def fit(self, targets: Tensor) -> None:
        """Fit the histograms on finite training targets (N, n_outputs) in physical units."""
        bins = self.table.shape[1]
        for i in range(self.table.shape[0]):
            self.edges[i] = torch.linspace(float(targets[:, i].min()), float(targets[:, i].max()), bins + 1)
            counts = torch.bincount(self._bin_index(targets, i), minlength=bins)
            self.table[i] = 1.0 / counts.clamp(min=1).double()
        self.table[0] /= self._raw_weights(targets).mean()

    def _bin_index(self, targets: Tensor, output: int) -> Tensor:
        edges = self.edges[output]
        return torch.bucketize(targets[:, output].to(edges.dtype).contiguous(), edges[1:-1].contiguous())

    def _raw_weights(self, targets: Tensor) -> Tensor:
        weights = torch.ones(len(targets), dtype=torch.float64, device=targets.device)
        for i in range(self.table.shape[0]):
            weights = weights * self.table[i][self._bin_index(targets, i)]
        return weights

    def forward(self, targets: Tensor) -> Tensor:
        """(B,) float32 weights of targets (B, n_outputs)."""
        return self._raw_weights(targets).float()
