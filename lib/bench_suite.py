"""GPU benchmark suite: `make bench-gpu`, or `python -m lib.bench_train --device cuda --suite`.

For the full-size MAE (config/mae/mae_config.yaml) and regressor (config/reg/train_config.yaml),
in bf16, eager and with torch.compile: the largest batch that fits (powers of two, found with
synthetic batches on the eager model, at most the events in the data), then timed steps with the
real loader and pinned-memory prefetch. Each row reports events/s, achieved TFLOP/s (events/s x
the counted forward+backward FLOPs per event), MFU against the device's peak dense bf16 FLOP/s
(PEAK_BF16_TFLOPS, or --peak-tflops), the data-wait fraction and the peak GPU memory, and is
appended with the date to the suite table of docs/benchmarks.md (--record).

`--device cpu --quick` runs the same code on CPU with the tiny preset, batch 8 and two timed
steps, without the compiled rows and without recording unless --record is given: what CI runs.
On CPU the steps run in fp32 (CPUs without bf16 units emulate it about 10x slower), there is
no batch search (batch 8), and the MFU is left out unless --peak-tflops is given.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib.bench_train import build_model, count_flops, run_benchmark, synthetic_batches, training_batches
from lib.config import ROOTS, load_config
from lib.data.build import build_loader, run_extras
from lib.engine.optim import build_optimizer
from lib.engine.trainer import AMP_DTYPES
from lib.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

SUITE_CONFIGS = {"mae": "config/mae/mae_config.yaml", "reg": "config/reg/train_config.yaml"}
DEFAULT_DATA = "artifacts/demo_data/train"
DEFAULT_RECORD = "docs/benchmarks.md"
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("A10", 125.0))
"""Dense bf16 tensor-core peak by device-name fragment (first match wins; NVIDIA data sheets)."""
STEPS, WARMUP, QUICK_STEPS, QUICK_WARMUP, CPU_BATCH, FIRST_BATCH = 20, 5, 2, 1, 8, 64
MEMORY_HEADROOM = 0.9
"""A probed batch fits if its step peaks below this fraction of the GPU's memory."""
SECTION = "## Training step on GPU (lib.bench_train --suite)"
TABLE_HEADER = ("| date | device | torch | model | compile | batch | events/s | TFLOP/s | MFU | data wait | peak mem |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


@dataclass
class SuiteRow:
    """One measured configuration of the suite."""

    kind: str
    compile: bool
    batch: int
    events_per_s: float
    tflops: float
    mfu: float | None
    data_wait: float
    peak_memory_gib: float

    def markdown(self, device: str, preset: str) -> str:
        """The row of the benchmark table, dated today."""
        mfu = "n/a" if self.mfu is None else f"{100 * self.mfu:.1f} %"
        return (f"| {dt.date.today()} | {device} | {torch.__version__} | {self.kind} ({preset}) | "
                f"{'yes' if self.compile else 'no'} | {self.batch} | {self.events_per_s:.4g} | {self.tflops:.3g} | "
                f"{mfu} | {100 * self.data_wait:.1f} % | {self.peak_memory_gib:.3g} GiB |")


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a device by its name, or None when it is not in PEAK_BF16_TFLOPS."""
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in device_name), None)


def largest_batch(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """Largest batch start * 2**k <= limit (or start / 2**k) for which `fits` holds; doubles, or halves."""
    batch = min(start, limit)
    while not fits(batch):
        if batch == 1:
            raise RuntimeError("not even a batch of 1 fits on the device")
        batch //= 2
    while batch * 2 <= limit and fits(batch * 2):
        batch *= 2
    return batch


def cuda_step_fits(cfg: Any, kind: str, device: torch.device) -> Callable[[int], bool]:
    """A probe for largest_batch: one eager bf16 training step of a batch without OOM, below the headroom."""
    model = build_model(cfg, kind).to(device)
    optimizer = build_optimizer(model, cfg.training, cfg.training.lr)
    total = torch.cuda.get_device_properties(device).total_memory

    def fits(batch_size: int) -> bool:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            batch = next(synthetic_batches(batch_size, device, run_extras(cfg)))
            with torch.autocast("cuda", dtype=AMP_DTYPES["bf16"]):
                loss = model(batch)[0]
            loss.backward()
            optimizer.step()
            ok = torch.cuda.max_memory_allocated(device) < MEMORY_HEADROOM * total
        except torch.OutOfMemoryError:
            ok = False
        optimizer.zero_grad(set_to_none=True)
        batch = loss = None
        gc.collect()
        torch.cuda.empty_cache()
        log.info("batch %d %s", batch_size, "fits" if ok else "does not fit")
        return ok

    return fits


def _config(kind: str, args: argparse.Namespace, data: str, device: torch.device, *extra: str) -> Any:
    amp = "bf16" if device.type == "cuda" else "none"  # CPUs without bf16 units emulate it, 10x slower
    overrides = [f"data.train_path={data}", "data.val_path=null", f"training.amp={amp}", *extra]
    if args.quick:
        overrides += ["model.preset=tiny", "data.num_workers=0", "data.shuffle_buffer=64"]
    return load_config(SUITE_CONFIGS[kind], overrides, root=ROOTS[kind])


def _events_in(cfg: Any) -> int:
    return len(build_loader(cfg.model_copy(update={"data": cfg.data.model_copy(update={"batch_size": 1})}),
                            "train", 0, 1))


def measure_kind(kind: str, args: argparse.Namespace, data: str, device: torch.device,
                 peak: float | None) -> list[SuiteRow]:
    """The rows of one model kind: batch search, then eager and (unless quick) compiled timed steps."""
    cfg = _config(kind, args, data, device, "training.compile=false")
    if device.type == "cuda":
        limit = 2 ** int(math.log2(_events_in(cfg)))
        batch = largest_batch(cuda_step_fits(cfg, kind, device), FIRST_BATCH, limit)
        gc.collect()
        torch.cuda.empty_cache()
    else:
        batch = CPU_BATCH
    steps, warmup = (QUICK_STEPS, QUICK_WARMUP) if args.quick else (STEPS, WARMUP)
    rows, flops = [], None
    for compiled in (False,) if args.quick else (False, True):
        row_cfg = _config(kind, args, data, device, f"training.compile={str(compiled).lower()}",
                          f"data.batch_size={batch}")
        model = build_model(row_cfg, kind).to(device)
        flops = flops or count_flops(row_cfg, model, kind, device).forward_backward
        batches = training_batches(row_cfg, False, device)
        figures = run_benchmark(row_cfg, model, batches, steps, warmup, device)
        batches.close()  # stops the loader's workers now, not at garbage collection
        tflops = figures["events_per_s"] * flops / 1e12
        rows.append(SuiteRow(kind, compiled, batch, figures["events_per_s"], tflops, tflops / peak if peak else None,
                             figures["data_wait_fraction"], figures["peak_memory_gib"]))
        del model
        gc.collect()
    return rows


def append_rows(path: Path, lines: list[str]) -> None:
    """Append table lines to the suite table of `path` (the section and its header are added if missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{TABLE_HEADER}\n"
    head, _, tail = text.partition(SECTION)
    section_lines = tail.split("\n")
    header_at = section_lines.index(TABLE_HEADER.split("\n")[1])
    end = header_at + 1
    while end < len(section_lines) and section_lines[end].startswith("|"):
        end += 1
    section_lines[end:end] = lines
    atomic_write_text(path, head + SECTION + "\n".join(section_lines))


def run_suite(args: argparse.Namespace, device: torch.device) -> int:
    """Measure every row, print the table, append it to the benchmark file; returns the exit code."""
    data = args.data or DEFAULT_DATA
    if not Path(data).exists():
        raise SystemExit(f"benchmark data {data} does not exist; simulate it with `python -m lib.sim --config "
                         f"config/sim/demo.yaml --out {data} --seed 1` (make bench-gpu does) or pass --data")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    if peak is None and device.type == "cuda":
        log.warning("no peak bf16 FLOP/s known for %r: MFU left out (pass --peak-tflops)", device_name)
    rows = [row for kind in SUITE_CONFIGS for row in measure_kind(kind, args, data, device, peak)]
    preset = "tiny" if args.quick else "base"
    lines = [row.markdown(device_name, preset) for row in rows]
    print("\n".join([TABLE_HEADER, *lines]))
    record = args.record or (None if args.quick else DEFAULT_RECORD)
    if record:
        append_rows(Path(record), lines)
        print(f"appended {len(lines)} rows to {record}")
    return 0
