"""FLOP counting: the corrected grouped-conv backward and CPU attention against hand counts, parts that add up."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.config.model_schema import ModelConfig
from lib.models.flops import count_step_flops, flop_counter
from lib.models.mae import XECMAE
from lib.normalization import NormalizationConfig

B, C, H, W, K = 2, 16, 10, 12, 7


def _conv_step_flops(conv: nn.Module, counter: FlopCounterMode, channels: int = C) -> tuple[int, int]:
    x = torch.randn(B, channels, H, W, requires_grad=True)
    with counter:
        out = conv(x)
    forward = counter.get_total_flops()
    with counter:  # entering the counter again starts from zero
        out.sum().backward()
    return forward, counter.get_total_flops()


@pytest.mark.parametrize("groups", [C, 4, 1])
def test_conv_backward_is_counted_as_two_forwards_for_any_group_count(groups):
    conv = nn.Conv2d(C, C, K, padding=K // 2, groups=groups)
    # by hand: every output value is a sum over K*K taps of C / groups input channels
    hand_forward = 2 * B * H * W * C * (C // groups) * K * K
    forward, backward = _conv_step_flops(conv, flop_counter())
    assert forward == hand_forward
    assert backward == 2 * hand_forward  # input gradient + weight gradient, each as costly as the forward


def test_torch_alone_overcounts_the_depthwise_weight_gradient_by_the_channel_count():
    conv = nn.Conv2d(C, C, K, padding=K // 2, groups=C)
    forward, backward = _conv_step_flops(conv, FlopCounterMode(display=False))
    assert backward == forward + C * forward


def test_grouped_transposed_conv_backward_is_corrected_too():
    conv = nn.ConvTranspose2d(C, C, 2, stride=2, groups=C)
    forward, backward = _conv_step_flops(conv, flop_counter())
    assert forward == 2 * B * H * W * C * 2 * 2
    assert backward == 2 * forward


def test_cpu_attention_is_counted():
    tokens, dim, batch = 7, 64, 3
    layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=4 * dim, dropout=0.0, batch_first=True, norm_first=True)
    with flop_counter() as counter:
        layer(torch.randn(batch, tokens, dim))
    projections = 2 * tokens * dim * 3 * dim + 2 * tokens * dim * dim + 2 * 2 * tokens * dim * 4 * dim
    attention = 2 * 2 * tokens * tokens * dim  # q k^T and the weighted sum of v
    assert counter.get_total_flops() == batch * (projections + attention)


def test_parts_add_up_to_the_whole_step_and_each_part_backward_costs_about_two_forwards():
    torch.manual_seed(0)
    model = XECMAE(ModelConfig(preset="tiny"), NormalizationConfig())
    x = torch.randn(2, 4760, 2)
    valid = torch.ones(2, 4760, dtype=torch.bool)

    def loss():
        return model(x, valid, valid, mask_ratio=0.5)["pred"].square().mean()

    parts = {"backbones": [*model.encoder.grid_backbones.values(), *model.encoder.hex_backbones.values()],
             "fusion": [model.encoder.fusion], "decoders": [model.decoder]}
    flops = count_step_flops(loss, parts, n_events=2)
    assert flops.parts["other"] == (0.0, 0.0)  # the loss and the gathers do no matrix products
    assert sum(forward for forward, _ in flops.parts.values()) == pytest.approx(flops.forward)
    assert sum(both for _, both in flops.parts.values()) == pytest.approx(flops.forward_backward)
    forward, both = flops.parts["decoders"]  # inputs need gradients here, so backward = 2 x forward exactly
    assert both == 3 * forward
    forward, both = flops.parts["fusion"]  # attention's backward is 2.5 x its forward
    assert both == pytest.approx(3 * forward, rel=0.01) and both > 3 * forward
    forward, both = flops.parts["backbones"]
    assert 2.5 * forward < both < 3 * forward  # the stems' inputs (the data) need no gradient
