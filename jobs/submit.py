"""Submit training jobs: `python -m jobs.submit {mae,regressor,chain,sweep,status} ...`.

    python -m jobs.submit mae [CONFIG] [--set key=value ...] [knob flags]
    python -m jobs.submit regressor [CONFIG] ...
    python -m jobs.submit inpainter [CONFIG] ...
    python -m jobs.submit chain [MAE_CONFIG [SECOND_CONFIG]] [--second regressor|inpainter]
                                [--mae-set k=v] [--reg-set k=v | --inp-set k=v] [--set k=v]
    python -m jobs.submit sweep [CONFIG] [--kind mae|reg|inp] (--grid key=v1,v2 ... | --points "k=v k2=v" ...)
    python -m jobs.submit status RUN [--save-dir DIR] [--lines N]
    python -m jobs.submit predict MODEL INPUT... [--format onnx] [knob flags]   (jobs/predict_submit.py)

Every config is resolved and validated (same schema as training) and every input path
checked before anything is submitted; with DRY_RUN=1 (--dry-run) nothing is submitted or
created and the exit status says whether a real submission would be accepted. Knobs
(PARTITION, TIME, NUM_GPUS, ..., see jobs/knobs.py) come from the environment or flags.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobs import executors
from jobs.dryrun import dry_run_report, render_scripts
from jobs.executors import RunFailedError, Submitted
from jobs.knobs import JobError, JobOptions, add_knob_flags, resolve_knobs
from jobs.launch import LaunchSpec
from jobs.predict_submit import add_predict_parser, run_predict
from jobs.plans import (
    DEFAULT_CONFIGS, SWEEP_TAG, RunPlan, launch_spec, plan_chain, plan_single, plan_sweep, sweep_points,
)
from jobs.run_guard import claim_run_dirs, validate_plans
from jobs.status import status_report, summary
from lib.config import CheckpointConfig, ConfigError

log = logging.getLogger("jobs.submit")

KIND_OF_COMMAND = {"mae": "mae", "regressor": "reg", "inpainter": "inp"}
SECOND_CONFIG_VARIABLE = {"reg": "REG_CONFIG", "inp": "INP_CONFIG"}
"""Environment variable naming the config of a chain's second run, by its kind."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser with its sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m jobs.submit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. --set training.epochs=1")
    common.add_argument("--entry", metavar="MODULE",
                        help="python module to train with instead of lib.train_<kind> (for tests)")
    add_knob_flags(common)
    for name, kind in KIND_OF_COMMAND.items():
        single = commands.add_parser(name, parents=[common], help=f"submit one {name} run")
        single.add_argument("config", nargs="?", help=f"YAML config [env CONFIG; default {DEFAULT_CONFIGS[kind]}]")
    chain = commands.add_parser("chain", parents=[common],
                                help="MAE pretraining, then the regressor (or the inpainter) on its encoder")
    chain.add_argument("mae_config", nargs="?", help=f"[env MAE_CONFIG; default {DEFAULT_CONFIGS['mae']}]")
    chain.add_argument("second_config", nargs="?", help=f"config of the second run [env REG_CONFIG / INP_CONFIG; "
                       f"default {DEFAULT_CONFIGS['reg']} / {DEFAULT_CONFIGS['inp']}]")
    chain.add_argument("--second", choices=("regressor", "inpainter"), default="regressor",
                       help="what the second run trains from the MAE's encoder (default regressor)")
    chain.add_argument("--mae-set", action="append", default=[], metavar="KEY=VALUE", help="override of the MAE run")
    chain.add_argument("--reg-set", action="append", default=[], metavar="KEY=VALUE",
                       help="override of the regressor run")
    chain.add_argument("--inp-set", action="append", default=[], metavar="KEY=VALUE",
                       help="override of the inpainter run (with --second inpainter)")
    sweep = commands.add_parser("sweep", parents=[common],
                                help="one run per point, as one job array (runs named by their values, tagged sweep)")
    sweep.add_argument("config", nargs="?", help="YAML config [env CONFIG; default: that of --kind]")
    sweep.add_argument("--kind", choices=sorted(DEFAULT_CONFIGS), default="mae", help="run kind (default mae)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="one sweep axis (repeatable; points = all combinations)")
    sweep.add_argument("--points", nargs="+", default=[], metavar="'KEY=V ...'",
                       help="explicit points, each a quoted list of overrides")
    status = commands.add_parser("status", help="job ids, states, last log lines and artifacts of a run")
    status.add_argument("run", help="run name (under --save-dir) or run directory")
    status.add_argument("--save-dir", default=CheckpointConfig.model_fields["save_dir"].default,
                        help="parent folder of the runs (default: the schema's checkpoint.save_dir)")
    status.add_argument("--lines", type=int, default=15, help="log lines to show (default 15)")
    add_predict_parser(commands)
    return parser


def _config_path(given: str | None, env: Mapping[str, str], variable: str, kind: str) -> str:
    return given or env.get(variable) or DEFAULT_CONFIGS[kind]


def _chain_plans(args: argparse.Namespace, env: Mapping[str, str], knobs) -> list[RunPlan]:
    """The MAE run and the second run (--second) of a chain, each with the overrides meant for it."""
    second = KIND_OF_COMMAND[args.second]
    second_sets = {"reg": args.reg_set, "inp": args.inp_set}
    for kind, overrides in second_sets.items():
        if overrides and kind != second:
            command = next(name for name, of in KIND_OF_COMMAND.items() if of == kind)
            raise JobError(f"--{kind}-set {overrides[0]}: this chain's second run is the {args.second}; "
                           f"use --{second}-set, or --second {command}")
    return plan_chain(_config_path(args.mae_config, env, "MAE_CONFIG", "mae"),
                      _config_path(args.second_config, env, SECOND_CONFIG_VARIABLE[second], second),
                      [*args.overrides, *args.mae_set], [*args.overrides, *second_sets[second]], knobs, second)


def _plans(args: argparse.Namespace, env: Mapping[str, str], knobs) -> list[RunPlan]:
    if args.command in KIND_OF_COMMAND:
        kind = KIND_OF_COMMAND[args.command]
        return plan_single(kind, _config_path(args.config, env, "CONFIG", kind), args.overrides, knobs)
    if args.command == "chain":
        return _chain_plans(args, env, knobs)
    points = sweep_points(args.grid, args.points)
    return plan_sweep(args.kind, _config_path(args.config, env, "CONFIG", args.kind), args.overrides, points, knobs)


def _sweep_folder(plans: Sequence[RunPlan]) -> tuple[Path, str]:
    """Logs folder and job name of a sweep's job array: <save_dir>/<sweep name>_sweep/logs."""
    name = f"{plans[0].cfg.mlflow.tags[SWEEP_TAG]}_sweep"
    return plans[0].layout.run_dir.parent / name / "logs", name


def _submit(plans: list[RunPlan], specs: list[LaunchSpec], executor: str, options: JobOptions,
            array: tuple[Path, str] | None) -> int:
    """Submit (or run locally), print what was submitted; wait and summarise when asked or local."""
    submitted: list[Submitted] = []
    with claim_run_dirs(plans, options.force):
        if executor == "local":
            for plan, spec in zip(plans, specs):
                print(f"running {plan.kind} run {plan.run_name!r} locally; logs in {plan.layout.logs}", flush=True)
                submitted.append(executors.run_local(plan, spec))
        elif array is not None:
            submitted = executors.submit_slurm_array(plans, specs, *array)
        else:
            submitted = executors.submit_slurm(plans, specs)
    for item in submitted:
        after = f", after job {submitted[item.plan.after].job_id} (afterok)" if item.plan.after is not None else ""
        done = "submitted" if item.executor == "slurm" else "ran"
        print(f"{done} {item.plan.kind} run {item.plan.run_name!r} as {item.executor} job {item.job_id}{after}; "
              f"logs: {item.log_folder}/{item.job_id}_0_log.out|err")
    if executor == "slurm" and not options.wait:
        print(f"follow with: python -m jobs.submit status {submitted[0].plan.run_name}")
        return 0
    if executor == "slurm":
        executors.wait_slurm([item.job_id for item in submitted])
    for item in submitted:
        print("\n".join(summary(item.plan.layout, item.plan.kind)))
    return 0 if all(item.plan.layout.done.exists() for item in submitted) else 1


def submit(plans: list[RunPlan], options: JobOptions, entry: str | None = None, array: bool = False) -> int:
    """Validate `plans`, then dry-run or submit them (one SLURM job array when `array`); returns the exit status."""
    validate_plans(plans, options)
    specs = [launch_spec(plan, options, entry) for plan in plans]
    executor = executors.choose_executor(options.executor)
    array_folder = _sweep_folder(plans) if array and executor == "slurm" else None
    scripts = render_scripts(plans, specs, executor, array_folder)
    if options.dry_run:
        print(dry_run_report(plans, specs, executor, scripts, options))
        return 0
    return _submit(plans, specs, executor, options, array_folder)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Resolve, validate, then dry-run or submit; returns the exit status."""
    if args.command == "status":
        print(status_report(args.run, args.save_dir, args.lines))
        return 0
    if args.command == "predict":
        return run_predict(args, env)
    knobs = resolve_knobs(vars(args), env)
    return submit(_plans(args, env, knobs), knobs.options, args.entry, array=args.command == "sweep")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Command-line entry; bad input exits 2 with a message, a failed run exits 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args, os.environ if env is None else env)
    except (JobError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
