"""FLOP counts of a training step, in total and per model part, with torch's FlopCounterMode.

Counted are the matrix products, convolutions and attention (2 FLOP per multiply-add), as
FlopCounterMode does; norms, activations and element-wise ops are not (nor the hex graph conv's
7-tap weighted sum, written element-wise: under 1 % of a HexNeXt block). Two corrections to torch
2.13's formulas: it counts the weight gradient of a grouped convolution as if the convolution
were dense, so `conv_backward_flops` divides that term by the group count (a depthwise conv's
backward is overcounted by its channel count otherwise); and it has no formula for the CPU
flash-attention kernels, which get the other attention kernels' formulas here.

Per-part counts replay each part on the inputs it received in one real forward pass (inputs
that required a gradient there require one here), forward and then backward, so a part's
backward is counted exactly as in the whole step (FlopCounterMode's own module attribution is
unreliable in backward). Whatever the parts do not cover (losses, glue) is the remainder
`other` = total - sum(parts).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """FLOPs of aten.convolution_backward: torch's formula with the weight-gradient term divided by `groups`."""

    def swap_batch_and_channels(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0]), not transposed)
    if output_mask[1]:
        first, second = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        dense = conv_flop_count(swap_batch_and_channels(first), swap_batch_and_channels(second),
                                swap_batch_and_channels(list(out_shape[1])), transposed=False)
        flops += dense // groups
    return flops


def cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of aten._scaled_dot_product_flash_attention_for_cpu (the formula of the GPU kernels)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                 **kwargs) -> int:
    """FLOPs of aten._scaled_dot_product_flash_attention_for_cpu_backward."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode with the grouped-convolution backward corrected and CPU attention counted."""
    return FlopCounterMode(display=False, custom_mapping={
        aten.convolution_backward: conv_backward_flops,
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward_flops,
    })


@dataclass
class StepFlops:
    """FLOPs per event of one training step: forward and forward+backward, total and per part."""

    forward: float
    forward_backward: float
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)
    """part -> (forward, forward+backward) per event; includes the remainder "other"."""


def _replayable(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(value.requires_grad)
    return value.detach() if isinstance(value, torch.Tensor) else value


def _capture_calls(parts: Mapping[str, Sequence[nn.Module]], run_forward: Callable[[], object]) -> dict[str, list]:
    """Part -> (module, args, kwargs) of every call of its modules during one run of `run_forward`."""
    calls: dict[str, list] = {name: [] for name in parts}
    hooks = [module.register_forward_pre_hook(
        lambda module, args, kwargs, name=name: calls[name].append((module, args, kwargs)), with_kwargs=True)
        for name, modules in parts.items() for module in modules]
    try:
        run_forward()
    finally:
        for hook in hooks:
            hook.remove()
    return {name: [(module, tree_map(_replayable, args), tree_map(_replayable, kwargs))
                   for module, args, kwargs in part_calls] for name, part_calls in calls.items()}


def _replay(calls: list[tuple]) -> tuple[int, int]:
    """FLOPs of the captured calls: (forward, forward+backward)."""
    with flop_counter() as forward_counter:
        outputs = [module(*args, **kwargs) for module, args, kwargs in calls]
    leaves = [leaf for leaf in tree_flatten(outputs)[0] if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
    with flop_counter() as backward_counter:
        if leaves:
            torch.autograd.backward(leaves, [torch.ones_like(leaf) for leaf in leaves])
    forward = forward_counter.get_total_flops()
    return forward, forward + backward_counter.get_total_flops()


def count_step_flops(loss_fn: Callable[[], torch.Tensor], parts: Mapping[str, Sequence[nn.Module]],
                     n_events: int) -> StepFlops:
    """FLOPs per event of `loss_fn()` (forward) and its backward, in total and per part.

    `loss_fn` runs the model on a batch of `n_events` and returns the scalar loss; `parts` maps a
    name to the modules it is made of (each called during that forward).
    """
    with flop_counter() as forward_counter:
        loss = loss_fn()
    with flop_counter() as backward_counter:
        loss.backward()
    forward = forward_counter.get_total_flops()
    total = (forward, forward + backward_counter.get_total_flops())
    per_part = {name: _replay(calls) for name, calls in _capture_calls(parts, loss_fn).items()}
    per_part["other"] = tuple(t - sum(p[i] for p in per_part.values()) for i, t in enumerate(total))
    return StepFlops(total[0] / n_events, total[1] / n_events,
                     {name: (f / n_events, fb / n_events) for name, (f, fb) in per_part.items()})
