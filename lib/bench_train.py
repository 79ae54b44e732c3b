"""Training-step benchmark: cost of the configured model and the speed of its steps.

    python -m lib.bench_train --config config/mae/mae_config.yaml [--kind reg] [--steps 20] [--synthetic]
    python -m lib.bench_train --device cuda --suite        (make bench-gpu; see lib.bench_suite)
    python -m lib.bench_train --device cpu --quick --suite (the same on CPU with the tiny preset: CI)

First it prints the parameters and the GFLOP per event of a training step (forward, and
forward + backward), in total and per part (lib.models.flops). Then it runs forward + backward
+ optimizer steps on the device with the configured AMP / compile settings and reports events/s,
step time (median), peak memory and the data-wait fraction. Batches come from the configured
training data through pinned memory, one batch ahead on CUDA, or are synthetic (`--synthetic`:
random valid events, no I/O) so the model alone is timed. A benchmark, not a test: record its
figures in docs/benchmarks.md with the machine.
"""
from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from lib.config import ROOTS, load_config
from lib.data.build import build_loader, run_extras
from lib.data.stream import TIME_WEIGHT
from lib.engine.optim import build_optimizer
from lib.engine.trainer import AMP_DTYPES
from lib.geometry import N_SENSORS
from lib.models.flops import StepFlops, count_step_flops

log = logging.getLogger(__name__)

FLOP_COUNT_EVENTS = 2
"""Events of the batch whose FLOPs are counted (the count is per event and does not depend on it)."""


