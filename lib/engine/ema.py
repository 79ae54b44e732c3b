"""Exponential moving average of model weights."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Shadow copy of a model whose floating-point parameters follow ema = decay * ema + (1 - decay) * param.

    Buffers (e.g. norm statistics) are copied as they are. `module` is an ordinary eval-mode
    nn.Module usable for validation and export.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"training.ema.decay={decay} must be in [0, 1)")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights one step towards `model` (the unwrapped training model).

        One foreach lerp over the floating-point parameters and one foreach copy over the rest and
        the buffers (same values as a per-tensor lerp_ / copy_ loop).
        """
        ema_params = dict(self.module.named_parameters())
        pairs = [(ema_params[name], param) for name, param in model.named_parameters()]
        floating = [pair for pair in pairs if pair[0].is_floating_point()]
        ema_buffers = dict(self.module.named_buffers())
        copied = [pair for pair in pairs if not pair[0].is_floating_point()]
        copied += [(ema_buffers[name], buffer) for name, buffer in model.named_buffers()]
        if floating:
            shadows, params = zip(*floating)
            torch._foreach_lerp_(list(shadows), list(params), 1.0 - self.decay)
        if copied:
            targets, sources = zip(*copied)
            torch._foreach_copy_(list(targets), list(sources))

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights and decay."""
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the shadow weights (the decay stays the configured one)."""
        self.module.load_state_dict(state["module"])
