"""Optimizer (with weight-decay parameter groups) and per-step learning-rate schedulers.

The peak lr (base lr scaled by the effective batch) is `TrainingConfig.effective_lr`."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

NO_DECAY_NAME_PARTS = ("embed", "log_var", "logvar", "token")
"""Parameters whose name contains one of these are never weight-decayed."""

NO_DECAY_MODULES = (
    nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
)


def split_decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay) trainable parameters.

    No decay for: biases and every other parameter with ndim <= 1, parameters of norm and
    embedding modules, and parameters named with "embed", "log_var"/"logvar" or "token".
    """
    no_decay_ids = {
        id(p) for module in model.modules() if isinstance(module, NO_DECAY_MODULES)
        for p in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lowered = name.lower()
        skip = param.ndim <= 1 or id(param) in no_decay_ids or any(part in lowered for part in NO_DECAY_NAME_PARTS)
        (no_decay if skip else decay).append(param)
    return decay, no_decay


FUSED_DEVICE_TYPES = ("cpu", "cuda")
"""Device types with fused AdamW kernels (torch 2.13: every floating dtype on both)."""


def fused_supported(params: list[nn.Parameter]) -> bool:
    """Whether fused AdamW runs on `params`: all floating point, all on one device of FUSED_DEVICE_TYPES."""
    devices = {p.device for p in params}
    return (len(devices) == 1 and next(iter(devices)).type in FUSED_DEVICE_TYPES
            and all(p.is_floating_point() for p in params))


def build_optimizer(model: nn.Module, training: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over all trainable parameters of `model`, weight decay only where it belongs.

    AdamW is fused (one kernel per step) where torch has a fused kernel for the parameters' device,
    else it uses foreach kernels; SGD uses foreach kernels. Build it after moving the model to its device.

    A model with an `lr_scales()` method (parameter name -> multiplier, e.g. layer-wise lr
    decay) gets one parameter group per (decay, multiplier); frozen parameters are left out.
    """
    decay, no_decay = split_decay_groups(model)
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}
    scale_of = {id(p): scales.get(name, 1.0) for name, p in model.named_parameters()}
    groups = []
    for params, weight_decay in ((decay, training.weight_decay), (no_decay, 0.0)):
        for scale in sorted({scale_of[id(p)] for p in params}, reverse=True) or [1.0]:
            members = [p for p in params if scale_of[id(p)] == scale]
            groups.append({"params": members, "weight_decay": weight_decay, "lr": lr * scale})
    if training.optimizer == "adamw":
        fused = fused_supported([p for group in groups for p in group["params"]])
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(training.betas), fused=fused or None,
                                 foreach=None if fused else True)
    if training.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=training.momentum, foreach=True)
    raise ValueError(f"training.optimizer={training.optimizer!r} is not supported; use 'adamw' or 'sgd'")


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier at optimizer `step` (0-based): linear warmup to 1, then cosine down to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, training: Any, steps_per_epoch: int,
                    start_step: int = 0) -> LRScheduler:
    """Per-optimizer-step schedule for `training.scheduler`: cosine (with warmup), onecycle or none, from global
    step `start_step` (where a seeded run's new schedule begins; lib.engine.seed_controls) to the end of training."""
    total_steps = max(1, training.epochs * steps_per_epoch - start_step)
    warmup_steps = min(total_steps, round(training.warmup_epochs * steps_per_epoch))
    peak_lr = max(group["lr"] for group in optimizer.param_groups)
    if training.scheduler == "cosine":
        min_ratio = min(1.0, training.min_lr / peak_lr)
        return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_ratio))
    if training.scheduler == "onecycle":
        div_factor = 25.0
        final_div = (peak_lr / div_factor) / training.min_lr if training.min_lr > 0 else 1e4
        return OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps,
            pct_start=max(warmup_steps, 1) / total_steps, div_factor=div_factor, final_div_factor=final_div,
            cycle_momentum=False,
        )
    if training.scheduler == "none":
        return LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(
        f"training.scheduler={training.scheduler!r} is not supported; use 'cosine', 'onecycle' or 'none'"
    )
