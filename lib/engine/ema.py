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
        """Move the shadow weights one step towards `model` (the unwrapped training model)."""
        ema_params = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            shadow = ema_params[name]
            if shadow.dtype.is_floating_point:
                shadow.lerp_(param.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(param.detach())
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights and decay."""
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the shadow weights (the decay stays the configured one)."""
        self.module.load_state_dict(state["module"])
