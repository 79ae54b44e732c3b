"""Parity of an exported file with the PyTorch model it came from, on raw events with dead channels.

The reference is the project's own path: the loader's normalization (lib.normalization.normalize
on numpy, the compiled kernel EventLoader uses) and the model in PyTorch eager mode, float32.
Compared with it: the graph run in PyTorch from raw inputs (its in-graph normalization) and the
exported file run by its runtime (onnxruntime on the CPU, or TorchScript), through
`lib.evaluation.exported_model`, the loader lib.predict --format onnx uses. An output passes when
max |exported - reference| <= RELATIVE_TOLERANCE x its scale, the RMS of the reference values.
The events are N read from files (the run's tree and branch names) or simulated (lib.sim), plus
copies of some of them with injected dead channels: npho and time at the fill value 1e10, NaN
npho, NaN time.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lib.data.files import DataError, expand_inputs, inspect_files
from lib.data.readers import ChunkReader
from lib.evaluation.exported_model import load_exported_model
from lib.evaluation.inference_graph import InferenceGraph
from lib.normalization import normalize

log = logging.getLogger(__name__)

RELATIVE_TOLERANCE = 1e-4
"""Largest accepted max |exported - reference| per output, relative to the RMS of the reference values."""
DEAD_CHANNEL_EVENTS = 16
"""Checked events repeated with injected dead channels."""
DEAD_CHANNEL_FRACTION = 0.05
FILL_VALUE = 1e10
CHECK_BATCH = 32
"""Events per call of the runtimes: differs from the traced example batch, so dynamic batches are exercised."""
RUNTIME_NAMES = {"onnx": "onnxruntime", "torchscript": "torchscript"}


class ParityError(RuntimeError):
    """The exported file does not reproduce the PyTorch model within the tolerance."""


@dataclass(frozen=True)
class ParityRow:
    """Max |difference| of one output under one runtime, and the output's scale."""

    output: str
    runtime: str
    max_abs_diff: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.scale

    @property
    def passed(self) -> bool:
        return bool(self.relative <= RELATIVE_TOLERANCE)  # NaN fails


