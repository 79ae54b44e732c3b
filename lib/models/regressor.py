"""Regressor: the XEC encoder plus one MLP head per selected task, with encoder freezing rules."""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lib.config import ConfigError, RegressorModelConfig
from lib.models.encoder import XECEncoder

log = logging.getLogger(__name__)


def mlp_head(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """LayerNorm -> (Linear -> GELU) x (layers - 1) -> Linear."""
    modules: list[nn.Module] = [nn.LayerNorm(in_dim)]
    width = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class Regressor(nn.Module):
    """Encoder tokens (flattened, one per face) -> per-task heads; tasks and loss balancing live inside.

    Only the heads of selected tasks exist, so DDP never sees unused parameters. The tasks
    hold their target standardization as buffers, so it travels with every checkpoint.
    """

    def __init__(self, model: RegressorModelConfig, tasks: Mapping[str, nn.Module], balancer: nn.Module) -> None:
        """`model`: the run's model section; `tasks`: the regression targets by name (lib.tasks, each with
        head_dim, cfg.head_hidden / head_layers, valid() and loss()); `balancer`: combines their losses."""
        super().__init__()
        self.encoder = XECEncoder(model)
        self.tasks = nn.ModuleDict(tasks)
        features = self.encoder.n_tokens * model.encoder_dim
        self.heads = nn.ModuleDict({
            name: mlp_head(features, task.cfg.head_hidden, task.cfg.head_layers, task.head_dim)
            for name, task in self.tasks.items()
        })
        self.balancer = balancer
        self.layer_decay = model.layer_decay
        apply_freezing(self.encoder, model.freeze_encoder, model.trainable_layers)

    def head_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """Raw head outputs (standardized units) per task for normalized inputs x (B, 4760, 2)."""
        features = self.encoder(x, None).flatten(1)
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(total loss, metrics, head outputs); events with invalid truth (NaN, inf, fill values) are
        skipped per task and counted (`skipped_fraction_<task>`); a task without a valid event in the
        batch contributes no loss."""
        outputs = self.head_outputs(batch["x"])
        losses, present, metrics = {}, {}, {}
        all_valid = torch.ones(batch["x"].shape[0], dtype=torch.bool, device=batch["x"].device)
        for name, task in self.tasks.items():
            valid = task.valid(batch)
            all_valid &= valid
            per_sample = task.loss(outputs[name], batch)
            losses[name], present[name] = per_sample.sum() / valid.sum().clamp_min(1), valid.any()
            metrics[f"loss_{name}"] = losses[name].detach()
            metrics[f"skipped_fraction_{name}"] = (~valid).float().mean()
        total, balance_metrics = self.balancer(losses, present)
        metrics.update({k.replace("/", "_"): v for k, v in balance_metrics.items() if k.startswith("log_var")})
        metrics["total_loss"] = total.detach()
        metrics["skipped_fraction"] = (~all_valid).float().mean()
        return total, metrics, outputs

    def lr_scales(self) -> dict[str, float]:
        """Layer-wise lr decay: parameter name -> lr multiplier (encoder group k from the top: decay**k)."""
        if self.layer_decay == 1.0:
            return {}
        groups = self.encoder.stage_groups()
        ids = {id(p): len(groups) - index for index, g in enumerate(groups) for p in g.parameters()}
        return {f"encoder.{name}": self.layer_decay ** ids[id(p)] for name, p in self.encoder.named_parameters()}


def apply_freezing(encoder: XECEncoder, freeze_encoder: bool, trainable_layers: int | None) -> None:
    """Freeze the whole encoder, or all but its last `trainable_layers` stage groups."""
    groups = encoder.stage_groups()
    if trainable_layers is not None and trainable_layers > len(groups):
        raise ConfigError(f"model.trainable_layers={trainable_layers} but the encoder has only {len(groups)} "
                         f"stage groups; use a value from 0 to {len(groups)}")
    n_frozen = len(groups) if freeze_encoder else len(groups) - (trainable_layers if trainable_layers is not None
                                                                 else len(groups))
    for group in groups[:n_frozen]:
        for param in group.parameters():
            param.requires_grad_(False)
    if n_frozen:
        log.info("encoder: %d of %d stage groups frozen", n_frozen, len(groups))
