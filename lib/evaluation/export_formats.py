"""Write an inference graph as ONNX (torch.onnx, dynamo exporter) or TorchScript (torch.jit.trace).

Both files carry the export metadata: ONNX as metadata_props (one entry per top-level key, the
value JSON-encoded), TorchScript as the extra file `xecmae_export.json` (all of it, as JSON).
Files are written atomically; `verify` runs on the finished temporary file before it is renamed
into place, so a file that fails its check never appears under its name. The batch dimension is
dynamic in both formats.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from lib.evaluation.exported_model import (
    EXPORT_EXTRA_HINT, EXPORT_KIND, INPUT_NAMES, TORCHSCRIPT_METADATA_FILE, ExportError,
)
from lib.evaluation.inference_graph import InferenceGraph
from lib.geometry import N_SENSORS
from lib.io.atomic import atomic_write
from lib.normalization import RAW_MISSING_ABOVE, describe

log = logging.getLogger(__name__)

FORMAT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
"""File name endings of the export formats."""
ONNX_OPSET = 18
"""ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)."""
METADATA_VERSION = 1
INPUT_UNITS = {"npho": "photons (as in the training files)", "relative_time": "s"}
EXAMPLE_BATCH = 2
"""Events in the example input the exporters trace with (the parity check then runs other batch sizes)."""
_UNSUPPORTED_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_QUIET_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


def export_metadata(graph: InferenceGraph, fmt: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """What an exported file says about itself: inputs, outputs with units, normalization, provenance.

    `provenance`: tasks, run_name, checkpoint, checkpoint_sha256, weights (from lib.export).
    """
    metadata = {
        "kind": EXPORT_KIND, "version": METADATA_VERSION, "part": graph.part, "format": fmt,
        "inputs": [{"name": name, "shape": ["batch", N_SENSORS], "dtype": "float32", "unit": INPUT_UNITS[name]}
                   for name in INPUT_NAMES],
        "invalid_channels": f"npho above {RAW_MISSING_ABOVE:g} (the fill value 1e10), NaN, inf or outside the npho "
                            f"scheme's domain; relative_time with |t| > {RAW_MISSING_ABOVE:g}, NaN or inf, or npho "
                            "below normalization.npho_threshold: the graph applies these rules and the sentinels",
        "outputs": [output.describe() for output in graph.outputs],
        "normalization": describe(graph.norm),
        **provenance,
        "torch_version": torch.__version__,
    }
    if fmt == "onnx":
        metadata["onnx_opset"] = ONNX_OPSET
    if getattr(graph, "token_names", None):
        metadata["token_names"] = graph.token_names
    return metadata


def example_inputs(batch: int = EXAMPLE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (npho, relative_time) of `batch` events for tracing (values do not matter: no data-dependent branches)."""
    return torch.zeros(batch, N_SENSORS), torch.zeros(batch, N_SENSORS)


def require_onnx_exporter() -> None:
    """ExportError naming the extra to install unless onnx and onnxscript (the exporter's needs) import."""
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ExportError(f"ONNX export needs the package {module}, which is not installed ({exc}); "
                              f"install the export extra: {EXPORT_EXTRA_HINT}") from exc


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress logging and their warnings about the tracing they do."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def describe_onnx_failure(exc: BaseException) -> str:
    """One-line reason of an ONNX export failure, naming the unsupported op and what to do where there is one."""
    text = "\n".join(str(e) for e in _exception_chain(exc))
    match = _UNSUPPORTED_OP.search(text)
    if match:
        op = f"{match.group(1)}.{match.group(2)}"
        return (f"ONNX export failed: the model uses the op {op}, which has no ONNX translation at opset "
                f"{ONNX_OPSET}; export with --format torchscript, or replace that op in the model with "
                "operations ONNX supports")
    reason = next((line.strip() for e in reversed(_exception_chain(exc)) for line in str(e).splitlines()
                   if line.strip()), type(exc).__name__)
    return f"ONNX export failed ({type(exc).__name__}): {reason}; export with --format torchscript instead"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _write_onnx(graph: InferenceGraph, path: Path, metadata: dict[str, Any]) -> None:
    require_onnx_exporter()
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                graph, example_inputs(), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                input_names=list(INPUT_NAMES), output_names=[output.name for output in graph.outputs],
                dynamic_shapes=({0: batch}, {0: batch}),
            )
    except torch.onnx.OnnxExporterError as exc:
        raise ExportError(describe_onnx_failure(exc)) from exc
    program.model.metadata_props.update({key: json.dumps(value) for key, value in metadata.items()})
    with _quiet_exporter():
        program.save(path, external_data=False)


def _write_torchscript(graph: InferenceGraph, path: Path, metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        # shape checks in the model become constants of the trace (the parity check runs other batch sizes);
        # torch.jit is deprecated in favour of torch.export, but LibTorch (C++) loads only TorchScript
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=DeprecationWarning)
        try:
            traced = torch.jit.trace(graph, example_inputs(), check_trace=False)
        except Exception as exc:  # the tracer raises many types for code it cannot record
            raise ExportError(f"TorchScript tracing failed ({type(exc).__name__}: {exc}); "
                              "try --format onnx") from exc
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})


WRITERS: dict[str, Callable[[InferenceGraph, Path, dict[str, Any]], None]] = {
    "onnx": _write_onnx, "torchscript": _write_torchscript,
}


def write_export(graph: InferenceGraph, fmt: str, path: Path, metadata: dict[str, Any],
                 verify: Callable[[Path], None] | None = None) -> Path:
    """Export `graph` as `fmt` ("onnx" / "torchscript") to `path` atomically; `verify(tmp)` runs on the
    written temporary file first and, by raising, keeps it from ever appearing at `path`."""
    def write(tmp: Path) -> None:
        with torch.no_grad():
            # one eager pass first: constants the model builds and caches lazily (index tensors) must be real
            # tensors, not the fake ones torch.export would otherwise create and leave in those caches
            graph.eval()(*example_inputs())
            WRITERS[fmt](graph, tmp, metadata)
        if verify is not None:
            verify(tmp)

    return atomic_write(path, write)
