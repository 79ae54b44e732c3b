"""Multi-task loss balancing: fixed manual weights or learned log-variances (Kendall et al. 2018)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

BalanceMode = Literal["manual", "learned"]


class TaskBalancer(nn.Module):
    """Combine per-task scalar losses into one total.

    manual:  total = sum_i w_i * L_i
    learned: total = sum_i w_i * (exp(-s_i) * L_i + s_i), s_i = log sigma_i^2 a learned parameter
    Register it inside the model so the optimizer (and DDP) covers the log-variances.
    """

    def __init__(self, names: Sequence[str], mode: BalanceMode, weights: Mapping[str, float] | None = None):
        super().__init__()
        if mode not in ("manual", "learned"):
            raise ValueError(f"task balancing mode {mode!r}: choose 'manual' or 'learned'")
        if not names:
            raise ValueError("TaskBalancer needs at least one task name")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"task balancing weights for {unknown}, which are not selected tasks {list(names)}")
        self.names = tuple(names)
        self.mode = mode
        self.register_buffer("weights", torch.tensor([float(weights.get(name, 1.0)) for name in self.names]))
        self.log_vars = nn.Parameter(torch.zeros(len(self.names))) if mode == "learned" else None

    def forward(self, losses: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """losses: task name -> scalar loss (every selected task); present: task name -> scalar bool,
        False for a task without a valid event in the batch, whose term (its learned log-variance too)
        is then 0, so that it contributes no loss and no gradient (None: every task present).

        Returns the total loss and detached scalar metrics `loss/<task>` (weighted term) and,
        in learned mode, `log_var/<task>`.
        """
        if set(losses) != set(self.names):
            raise ValueError(f"TaskBalancer got losses for {sorted(losses)}, expected exactly {sorted(self.names)}")
        metrics: dict[str, Tensor] = {}
        terms = []
        for i, name in enumerate(self.names):
            loss = losses[name]
            if loss.ndim != 0:
                raise ValueError(
                    f"TaskBalancer: loss of task '{name}' has shape {tuple(loss.shape)}; reduce it to a scalar"
                )
            if self.log_vars is None:
                term = self.weights[i] * loss
            else:
                term = self.weights[i] * (torch.exp(-self.log_vars[i]) * loss + self.log_vars[i])
                metrics[f"log_var/{name}"] = self.log_vars[i].detach()
            if present is not None:
                term = torch.where(present[name], term, torch.zeros_like(term))
            metrics[f"loss/{name}"] = term.detach()
            terms.append(term)
        return torch.stack(terms).sum(), metrics