def synthetic_batches(batch_size: int, device: torch.device,
                      extras: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Endless random batches shaped like the loader's (all sensors valid, plausible value ranges),
    with a time-loss weight when `extras` (the run's `run_extras`) has one."""
    generator = torch.Generator().manual_seed(0)
    while True:
        x = torch.rand(batch_size, N_SENSORS, 2, generator=generator)
        valid = torch.ones(batch_size, N_SENSORS, dtype=torch.bool)
        weight = ({TIME_WEIGHT: 40 * torch.rand(batch_size, N_SENSORS, generator=generator)}
                  if TIME_WEIGHT in extras else {})
        truth = {"energyTruth": 0.015 + 0.045 * torch.rand(batch_size, generator=generator),
                 "timeTruth": 1e-9 * torch.rand(batch_size, generator=generator),
                 "uvwTruth": 10 * torch.randn(batch_size, 3, generator=generator),
                 "emiAng": 90 + 10 * torch.randn(batch_size, 2, generator=generator),
                 "emiVec": torch.nn.functional.normalize(torch.randn(batch_size, 3, generator=generator), dim=1)}
        batch = {"x": x, "npho_valid": valid, "time_valid": valid, **weight, **truth}
        yield {k: v.to(device) for k, v in batch.items()}


def loader_batches(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def prefetch_to_device(batches: Iterable[dict[str, Any]], device: torch.device) -> Iterator[dict[str, Any]]:
    """Batches on `device`; on CUDA each is pinned and copied asynchronously one batch ahead."""
    if device.type != "cuda":
        for batch in batches:
            yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return
    ahead = None
    for batch in batches:
        moved = {k: v.pin_memory().to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                 for k, v in batch.items()}
        if ahead is not None:
            yield ahead
        ahead = moved


def build_model(cfg: Any, kind: str) -> nn.Module:
    """The run's model (MAE model + loss, or regressor with standardization fitted to synthetic targets)."""
    if kind == "mae":
        from lib.recipes.pretrain import MAEModel

        return MAEModel(cfg)
    from lib.recipes.finetune import build_regressor

    model = build_regressor(cfg)
    for task in model.tasks.values():  # standardization from the synthetic ranges is good enough to time
        task.fit(torch.randn(64, task.n_outputs, dtype=torch.float64) + 1.0)
    return model


def model_parts(model: nn.Module, kind: str) -> dict[str, list[nn.Module]]:
    """Part name -> modules: face backbones, hex backbones, fusion, then decoders (MAE) or heads."""
    encoder = model.mae.encoder if kind == "mae" else model.encoder
    parts = {"face backbones": list(encoder.grid_backbones.values()),
             "hex backbones": list(encoder.hex_backbones.values()), "fusion": [encoder.fusion]}
    if kind == "mae":
        parts["decoders"] = [model.mae.decoder]
    else:
        parts["heads"] = list(model.heads.values())
    return parts


def count_flops(cfg: Any, model: nn.Module, kind: str, device: torch.device) -> StepFlops:
    """FLOPs per event of one training step of the run's `model` (on `device`, fp32, synthetic events)."""
    batch = next(synthetic_batches(FLOP_COUNT_EVENTS, device, run_extras(cfg)))
    flops = count_step_flops(lambda: model(batch)[0], model_parts(model, kind), FLOP_COUNT_EVENTS)
    model.zero_grad(set_to_none=True)
    return flops


def format_flops(model: nn.Module, flops: StepFlops) -> str:
    """Parameters and the GFLOP-per-event table, as printed."""
    lines = [f"parameters           {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
             f"{'GFLOP per event':20s} {'forward':>8s} {'fwd+bwd':>8s}",
             f"{'total':20s} {flops.forward / 1e9:8.3f} {flops.forward_backward / 1e9:8.3f}"]
    lines += [f"  {name:18s} {forward / 1e9:8.3f} {both / 1e9:8.3f}" for name, (forward, both) in flops.parts.items()]
    return "\n".join(lines)


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak RSS (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(cfg: Any, model: nn.Module, batches: Iterator[dict[str, Any]], steps: int, warmup: int,
               device: torch.device) -> tuple[list[float], list[float]]:
    """(step seconds, data-wait seconds) of `steps` optimizer steps after `warmup` untimed ones."""
    optimizer = build_optimizer(model, cfg.training, cfg.training.lr)
    step_model = torch.compile(model) if cfg.training.compile else model
    dtype = AMP_DTYPES.get(cfg.training.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.training.amp == "fp16")
    step_times, waits = [], []
    for step in range(warmup + steps):
        wait_start = time.perf_counter()
        batch = next(batches)
        _synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = step_model(batch)[0]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        if step >= warmup:
            step_times.append(time.perf_counter() - start)
            waits.append(start - wait_start)
    return step_times, waits


def training_batches(cfg: Any, synthetic: bool, device: torch.device) -> Iterator[dict[str, Any]]:
    """Endless batches on `device`: synthetic, or the configured training data (pinned prefetch on CUDA)."""
    if synthetic:
        return synthetic_batches(cfg.data.batch_size, device, run_extras(cfg))
    return prefetch_to_device(loader_batches(build_loader(cfg, "train", 0, 1)), device)


def run_benchmark(cfg: Any, model: nn.Module, batches: Iterator[dict[str, Any]], steps: int, warmup: int,
                  device: torch.device) -> dict[str, Any]:
    """Time `steps` optimizer steps of `model` (on `device`) after `warmup`; returns the figures."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.training.tf32
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, waits = time_steps(cfg, model, batches, steps, warmup, device)
    median = statistics.median(step_times)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch_size": cfg.data.batch_size, "step_ms_median": 1e3 * median,
        "events_per_s": cfg.data.batch_size / median, "data_wait_fraction": sum(waits) / (sum(waits) + sum(step_times)),
        "peak_memory_gib": peak_memory_gib(device),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line of the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Benchmark training steps of the configured model.")
    parser.add_argument("--config", help="run config (required without --suite)")
    parser.add_argument("--kind", choices=sorted(ROOTS), default="mae")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (0: only count parameters and FLOPs)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random batches instead of the configured data")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--suite", action="store_true", help="the full-size MAE and regressor suite (lib.bench_suite)")
    parser.add_argument("--quick", action="store_true", help="suite with the tiny preset and a few steps (CI)")
    parser.add_argument("--data", help="suite: training data (default: artifacts/demo_data/train)")
    parser.add_argument("--record", help="suite: benchmark file to append the rows to (default: docs/benchmarks.md, "
                                         "none with --quick)")
    parser.add_argument("--peak-tflops", type=float, help="suite: the device's peak bf16 TFLOP/s, if not in the table")
    args = parser.parse_args(argv)
    if not args.suite and args.config is None:
        parser.error("--config is required (or run --suite)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints parameters, the FLOP table and one line per figure."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.suite:
        from lib.bench_suite import run_suite

        return run_suite(args, device)
    cfg = load_config(args.config, args.overrides, root=ROOTS[args.kind])
    print(f"config {args.config} ({args.kind}), amp {cfg.training.amp}, compile {cfg.training.compile}, "
          f"torch threads {torch.get_num_threads()}")
    model = build_model(cfg, args.kind).to(device)
    print(format_flops(model, count_flops(cfg, model, args.kind, device)))
    if args.steps > 0:
        batches = training_batches(cfg, args.synthetic, device)
        figures = run_benchmark(cfg, model, batches, args.steps, args.warmup, device)
        for key, value in figures.items():
            print(f"{key:20s} {value:.4g}" if isinstance(value, float) else f"{key:20s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
