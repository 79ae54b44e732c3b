"""Optimizer parameter groups, lr scaling, schedules, gradient accumulation and EMA."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.engine import Trainer
from lib.engine.distributed import DistInfo
from lib.engine.ema import ModelEMA
from lib.engine.optim import build_optimizer, build_scheduler, fused_supported, split_decay_groups
from lib.engine.rundir import prepare_run_dir
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class NamedParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 5)
        self.norm = nn.LayerNorm(5)
        self.table = nn.Embedding(7, 5)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 5))
        self.log_var = nn.Parameter(torch.zeros(2, 2))
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def test_weight_decay_only_on_matrices_of_ordinary_layers(tmp_path):
    model = NamedParts()
    cfg = toy_config(tmp_path, training={"weight_decay": 0.1})
    optimizer = build_optimizer(model, cfg.training, lr=1e-3)
    decay_group, no_decay_group = optimizer.param_groups
    assert decay_group["weight_decay"] == 0.1 and no_decay_group["weight_decay"] == 0.0
    assert {id(p) for p in decay_group["params"]} == {id(model.proj.weight)}
    expected_no_decay = [model.proj.bias, model.norm.weight, model.norm.bias, model.table.weight,
                         model.pos_embed, model.log_var]
    assert {id(p) for p in no_decay_group["params"]} == {id(p) for p in expected_no_decay}
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.95)
    sgd = build_optimizer(model, toy_config(tmp_path, training={"optimizer": "sgd", "momentum": 0.5}).training, 1e-3)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5


@pytest.mark.parametrize("lr_scaling", [True, False])
def test_trainer_scales_lr_with_effective_batch(tmp_path, lr_scaling):
    cfg = toy_config(tmp_path, data={"batch_size": 4},
                     training={"lr": 2e-3, "lr_scaling": lr_scaling, "grad_accum_steps": 2, "scheduler": "none"})
    x, y = toy_data(16)
    trainer = Trainer(cfg, ToyModel(), ToyTask(), ToyLoader(x, y, 4), None, prepare_run_dir(cfg, CPU, False), CPU)
    expected = 2e-3 * (4 * 1 * 2) / 256 if lr_scaling else 2e-3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def _lrs(cfg, steps_per_epoch: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.training.lr)
    scheduler = build_scheduler(optimizer, cfg.training, steps_per_epoch)
    lrs = []
    for _ in range(cfg.training.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_matches_hand_formula(tmp_path):
    base, min_lr, steps_per_epoch = 0.1, 0.001, 10
    cfg = toy_config(tmp_path, training={"lr": base, "min_lr": min_lr, "epochs": 3, "warmup_epochs": 0.5})
    lrs = _lrs(cfg, steps_per_epoch)
    warmup, total = 5, 30
    for step in [0, 2, 4]:
        assert lrs[step] == pytest.approx(base * (step + 1) / warmup)
    for step in [5, 12, 29]:
        progress = (step - warmup) / (total - warmup)
        assert lrs[step] == pytest.approx(min_lr + (base - min_lr) * (1 + math.cos(math.pi * progress)) / 2)


def test_onecycle_and_constant_schedules_cover_the_run(tmp_path):
    onecycle = _lrs(toy_config(tmp_path, training={"lr": 0.1, "min_lr": 1e-4, "epochs": 2, "scheduler": "onecycle"}), 5)
    assert max(onecycle) == pytest.approx(0.1) and onecycle[0] < 0.1 and onecycle[-1] < onecycle[len(onecycle) // 2]
    assert set(_lrs(toy_config(tmp_path, training={"lr": 0.1, "scheduler": "none"}), 5)) == {0.1}


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    x, y = toy_data(8)
    cfg = toy_config(tmp_path, data={"batch_size": 2},
                     training={"epochs": 1, "optimizer": "sgd", "lr": 0.05, "scheduler": "none", "weight_decay": 0.0,
                               "grad_clip": None, "grad_accum_steps": 4})
    torch.manual_seed(3)
    model = ToyModel()
    reference = ToyModel()
    reference.load_state_dict(model.state_dict())
    Trainer(cfg, model, ToyTask(keep_fraction=None), ToyLoader(x, y, 2, shuffle=False), None,
            prepare_run_dir(cfg, CPU, False), CPU).fit()

    loss = ((reference(x) - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= 0.05 * param.grad
    for (name, trained), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_ema_update_follows_the_formula():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9)
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.5)
    ema.update(model)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ema.module.state_dict()[name], 0.9 * old[name] + 0.1 * param.detach())
    assert not any(p.requires_grad for p in ema.module.parameters())


class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


def test_ema_update_is_bit_identical_to_a_per_parameter_loop():
    torch.manual_seed(0)
    model = WithBuffers()
    ema, reference = ModelEMA(model, decay=0.999), ModelEMA(model, decay=0.999)
    shadow = dict(reference.module.named_parameters())
    shadow_buffers = dict(reference.module.named_buffers())
    for _ in range(3):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model.norm.train()(model.conv(torch.randn(2, 3, 5, 5)))  # moves the BatchNorm running statistics
        ema.update(model)
        with torch.no_grad():  # the per-tensor loop the foreach update replaces
            for name, param in model.named_parameters():
                shadow[name].lerp_(param, 1.0 - 0.999)
            for name, buffer in model.named_buffers():
                shadow_buffers[name].copy_(buffer)
    for name, value in reference.module.state_dict().items():
        assert torch.equal(ema.module.state_dict()[name], value), name
    assert ema.module.norm.num_batches_tracked == 3


def test_adamw_is_fused_on_cpu_and_matches_the_per_parameter_loop(tmp_path):
    torch.manual_seed(0)
    model, reference = NamedParts(), NamedParts()
    reference.load_state_dict(model.state_dict())
    training = toy_config(tmp_path, training={"weight_decay": 0.1}).training
    optimizer = build_optimizer(model, training, lr=1e-2)
    assert optimizer.defaults["fused"] is True and not optimizer.defaults["foreach"]
    loop = torch.optim.AdamW([{"params": group["params"], "weight_decay": group["weight_decay"]}
                              for group in split_groups(reference)], lr=1e-2, betas=(0.9, 0.95), foreach=False)
    for _ in range(5):
        for net, opt in ((model, optimizer), (reference, loop)):
            opt.zero_grad()
            (net.proj(torch.ones(2, 3)).square().sum() + net.norm.weight.sum() + net.pos_embed.sum()
             + net.table.weight.sum() + net.log_var.sum()).backward()
            opt.step()
    for (name, fused), looped in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(fused, looped, rtol=1e-6, atol=1e-7, msg=name)
    sgd = build_optimizer(model, toy_config(tmp_path, training={"optimizer": "sgd"}).training, 1e-3)
    assert sgd.defaults["foreach"] is True


def split_groups(model: nn.Module) -> list[dict]:
    decay, no_decay = split_decay_groups(model)
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]


def test_fused_adamw_needs_floating_parameters_on_one_supported_device():
    assert fused_supported([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))])
    assert not fused_supported([nn.Parameter(torch.zeros(2, device="meta"))])
    assert not fused_supported([])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_run_trains_with_finite_weights(tmp_path, amp):
    cfg = toy_config(tmp_path, training={"epochs": 1, "amp": amp})
    x, y = toy_data(16)
    trainer = Trainer(cfg, ToyModel(), ToyTask(), ToyLoader(x, y, 4), None, prepare_run_dir(cfg, CPU, False), CPU)
    before = [p.detach().clone() for p in trainer.raw_model.parameters()]
    trainer.fit()
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    after = list(trainer.raw_model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
