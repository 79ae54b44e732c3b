"""Target standardization z = (y - mean) / scale of a regression target, per output."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Standardizer(nn.Module):
    """Mean and scale per output (float64 buffers, so they travel with every checkpoint).

    Configured values (`mean`, `scale`) are used as they are; otherwise `fit` computes them once
    from the training targets. Standardizing before either happened is an error.
    """

    def __init__(self, name: str, n_outputs: int, mean: list[float] | None, scale: list[float] | None):
        super().__init__()
        self.name = name
        self.configured = mean is not None
        self.register_buffer("mean", torch.tensor(mean or [0.0] * n_outputs, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(scale or [1.0] * n_outputs, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(self.configured))
        self._checked = False

    @torch.no_grad()
    def fit(self, targets: Tensor) -> None:
        """Mean and standard deviation of finite training targets (N, n_outputs), unless configured."""
        if not self.configured:
            scale = targets.std(0)
            if not bool((scale > 0).all()):
                raise ValueError(
                    f"task '{self.name}': training targets are constant (std {scale.tolist()}); "
                    f"set tasks.{self.name}.target_mean/target_scale explicitly"
                )
            self.mean.copy_(targets.mean(0))
            self.scale.copy_(scale)
        self.fitted.fill_(True)

    def require_fitted(self) -> None:
        """Raise unless fitted or configured (checked once, then cached)."""
        if self._checked:
            return
        if not bool(self.fitted):
            raise RuntimeError(
                f"task '{self.name}': not fitted; call fit(training targets) first (needed unless "
                f"tasks.{self.name}.target_mean/target_scale are set and reweight_bins is not)"
            )
        self._checked = True

    def standardize(self, targets: Tensor) -> Tensor:
        """Physical units -> standardized float32."""
        self.require_fitted()
        return ((targets.double() - self.mean) / self.scale).float()

    def destandardize(self, values: Tensor) -> Tensor:
        """Standardized -> physical units (float64 keeps small scales such as seconds exact)."""
        self.require_fitted()
        return values.double() * self.scale + self.mean