def read_raw_events(inputs: Sequence[str], data_cfg: Any, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n_events` raw (npho, relative_time) of `inputs`, read with the run's data settings.

    Raises lib.data.DataError for missing files, branches or a wrong sensor count."""
    branches = [data_cfg.npho_branch, data_cfg.time_branch]
    infos = inspect_files(expand_inputs(list(inputs), config_key="--input"), data_cfg.tree_name, branches, None)
    parts = []
    with ChunkReader(infos, data_cfg.tree_name, {name: np.dtype(np.float32) for name in branches}) as reader:
        for number, info in enumerate(infos):
            wanted = n_events - sum(len(part[branches[0]]) for part in parts)
            if wanted <= 0:
                break
            if info.n_entries:
                parts.append(reader.read(number, 0, min(info.n_entries, wanted)))
    if not parts:
        raise DataError(f"--input {' '.join(inputs)}: no events in these files; give files with events")
    return tuple(np.concatenate([part[name] for part in parts]) for name in branches)  # type: ignore[return-value]


def simulated_events(n_events: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw (npho, relative_time) of `n_events` events of the toy simulation (lib.sim, default settings)."""
    from lib.sim.events import SimConfig, simulate_events

    events = simulate_events(SimConfig(), n_events, np.random.default_rng(seed))
    return events["npho"], events["relative_time"]


def with_dead_channels(npho: np.ndarray, time: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The events plus copies of up to DEAD_CHANNEL_EVENTS of them where a random DEAD_CHANNEL_FRACTION of the
    channels is dead: a third with npho and time at FILL_VALUE, a third with NaN npho, a third with NaN time."""
    rng = np.random.default_rng(seed)
    dead_npho, dead_time = npho[:DEAD_CHANNEL_EVENTS].copy(), time[:DEAD_CHANNEL_EVENTS].copy()
    kind = rng.integers(0, 3, size=dead_npho.shape)
    dead = rng.random(dead_npho.shape) < DEAD_CHANNEL_FRACTION
    dead_npho[dead & (kind == 0)] = FILL_VALUE
    dead_time[dead & (kind == 0)] = FILL_VALUE
    dead_npho[dead & (kind == 1)] = np.nan
    dead_time[dead & (kind == 2)] = np.nan
    return np.concatenate([npho, dead_npho]), np.concatenate([time, dead_time])


def _batched(run: Any, npho: np.ndarray, time: np.ndarray) -> list[np.ndarray]:
    parts = [run(npho[lo : lo + CHECK_BATCH], time[lo : lo + CHECK_BATCH]) for lo in range(0, len(npho), CHECK_BATCH)]
    return [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]


@torch.no_grad()
def reference_outputs(graph: InferenceGraph, npho: np.ndarray, time: np.ndarray) -> list[np.ndarray]:
    """The model's outputs on the loader's normalization of the raw events (see the module docstring)."""
    def run(n: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
        inputs = (torch.from_numpy(value) for value in normalize(n, t, graph.norm))
        return [value.numpy() for value in graph.from_normalized(*inputs)]

    return _batched(run, npho, time)


@torch.no_grad()
def graph_outputs(graph: InferenceGraph, npho: np.ndarray, time: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs run in PyTorch from the raw events (normalization inside the graph)."""
    return _batched(lambda n, t: [v.numpy() for v in graph(torch.from_numpy(n), torch.from_numpy(t))], npho, time)


def compare(names: Sequence[str], reference: list[np.ndarray], runs: dict[str, list[np.ndarray]]) -> list[ParityRow]:
    """A ParityRow per output and runtime (a shape mismatch counts as an infinite difference)."""
    rows = []
    for index, name in enumerate(names):
        want = reference[index].astype(np.float64)
        scale = float(np.sqrt(np.mean(want**2))) or 1.0
        for runtime, outputs in runs.items():
            got = outputs[index].astype(np.float64)
            diff = float(np.max(np.abs(got - want), initial=0.0)) if got.shape == want.shape else float("inf")
            rows.append(ParityRow(name, runtime, diff if np.isfinite(got).all() else float("inf"), scale))
    return rows


def check_export(graph: InferenceGraph, fmt: str, path: Path, npho: np.ndarray, time: np.ndarray) -> dict[str, Any]:
    """Compare the exported file at `path` with the model on the events; logs a line per output and returns
    a summary for the sidecar. Raises ParityError when an output is off by more than the tolerance."""
    names = [output.name for output in graph.outputs]
    exported = load_exported_model(path)
    if exported.output_names != names:
        raise ParityError(f"{path} has the outputs {exported.output_names}, the model {names}")
    by_name = exported(npho, time, batch_size=CHECK_BATCH)
    runs = {"torch_graph": graph_outputs(graph, npho, time), RUNTIME_NAMES[fmt]: [by_name[k] for k in names]}
    rows = compare(names, reference_outputs(graph, npho, time), runs)
    units = {output.name: output.unit for output in graph.outputs}
    for name in names:
        parts = ", ".join(f"{row.runtime} {row.max_abs_diff:.3g} ({row.relative:.2g} of scale)"
                          for row in rows if row.output == name)
        scale = next(row.scale for row in rows if row.output == name)
        log.info("parity %-10s scale %-10.4g [%s] max |diff|: %s", name, scale, units[name] or "-", parts)
    failed = [row for row in rows if not row.passed]
    summary = {"events": int(len(npho)), "tolerance_relative_to_rms": RELATIVE_TOLERANCE, "passed": not failed,
               "outputs": {name: {"scale_rms": next(r.scale for r in rows if r.output == name),
                                  "max_abs_diff": {r.runtime: r.max_abs_diff for r in rows if r.output == name}}
                           for name in names}}
    if failed:
        details = "; ".join(f"{row.output} ({row.runtime}): {row.relative:.3g}" for row in failed)
        raise ParityError(f"parity check failed: max |diff| / RMS above {RELATIVE_TOLERANCE:g} for {details}; "
                          "the export was not written")
    return summary
