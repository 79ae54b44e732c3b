"""Export a trained model for inference outside Python: ONNX or TorchScript, normalization inside the graph.

    python -m lib.export --checkpoint artifacts/<run>/checkpoints/best.pt --format onnx|torchscript
        [--out FILE] [--weights ema|raw] [--part regressor|encoder] [--input DATA] [--events N]
        [--no-check] [--force]

The graph takes raw npho and relative_time (batch, 4760) float32 (1e10 / NaN allowed for dead
channels) and returns named outputs in physical units (see lib.evaluation.inference_graph). The
file lands in FILE (default RUN/exported/<part>_<checkpoint name>.onnx / .torchscript.pt), with a
sidecar FILE.json holding the same metadata as the file (normalization, tasks, outputs and units,
run, checkpoint and its sha256) plus the parity check's figures. Unless --no-check, the export is
checked against the PyTorch model on N events of DATA (or simulated ones) before it is renamed into
place: a failed check leaves no file. Exit status 0 done, 1 parity check failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from lib.config import DataConfig, MAEConfig, ModelConfig, NormalizationConfig, RegressorConfig, load_resolved
from lib.data.files import DataError
from lib.engine.checkpoint import CHECKPOINT_KIND, CheckpointError, evaluation_state, read_torch_file
from lib.evaluation.export_check import ParityError, check_export, read_raw_events, simulated_events, with_dead_channels
from lib.evaluation.export_formats import FORMAT_SUFFIXES, export_metadata, require_onnx_exporter, write_export
from lib.evaluation.exported_model import ExportError, import_onnxruntime
from lib.evaluation.inference_graph import EncoderGraph, InferenceGraph, RegressorGraph
from lib.io.atomic import atomic_write_text
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from lib.io.run_files import CHECKPOINT_DIR
from lib.models.encoder import XECEncoder
from lib.recipes.finetune import build_regressor
from lib.recipes.transfer import ENCODER_KIND, ENCODER_PREFIXES

log = logging.getLogger(__name__)

EXPORT_DIR = "exported"
"""Folder of a run directory that default export paths go to."""
PARITY_FAILED_EXIT_CODE = 1
DEFAULT_CHECK_EVENTS = 64


@dataclass
class ExportSource:
    """What a checkpoint exports: the graph, its provenance for the metadata, the data settings to read --input."""

    graph: InferenceGraph
    provenance: dict[str, Any]
    data: DataConfig


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(out: Path) -> Path:
    """The JSON next to an exported file: FILE.json."""
    return out.with_name(out.name + ".json")


def default_output(checkpoint: Path, part: str, fmt: str, weights: str | None) -> Path:
    """RUN/exported/<part>_<checkpoint stem>[_raw]<suffix>; RUN is the checkpoint's run directory."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    stem = checkpoint.stem.removeprefix(f"{part}_")
    return run_dir / EXPORT_DIR / f"{part}_{stem}{'_raw' if weights == 'raw' else ''}{FORMAT_SUFFIXES[fmt]}"


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output (or sidecar) without --force and a directory that cannot be written."""
    for path in (out, sidecar_path(out)):
        if path.exists() and not force:
            raise ExportError(f"{path} exists; pass --force to overwrite it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the output directory {out.parent} ({exc}); choose --out in a "
                          "writable directory") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ExportError(f"the output directory {out.parent} is not writable; choose --out in a writable directory")


def _read_torch_file(path: Path) -> dict[str, Any]:
    try:
        content = read_torch_file(path, f"--checkpoint {path}", "give a checkpoint (RUN/checkpoints/best.pt) "
                                  "or an MAE encoder export (RUN/encoder_best.pt)")
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    kind = content.get("kind") if isinstance(content, dict) else None
    if kind not in (CHECKPOINT_KIND, ENCODER_KIND):
        raise ExportError(f"--checkpoint {path} is neither an xecmae checkpoint nor an MAE encoder export")
    return content


def _select_weights(checkpoint: dict[str, Any], weights: str | None, path: Path) -> tuple[dict[str, Any], str]:
    """(state dict, "ema" / "raw"): the EMA shadow by default when the run kept one."""
    if weights == "ema" and not checkpoint.get("ema"):
        raise ExportError(f"{path} holds no EMA weights (its run had training.ema.enabled false); use --weights raw")
    if weights == "raw" or not checkpoint.get("ema"):
        return checkpoint["model"], "raw"
    return evaluation_state(checkpoint), "ema"


def _provenance(path: Path, run_name: str | None, weights: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "run_name": run_name, "checkpoint": str(path.resolve()), "checkpoint_sha256": sha256_of(path),
            "weights": weights}


def _regressor_source(path: Path, content: dict[str, Any], weights: str | None) -> ExportSource:
    if content["kind"] != CHECKPOINT_KIND or content["config"].get("tasks") is None:
        raise ExportError(f"{path} is an MAE {'encoder export' if content['kind'] == ENCODER_KIND else 'checkpoint'}"
                          ", not a regressor checkpoint; export its encoder with --part encoder")
    cfg = load_resolved(content["config"], RegressorConfig)
    model = build_regressor(cfg)
    state, label = _select_weights(content, weights, path)
    model.load_state_dict(state)
    tasks = {name: task.model_dump(mode="json") for name, task in cfg.tasks.items()}
    return ExportSource(RegressorGraph(model, cfg.normalization),
                        _provenance(path, cfg.checkpoint.run_name, label, tasks=tasks), cfg.data)


def _encoder_source(path: Path, content: dict[str, Any], weights: str | None) -> ExportSource:
    if content["kind"] == ENCODER_KIND:
        if weights == "raw":
            raise ExportError(f"{path} is an encoder export, which holds only the weights it was exported with; "
                              "give the MAE checkpoint for --weights raw")
        model_cfg, norm = ModelConfig(**content["model"]), NormalizationConfig(**content["normalization"])
        state, label, data = content["encoder"], "as exported", DataConfig()
        run_name = content.get("source", {}).get("run_name")
    elif content["config"].get("tasks") is not None:
        raise ExportError(f"{path} is a regressor checkpoint; export it with --part regressor (the encoder "
                          "alone comes from an MAE checkpoint or its encoder_best.pt)")
    else:
        cfg = load_resolved(content["config"], MAEConfig)
        model_cfg, norm, data, run_name = cfg.model, cfg.normalization, cfg.data, cfg.checkpoint.run_name
        full, label = _select_weights(content, weights, path)
        prefix = ENCODER_PREFIXES[0]
        state = {key[len(prefix):]: value for key, value in full.items() if key.startswith(prefix)}
    encoder = XECEncoder(model_cfg)
    encoder.load_state_dict(state)
    return ExportSource(EncoderGraph(encoder, norm),
                        _provenance(path, run_name, label, model=model_cfg.model_dump(mode="json")), data)


def load_source(path: Path, part: str, weights: str | None) -> ExportSource:
    """The graph to export from a checkpoint or an MAE encoder export, refusing a file of the other part."""
    content = _read_torch_file(path)
    try:
        return (_regressor_source if part == "regressor" else _encoder_source)(path, content, weights)
    except ExportError:
        raise
    except (ValueError, RuntimeError, KeyError) as exc:  # config validation, load_state_dict mismatches
        raise ExportError(f"--checkpoint {path}: cannot rebuild the model ({type(exc).__name__}: {exc})") from exc


def _check_events(args: argparse.Namespace, data: DataConfig) -> tuple[Any, Any]:
    """Raw (npho, relative_time) of the parity check: --events of --input (or simulated), plus dead-channel copies."""
    events = read_raw_events(args.input, data, args.events) if args.input else simulated_events(args.events)
    npho, time = with_dead_channels(*events)
    log.info("parity check on %d events (%d with injected dead channels) of %s", len(npho),
             len(npho) - len(events[0]), " ".join(args.input) if args.input else "the toy simulation")
    return npho, time


def run_export(args: argparse.Namespace) -> Path:
    """Export as the parsed command line asks; returns the written file."""
    out = args.out or default_output(args.checkpoint, args.part, args.format, args.weights)
    check_output(out, args.force)
    if args.format == "onnx":
        require_onnx_exporter()
        if args.check:
            import_onnxruntime()
    source = load_source(args.checkpoint, args.part, args.weights)
    metadata = export_metadata(source.graph, args.format, source.provenance)
    summary: dict[str, Any] = {}
    events = _check_events(args, source.data) if args.check else None

    def verify(tmp: Path) -> None:
        summary.update(check_export(source.graph, args.format, tmp, *events))

    write_export(source.graph, args.format, out, metadata, verify if events else None)
    sidecar = {**metadata, "file": out.name, "file_sha256": sha256_of(out), "parity_check": summary or None}
    atomic_write_text(sidecar_path(out), json.dumps(sidecar, indent=1))
    log.info("exported %s (%s, outputs %s) and %s", out, args.format,
             [output.name for output in source.graph.outputs], sidecar_path(out).name)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m lib.export`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="regressor checkpoint (RUN/checkpoints/best.pt); with --part encoder an MAE "
                             "checkpoint or RUN/encoder_best.pt")
    parser.add_argument("--format", required=True, choices=sorted(FORMAT_SUFFIXES))
    parser.add_argument("--out", type=Path, help="output file (default RUN/exported/<part>_<checkpoint><suffix>)")
    parser.add_argument("--weights", choices=("ema", "raw"),
                        help="weights to export (default: the EMA shadow when the run kept one, else raw)")
    parser.add_argument("--part", choices=("regressor", "encoder"), default="regressor")
    parser.add_argument("--input", nargs="+", help="data file(s), directory or glob for the parity check "
                                                   "(default: simulated events)")
    parser.add_argument("--events", type=int, default=DEFAULT_CHECK_EVENTS, help="events of the parity check")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the parity check")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events {args.events}: give at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `python -m lib.export`; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_export(args)
    except ParityError as exc:
        log.error("%s", exc)
        return PARITY_FAILED_EXIT_CODE
    except (ExportError, CheckpointError, DataError) as exc:
        log.error("%s", exc)
        return USAGE_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
