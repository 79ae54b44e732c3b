"""channels_last activations: LayerNorm2d without copies, and the same numbers as the NCHW path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib.config.model_schema import ModelConfig
from lib.models.blocks import LayerNorm2d
from lib.models.decoders import FaceDecoder
from lib.models.encoder import GridBackbone

RTOL, ATOL = 1e-5, 1e-6


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to RTOL of the tensor's largest magnitude: float32 sums in another order differ by about 1e-6."""
    return bool((a - b).abs().max() <= RTOL * b.abs().max())


def test_layer_norm_2d_normalizes_channels_and_keeps_the_memory_format():
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    weight, bias = torch.randn(6), torch.randn(6)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    x = torch.randn(2, 6, 5, 7)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), weight, bias).permute(0, 3, 1, 2)
    last = norm(x.contiguous(memory_format=torch.channels_last))
    first = norm(x)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert first.is_contiguous()
    assert torch.allclose(last, expected, rtol=RTOL, atol=ATOL) and torch.allclose(first, expected, rtol=RTOL, atol=ATOL)


def _outputs_and_grads(module: torch.nn.Module, memory_format: torch.memory_format, *inputs):
    module.memory_format = memory_format
    module.zero_grad(set_to_none=True)
    out = module(*inputs)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in module.named_parameters()}


def _assert_same_path(module: torch.nn.Module, *inputs) -> None:
    out_last, grads_last = _outputs_and_grads(module, torch.channels_last, *inputs)
    out_nchw, grads_nchw = _outputs_and_grads(module, torch.contiguous_format, *inputs)
    assert _close(out_last, out_nchw)
    for name, grad in grads_last.items():
        assert _close(grad, grads_nchw[name]), name


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_grid_backbone_channels_last_matches_the_nchw_path(stem_stride):
    torch.manual_seed(0)
    cfg = ModelConfig(preset="tiny", stem_stride=stem_stride)
    backbone = GridBackbone((24, 9), cfg)
    x = torch.randn(3, 5, 24, 9)
    visible = (torch.rand(3, 1, 24, 9) > 0.5).float()
    _assert_same_path(backbone, x, visible)


def test_face_decoder_channels_last_matches_the_nchw_path():
    torch.manual_seed(0)
    decoder = FaceDecoder(encoder_dim=32, decoder_dim=16, out_shape=(93, 44), out_channels=2, upsample_steps=3)
    _assert_same_path(decoder, torch.randn(3, 32))
    decoder.memory_format = torch.channels_last
    hidden = []
    decoder.upsample.register_forward_hook(lambda module, args, out: hidden.append((args[0], out)))
    decoder(torch.randn(3, 32))
    assert all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in hidden[0])
