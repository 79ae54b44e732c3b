"""Inference benchmark: `python -m lib.bench_infer --config config/reg/reg_demo.yaml --batches 1 64 1024`.

Events/s of the regressor of a config (weights as initialised, target standardization from
synthetic ranges: the figures do not depend on training) on the CPU, from raw npho and
relative_time to physical-unit outputs (normalization inside), in three runtimes: torch eager,
TorchScript and onnxruntime (the files lib.export writes, run through
lib.evaluation.exported_model as lib.predict and the C++ side would). Inputs are simulated events
(lib.sim, dead channels included), tiled to the batch. Each figure is the median of `--repeat`
timed calls after `--warmup` untimed ones. A benchmark, not a test: record its figures in
docs/benchmarks.md with the machine.
"""
from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lib.config import RegressorConfig, load_config
from lib.evaluation.export_check import simulated_events
from lib.evaluation.export_formats import FORMAT_SUFFIXES, export_metadata, write_export
from lib.evaluation.exported_model import load_exported_model
from lib.evaluation.inference_graph import RegressorGraph
from lib.recipes.finetune import build_regressor

log = logging.getLogger(__name__)

RUNTIMES = ("eager", "torchscript", "onnxruntime")
RUNTIME_FORMATS = {"torchscript": "torchscript", "onnxruntime": "onnx"}
SIMULATED_EVENTS = 64
"""Distinct simulated events; larger batches repeat them."""
Runner = Callable[[np.ndarray, np.ndarray], object]


def build_graph(cfg: RegressorConfig) -> RegressorGraph:
    """The config's regressor (fresh weights, standardization fitted on synthetic targets) as an inference graph."""
    torch.manual_seed(0)
    model = build_regressor(cfg)
    for task in model.tasks.values():
        task.fit(torch.randn(64, task.n_outputs, dtype=torch.float64) + 1.0)
    return RegressorGraph(model, cfg.normalization)


def eager_runner(graph: RegressorGraph) -> Runner:
    """Calls of the graph in PyTorch eager mode (numpy in, numpy out, like the exported runtimes)."""
    def run(npho: np.ndarray, time: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [value.numpy() for value in graph(torch.from_numpy(npho), torch.from_numpy(time))]

    return run


def exported_runner(graph: RegressorGraph, runtime: str, directory: Path, threads: int) -> Runner:
    """Calls of the graph exported for `runtime` into `directory` and loaded as lib.predict would."""
    fmt = RUNTIME_FORMATS[runtime]
    path = directory / f"regressor{FORMAT_SUFFIXES[fmt]}"
    started = time.perf_counter()
    write_export(graph, fmt, path, export_metadata(graph, fmt, {}))
    log.info("exported %s in %.1f s (%.1f MB)", path.name, time.perf_counter() - started, path.stat().st_size / 1e6)
    model = load_exported_model(path, threads=threads)
    return lambda npho, time_: model(npho, time_, batch_size=len(npho))


def median_seconds(run: Runner, npho: np.ndarray, time_: np.ndarray, warmup: int, repeat: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `repeat` calls after `warmup` untimed ones (CPU time, summed over
    threads, measures the work done; on a shared machine it varies less than wall time)."""
    for _ in range(warmup):
        run(npho, time_)
    wall, cpu = [], []
    for _ in range(repeat):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        run(npho, time_)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(wall), statistics.median(cpu)


def tiled(events: tuple[np.ndarray, np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` events: the simulated ones repeated."""
    rows = np.arange(batch) % len(events[0])
    return np.ascontiguousarray(events[0][rows]), np.ascontiguousarray(events[1][rows])


def run_benchmark(graph: RegressorGraph, runtimes: Sequence[str], batches: Sequence[int], warmup: int,
                  repeat: int, threads: int) -> dict[str, dict[int, tuple[float, float]]]:
    """{runtime: {batch: (events per wall second, events per CPU second)}} of `graph`."""
    torch.set_num_threads(threads)
    events = simulated_events(SIMULATED_EVENTS)
    figures: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as directory:
        for runtime in runtimes:
            run = (eager_runner(graph) if runtime == "eager"
                   else exported_runner(graph, runtime, Path(directory), threads))
            figures[runtime] = {}
            for batch in batches:
                wall, cpu = median_seconds(run, *tiled(events, batch), warmup, repeat)
                figures[runtime][batch] = (batch / wall, batch / cpu)
                log.info("%-12s batch %5d: %.4g s per call (CPU %.4g s), %.4g events/s", runtime, batch, wall, cpu,
                         batch / wall)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the benchmark; prints a markdown table of events/s."""
    parser = argparse.ArgumentParser(description="Benchmark CPU inference of the configured regressor.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads of every runtime")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides, root=RegressorConfig)
    graph = build_graph(cfg)
    params = sum(p.numel() for p in graph.parameters()) / 1e6
    figures = run_benchmark(graph, args.runtimes, args.batches, args.warmup, args.repeat, args.threads)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"config {args.config}: {params:.2f} M parameters, tasks {list(cfg.tasks)}, {args.threads} threads, "
          f"median of {args.repeat} after {args.warmup} warm-up calls, process peak RSS {peak:.2f} GiB")
    print("events/s (events per CPU second, all threads)")
    print("| runtime | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---" * (len(args.batches) + 1) + "|")
    for runtime, by_batch in figures.items():
        cells = [f"{by_batch[b][0]:.3g} ({by_batch[b][1]:.3g})" for b in args.batches]
        print(f"| {runtime} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
