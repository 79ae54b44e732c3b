"""Dead-channel inpainting: validation against the truth, and the effect of dead channels on a regressor.

    python -m lib.inpaint validate --input DATA --out DIR [--dead-channels FILE] [--checkpoint INPAINTER]
        [--filler inpainter|neighbour|solid_angle] [--baselines neighbour solid_angle]
        [--artificial-fraction F] [--position-branch NAME] [--max-events N]
    python -m lib.inpaint study --regressor CKPT --input DATA --dead-channels FILE --out DIR
        [--inpainter CKPT] [--baselines neighbour solid_angle] [--position-branch NAME]

validate fills, in every event: in MC the listed sensors and a random --artificial-fraction (default 0)
of the healthy ones, with truth (mask_type 0); in real data (no MC truth branch) a random
--artificial-fraction (default 0.05) of the healthy sensors with truth; in both, the sensors the file
flags as dead (fill values, NaN; in data also the listed ones) without truth (mask_type 1). It writes
DIR/inpainting_predictions.root (lib.evaluation.inpainting_files), DIR/inpainting_metrics.json
(lib.evaluation.inpainting_metrics) and plots, and logs the filler-vs-baseline table.
study runs the regressor on the same events with the listed sensors as they are, dead, and filled
(lib.evaluation.inpainting_study): DIR/dead_channel_study.md / .json and a plot.
Data settings (tree, branches, normalization) come from the checkpoint (validate without one: the
defaults; --tree / --npho-branch / --time-branch override). Bad input: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from lib.config import ConfigError, RegressorConfig, load_resolved
from lib.config.schema import DataConfig
from lib.data.branches import is_real_data
from lib.data.dead_channels import read_dead_channels
from lib.data.build import prediction_loader
from lib.data.files import DataError, for_flags
from lib.data.stream import RAW_INPUTS
from lib.engine import CheckpointError, evaluation_weights
from lib.evaluation.inpainting_baselines import (
    BASELINES, POSITION_BRANCHES, InpainterFiller, build_baseline, position_branch_for,
)
from lib.evaluation.inpainting_files import write_inpainting_predictions
from lib.evaluation.inpainting_masks import evaluation_masks
from lib.evaluation.inpainting_metrics import log_comparison
from lib.evaluation.inpainting_study import dead_channel_study, study_table
from lib.evaluation.inpainting_validation import fill_data_set
from lib.io.atomic import atomic_write_text
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from lib.normalization import NormalizationConfig
from lib.recipes.fillers import INPAINTER, load_inpainter_filler
from lib.recipes.finetune import build_regressor

log = logging.getLogger(__name__)

FLAGS = {"tree": "--tree", "npho": "--npho-branch", "time": "--time-branch"}
VALIDATE_OUTPUTS = ("inpainting_predictions.root", "inpainting_metrics.json")
STUDY_OUTPUTS = ("dead_channel_study.md", "dead_channel_study.json")
DATA_ARTIFICIAL_FRACTION = 0.05
"""Healthy sensors hidden per event in real data when --artificial-fraction is not given."""


def _flag_settings(args: argparse.Namespace) -> dict[str, str]:
    """The data settings given on the command line (--tree, --npho-branch, --time-branch)."""
    return {key: getattr(args, key) for key in ("tree_name", "npho_branch", "time_branch") if getattr(args, key)}


def _validation_settings(args: argparse.Namespace) -> tuple[Any, InpainterFiller | None]:
    """(an object with the `data` and `normalization` sections, the inpainter filler or None): those of the
    inpainter of --checkpoint (the schema's defaults without one), the command line's data settings applied."""
    if args.checkpoint is None:
        data, norm, inpainter = DataConfig(), NormalizationConfig(), None
    else:
        inpainter = load_inpainter_filler(args.checkpoint, args.device)
        data, norm = inpainter.inpainter.cfg.data, inpainter.inpainter.cfg.normalization
    return SimpleNamespace(data=data.model_copy(update=_flag_settings(args)), normalization=norm), inpainter


def _refuse_existing(out: Path, names: Sequence[str]) -> None:
    existing = [str(out / name) for name in names if (out / name).exists()]
    if existing:
        raise DataError(f"refusing to overwrite {', '.join(existing)}; choose another --out directory")


def _baselines(requested: Sequence[str] | None, branches: Sequence[str], position_branch: str | None) -> list[str]:
    """The baselines asked for; by default neighbour, and solid_angle when the input has a position branch."""
    if requested is not None:
        return list(requested)
    if position_branch_for(branches, position_branch) is None:
        log.info("no interaction-point branch in the input: the solid_angle baseline is left out")
        return ["neighbour"]
    return list(BASELINES)


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """The `validate` sub-command; returns the metrics."""
    out = Path(args.out)
    _refuse_existing(out, VALIDATE_OUTPUTS)
    dead_list = read_dead_channels(args.dead_channels) if args.dead_channels else None
    settings, inpainter = _validation_settings(args)
    loader = prediction_loader(settings, args.input, args.batch_size, extras=RAW_INPUTS)
    branches, real_data = loader.truth_branches, is_real_data(loader.truth_branches)
    fraction = args.artificial_fraction
    fraction = (DATA_ARTIFICIAL_FRACTION if real_data else 0.0) if fraction is None else fraction
    if not real_data and dead_list is None and fraction == 0:
        raise DataError("nothing to compare with the truth: give --dead-channels FILE or --artificial-fraction F")
    filler_name = args.filler or (INPAINTER if args.checkpoint else "neighbour")
    baselines = _baselines(args.baselines, branches, args.position_branch)
    fillers = {name: build_baseline(name, branches, args.position_branch) for name in baselines}
    if filler_name == INPAINTER:
        if inpainter is None:
            raise DataError("--filler inpainter needs --checkpoint INPAINTER_CHECKPOINT")
        fillers = {INPAINTER: inpainter, **fillers}
    elif filler_name not in fillers:
        fillers = {filler_name: build_baseline(filler_name, branches, args.position_branch), **fillers}

    def masks(batch):
        return evaluation_masks(batch, dead_list, real_data, fraction, args.seed)

    sensors = fill_data_set(loader, fillers, masks, settings.normalization, args.max_events)
    metrics = sensors.metrics(filler_name, baselines)
    log_comparison(metrics, filler_name)
    metadata = {"input": [str(p) for p in args.input], "dead_channels": args.dead_channels,
                "checkpoint": args.checkpoint and str(args.checkpoint), "real_data": real_data,
                "artificial_fraction": fraction, "seed": args.seed}
    write_inpainting_predictions(out / VALIDATE_OUTPUTS[0], sensors, filler_name, baselines, metadata)
    atomic_write_text(out / VALIDATE_OUTPUTS[1], json.dumps({**metadata, "filler": filler_name, **metrics}, indent=1))
    from lib.plots.inpainting_plots import plot_dead_sensor_predictions, plot_inpainting_comparison

    plot_inpainting_comparison(metrics, out / "plots")
    plot_dead_sensor_predictions(sensors, out / "plots" / "dead_sensor_npho.png")
    return metrics


def _load_regressor(checkpoint: Path, args: argparse.Namespace) -> tuple[RegressorConfig, torch.nn.Module]:
    config, weights = evaluation_weights(checkpoint)
    if config.get("tasks") is None:
        raise CheckpointError(f"{checkpoint} is not a regressor checkpoint (no tasks in its config); "
                              "--regressor takes a checkpoint of lib.train_regressor")
    cfg = load_resolved(config, RegressorConfig)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=_flag_settings(args))})
    model = build_regressor(cfg).to(args.device)
    model.load_state_dict(weights)
    return cfg, model


def study(args: argparse.Namespace) -> dict[str, Any]:
    """The `study` sub-command; returns the study's results."""
    out = Path(args.out)
    _refuse_existing(out, STUDY_OUTPUTS)
    dead_list = read_dead_channels(args.dead_channels)
    cfg, model = _load_regressor(args.regressor, args)
    loader = prediction_loader(cfg, args.input, args.batch_size, extras=RAW_INPUTS)
    names = _baselines(args.baselines, loader.truth_branches, args.position_branch)
    fillers = {name: build_baseline(name, loader.truth_branches, args.position_branch) for name in names}
    if args.inpainter is not None:
        fillers = {INPAINTER: load_inpainter_filler(args.inpainter, args.device), **fillers}
    results = dead_channel_study(model, loader, cfg.normalization, dead_list, fillers, torch.device(args.device))
    results = {"regressor": str(args.regressor), "input": [str(p) for p in args.input],
               "dead_channels": args.dead_channels, "inpainter": args.inpainter and str(args.inpainter), **results}
    table = study_table(results)
    for line in table.splitlines():
        log.info("%s", line)
    atomic_write_text(out / STUDY_OUTPUTS[0], table)
    atomic_write_text(out / STUDY_OUTPUTS[1], json.dumps(results, indent=1))
    from lib.plots.inpainting_plots import plot_dead_channel_study

    plot_dead_channel_study(results, out / "plots" / "dead_channel_study.png")
    return results


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", help="data file(s), directory, or glob")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--baselines", nargs="+", choices=BASELINES,
                        help="baselines to compare with (default: neighbour, and solid_angle with a position branch)")
    parser.add_argument("--position-branch", dest="position_branch",
                        help=f"interaction point (xyz, cm) of solid_angle (default: {' or '.join(POSITION_BRANCHES)})")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=256, help="events per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tree", dest="tree_name", help="TTree / RNTuple name (default: the checkpoint's)")
    parser.add_argument("--npho-branch", dest="npho_branch", help="npho branch (default: the checkpoint's)")
    parser.add_argument("--time-branch", dest="time_branch", help="time branch (default: the checkpoint's)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib.inpaint", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="fill masked sensors and compare with the truth and the baselines")
    _common_flags(check)
    check.add_argument("--dead-channels", dest="dead_channels", help="dead-channel list ('id' or 'run id' lines)")
    check.add_argument("--checkpoint", type=Path, help="inpainter checkpoint (also gives the data settings)")
    check.add_argument("--filler", choices=(INPAINTER, *BASELINES),
                       help="what fills (default: inpainter with --checkpoint, else neighbour)")
    check.add_argument("--artificial-fraction", dest="artificial_fraction", type=float,
                       help=f"healthy sensors hidden at random per event (default: 0 in MC, "
                            f"{DATA_ARTIFICIAL_FRACTION} in real data)")
    check.add_argument("--max-events", dest="max_events", type=int, help="fill at most this many events")
    check.add_argument("--seed", type=int, default=0, help="seed of the random hiding")
    compare = commands.add_parser("study", help="a regressor's resolutions with dead channels as is, dead, filled")
    _common_flags(compare)
    compare.add_argument("--regressor", required=True, type=Path, help="regressor checkpoint (best.pt / last.pt)")
    compare.add_argument("--dead-channels", dest="dead_channels", required=True, help="dead-channel list")
    compare.add_argument("--inpainter", type=Path, help="inpainter checkpoint (adds the inpainted scenario)")
    return parser


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    fraction = getattr(args, "artificial_fraction", None)
    if fraction is not None and not 0 <= fraction < 1:
        parser.error(f"--artificial-fraction must lie in [0, 1), got {fraction}")
    if getattr(args, "max_events", None) is not None and args.max_events < 1:
        parser.error(f"--max-events must be >= 1, got {args.max_events}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `python -m lib.inpaint`; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_numbers(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        (validate if args.command == "validate" else study)(args)
    except (CheckpointError, DataError, ConfigError) as exc:
        log.error("%s", for_flags(str(exc), FLAGS))
        return USAGE_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
