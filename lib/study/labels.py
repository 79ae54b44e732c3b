"""`python -m lib.study labels`: plan the label-efficiency fine-tunes, submit those not finished as one job
array through the job suite, and once every point has finished write the table, the plot and the MLflow
parent run (lib.study.label_report).

Re-running the same command skips the finished points (their run directory holds DONE) and those whose
SLURM job is still queued or running, continues the unfinished ones from their last.pt, and writes the
report when all are done: on SLURM without WAIT=1, run it again after the jobs have ended.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

import yaml

from jobs.knobs import Knobs, resolve_knobs
from jobs.plans import RunPlan, plan_points
from jobs.run_guard import live_jobs
from jobs.submit import submit
from lib.config import ConfigError, RegressorConfig, flatten_config, load_config
from lib.io.run_files import CONFIG_NAME
from lib.study.label_plan import MODES, StudyPoint, check_study, default_total_steps, label_points

log = logging.getLogger(__name__)

POINT_KEYS = ("data.max_events", "training.epochs", "data.steps_per_epoch", "training.seed",
              "model.pretrained_encoder", "model.freeze_encoder", "data.train_path")
"""Settings a started point must keep to be continued from its last.pt."""


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `labels` (the job knobs are added by the caller)."""
    parser.add_argument("--config", required=True, help="regressor YAML config (its encoder must match the MAE's)")
    parser.add_argument("--mae", metavar="ENCODER", help="the MAE run's encoder_best.pt (pretrained, frozen modes)")
    parser.add_argument("--events", required=True, metavar="N1,N2,...",
                        help="numbers of labelled events (data.max_events), increasing, e.g. 250,1000,4000,16000")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"modes to train (default {','.join(MODES)})")
    parser.add_argument("--steps", type=int, metavar="S",
                        help="optimizer steps of every point (default: training.epochs passes over the largest N)")
    parser.add_argument("--validations", type=int, default=4,
                        help="validations per point, spread evenly, the last epoch always (default 4)")
    parser.add_argument("--name", help="study name: run names <name>_<mode>_n<N>_s<seed> and outputs in "
                                       "<save_dir>/<name>/ [RUN_NAME; default labels_<config name>]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of every point (repeatable)")
    parser.add_argument("--partial", action="store_true",
                        help="submit nothing; write the table and plot from the points finished so far")
    parser.add_argument("--entry", metavar="MODULE", help="python module to train with (for tests)")


def _parse_events(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(f"--events {text}: give comma-separated integers, e.g. 250,1000,4000") from None


def _study_config(args: argparse.Namespace, config_values: Mapping[str, object]) -> RegressorConfig:
    if not Path(args.config).is_file():
        raise ConfigError(f"config file not found: {args.config}")
    values = {key: value for key, value in config_values.items() if key != "checkpoint.run_name"}
    return load_config(args.config, args.overrides, root=RegressorConfig, cli=values)


def _check_one_process(cfg: RegressorConfig, cpu_procs: int | None) -> None:
    processes = (cpu_procs if cpu_procs is not None else cfg.slurm.num_gpus) * cfg.slurm.nodes
    if processes > 1:
        raise ConfigError(f"each point of a label study trains in one process (its step budget assumes one rank), "
                          f"not {processes}; set CPU_PROCS=1, or NUM_GPUS=1 and NODES=1")


def plan_study(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[list[StudyPoint], list[RunPlan], Knobs]:
    """The study's points and their run plans (validated configs), and the resolved knobs."""
    knobs = resolve_knobs(vars(args), env)
    cfg = _study_config(args, knobs.config_values)
    _check_one_process(cfg, knobs.options.cpu_procs)
    events, modes = _parse_events(args.events), [mode for mode in args.modes.split(",") if mode]
    check_study(cfg, events, args.seeds, modes, args.mae)
    name = args.name or knobs.config_values.get("checkpoint.run_name") or f"labels_{Path(args.config).stem}"
    total_steps = args.steps or default_total_steps(cfg, events)
    if total_steps < 1 or args.validations < 1:
        raise ConfigError("--steps and --validations must be at least 1")
    points = label_points(name, cfg, events, args.seeds, modes, args.mae, total_steps, args.validations)
    log.info("study %r: %d points (%s x N %s x %d seeds), %d optimizer steps each", name, len(points),
             "/".join(modes), events, args.seeds, total_steps)
    plans = plan_points("reg", args.config, args.overrides, [(p.run_name, p.overrides) for p in points], knobs,
                        sweep=name)
    return points, plans, knobs


def check_started_points(plans: list[RunPlan]) -> None:
    """Raise ConfigError for a point whose run directory was started with other POINT_KEYS values (another
    --steps, --events or encoder under the same study name): continuing it would mix two schedules."""
    for plan in plans:
        path = plan.layout.run_dir / CONFIG_NAME
        if not path.is_file():
            continue
        before = flatten_config(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        now = flatten_config(plan.cfg.model_dump(mode="json"))
        changed = [f"{key} {before.get(key)!r} there, {now.get(key)!r} now" for key in POINT_KEYS
                   if before.get(key) != now.get(key)]
        if changed:
            raise ConfigError(f"point {plan.run_name} was started with other settings ({'; '.join(changed)}); "
                              f"give the study another --name, or delete {plan.layout.run_dir} to train it anew")


def _write_report(points: list[StudyPoint], plans: list[RunPlan], encoder: str | None,
                  planned: int | None = None) -> int:
    from lib.study.label_report import write_label_report  # matplotlib and mlflow: only when a report is due

    outputs = write_label_report(points, plans, encoder, planned)
    print("label-efficiency study written: " + ", ".join(str(path) for path in outputs))
    return 0


def run_labels(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Plan, submit what is left, and write the report once every point is done (--partial: from the finished
    points, submitting nothing); returns the exit status."""
    points, plans, knobs = plan_study(args, env)
    finished = [plan for plan in plans if plan.layout.done.exists()]
    if args.partial:
        if not finished:
            raise ConfigError("--partial: no point of the study has finished yet")
        done = [(point, plan) for point, plan in zip(points, plans) if plan in finished]
        log.info("partial report: %d of %d points finished", len(done), len(plans))
        return _write_report([point for point, _ in done], [plan for _, plan in done], args.mae, len(plans))
    running = [plan for plan in plans if plan not in finished and live_jobs(plan.layout)]
    pending = [plan for plan in plans if plan not in finished and plan not in running]
    check_started_points(pending)
    log.info("%d points finished, %d queued or running in SLURM, %d to submit", len(finished), len(running),
             len(pending))
    code = 0
    if pending:
        # FORCE: a point whose run directory exists but has no DONE continues from its last.pt
        options = knobs.options.model_copy(update={"force": True})
        code = submit(pending, options, args.entry, array=True)
        if options.dry_run:
            return code
    missing = [plan.run_name for plan in plans if not plan.layout.done.exists()]
    if missing:
        print(f"{len(plans) - len(missing)} of {len(plans)} points finished; run the same command again once the "
              f"jobs have ended to train what is left and write the table (waiting for: {', '.join(missing[:5])}"
              f"{', ...' if len(missing) > 5 else ''})")
        return code
    return _write_report(points, plans, args.mae)
