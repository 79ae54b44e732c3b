"""Training-step benchmark: `python -m lib.bench_train --config config/mae/mae_config.yaml --steps 50`.

Runs forward + backward + optimizer steps of the configured model on the current device
with the configured AMP / compile settings and reports events/s, step time (median),
peak memory and the data-wait fraction. Batches come from the configured training data,
or are synthetic (`--synthetic`: random valid events, no I/O) so the model alone is timed.
A benchmark, not a test: record its figures in docs/benchmarks.md with the machine.
"""
from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from typing import Any, Iterator, Sequence

import torch

from lib.config import ROOTS, load_config
from lib.data.build import build_loader
from lib.engine.optim import build_optimizer
from lib.engine.trainer import AMP_DTYPES
from lib.geometry import N_SENSORS

log = logging.getLogger(__name__)



def synthetic_batches(batch_size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless random batches shaped like the loader's (all sensors valid, plausible value ranges)."""
    generator = torch.Generator().manual_seed(0)
    while True:
        x = torch.rand(batch_size, N_SENSORS, 2, generator=generator)
        valid = torch.ones(batch_size, N_SENSORS, dtype=torch.bool)
        truth = {"energyTruth": 0.015 + 0.045 * torch.rand(batch_size, generator=generator),
                 "timeTruth": 1e-9 * torch.rand(batch_size, generator=generator),
                 "uvwTruth": 10 * torch.randn(batch_size, 3, generator=generator),
                 "emiAng": 90 + 10 * torch.randn(batch_size, 2, generator=generator),
                 "emiVec": torch.nn.functional.normalize(torch.randn(batch_size, 3, generator=generator), dim=1)}
        yield {k: v.to(device) for k, v in {"x": x, "npho_valid": valid, "time_valid": valid, **truth}.items()}


def _loader_batches(loader: Any, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        epoch += 1


def _build_model(cfg: Any, kind: str) -> torch.nn.Module:
    if kind == "mae":
        from lib.recipes.pretrain import MAEModel

        return MAEModel(cfg)
    from lib.recipes.finetune import build_regressor

    model = build_regressor(cfg)
    for task in model.tasks.values():  # standardization from the synthetic ranges is good enough to time
        task.fit(torch.randn(64, task.n_outputs, dtype=torch.float64) + 1.0)
    return model


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def run_benchmark(cfg: Any, kind: str, steps: int, warmup: int, synthetic: bool) -> dict[str, float]:
    """Time `steps` optimizer steps after `warmup`; returns the figures."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.training.tf32
    model = _build_model(cfg, kind).to(device)
    optimizer = build_optimizer(model, cfg.training, cfg.training.lr)
    step_model = torch.compile(model) if cfg.training.compile else model
    dtype = AMP_DTYPES.get(cfg.training.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.training.amp == "fp16")
    batches = (synthetic_batches(cfg.data.batch_size, device) if synthetic
               else _loader_batches(build_loader(cfg, "train", 0, 1), device))
    step_times, waits = [], []
    for step in range(warmup + steps):
        wait_start = time.perf_counter()
        batch = next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = step_model(batch)[0]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            step_times.append(time.perf_counter() - start)
            waits.append(start - wait_start)
    median = statistics.median(step_times)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch_size": cfg.data.batch_size, "step_ms_median": 1e3 * median,
        "events_per_s": cfg.data.batch_size / median, "data_wait_fraction": sum(waits) / (sum(waits) + sum(step_times)),
        "peak_memory_gib": _peak_memory_gib(device),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the benchmark; prints one line per figure."""
    parser = argparse.ArgumentParser(description="Benchmark training steps of the configured model.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--kind", choices=sorted(ROOTS), default="mae")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random batches instead of the configured data")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, args.overrides, root=ROOTS[args.kind])
    figures = run_benchmark(cfg, args.kind, args.steps, args.warmup, args.synthetic)
    print(f"config {args.config} ({args.kind}), amp {cfg.training.amp}, compile {cfg.training.compile}, "
          f"torch threads {torch.get_num_threads()}")
    for key, value in figures.items():
        print(f"{key:20s} {value:.4g}" if isinstance(value, float) else f"{key:20s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
