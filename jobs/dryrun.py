"""Rendered sbatch scripts checked with `sbatch --test-only`, and the dry-run report.

The scripts are rendered in memory (nothing is written) and given to `sbatch --test-only`
on stdin before every submission, so a real submission and a dry run fail the same way,
with sbatch's own message. A dependent job is tested without its dependency (the job it
waits for does not exist yet).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.executors import local_parameters, render_sbatch, sbatch_test_only, slurm_parameters
from jobs.knobs import JobOptions
from jobs.launch import LaunchSpec, launch_command
from jobs.plans import RunPlan
from lib.config import diff_from_defaults


@dataclass(frozen=True)
class CheckedScript:
    """The sbatch script of some plans (one, or all points of an array) and sbatch's test answer."""

    plan_indices: tuple[int, ...]
    script: str
    answer: str


def _placeholder(plans: Sequence[RunPlan], plan: RunPlan) -> str | None:
    return None if plan.after is None else f"<job id of {plans[plan.after].run_name}>"


def render_scripts(plans: Sequence[RunPlan], specs: Sequence[LaunchSpec], executor: str,
                   array: tuple[Path, str] | None = None) -> list[CheckedScript]:
    """SLURM: the script of every job (or of the one array job), each accepted by `sbatch --test-only`."""
    if executor != "slurm":
        return []
    if array is not None:
        folder, job_name = array
        params = {**slurm_parameters(plans[0], specs[0]), "job_name": job_name}
        script = render_sbatch(folder, params, array_size=len(plans))
        answer = sbatch_test_only(script, f"the sweep {job_name!r}")
        return [CheckedScript(tuple(range(len(plans))), script, answer)]
    checked = []
    for index, (plan, spec) in enumerate(zip(plans, specs)):
        answer = sbatch_test_only(render_sbatch(plan.layout.logs, slurm_parameters(plan, spec)),
                                  f"run {plan.run_name!r}")
        script = render_sbatch(plan.layout.logs, slurm_parameters(plan, spec, _placeholder(plans, plan)))
        checked.append(CheckedScript((index,), script, answer))
    return checked


def _diff_lines(plan: RunPlan) -> list[str]:
    return [f"    {key}: {default!r} -> {value!r}" for key, (default, value) in diff_from_defaults(plan.cfg).items()]


def _artifact_lines(plan: RunPlan) -> list[str]:
    return [f"    {what}: {path}" for what, path in plan.layout.artifacts(plan.kind).items()]


def dry_run_report(plans: Sequence[RunPlan], specs: Sequence[LaunchSpec], executor: str,
                   scripts: Sequence[CheckedScript], options: JobOptions) -> str:
    """What a real submission would do: per job the config diff, launch command, script and artifacts."""
    out = [f"DRY RUN (executor: {executor}; nothing is submitted and no directory is created)"]
    script_of = {index: item for item in scripts for index in item.plan_indices}
    for index, (plan, spec) in enumerate(zip(plans, specs)):
        out += ["", f"== job {index + 1} of {len(plans)}: {plan.kind} run {plan.run_name!r} "
                    f"from {plan.config_file} =="]
        if plan.overrides:
            out.append(f"  overrides: {' '.join(plan.overrides)}")
        out += ["  resolved config, keys that differ from the defaults:", *_diff_lines(plan)]
        out += [f"  launch command (node 0, in {spec.workdir}):", "    " + " ".join(launch_command(spec))]
        if executor == "local":
            out.append(f"  local executor parameters: {local_parameters(plan, spec)}")
        item = script_of.get(index)
        if item is not None and item.plan_indices[0] == index:
            shared = f" (one array job for jobs 1-{len(plans)})" if len(item.plan_indices) > 1 else ""
            out += [f"  sbatch script{shared}:", *("    | " + line for line in item.script.splitlines()),
                    f"  sbatch --test-only: {item.answer}"]
        out += ["  artifacts that would be created:", *_artifact_lines(plan)]
    dependent = [plan for plan in plans if plan.after is not None]
    out += ["", "dependencies:" if dependent else "dependencies: none"]
    for plan in dependent:
        first = plans[plan.after]
        out.append(f"  {plan.run_name} starts after {first.run_name} completes successfully (afterok); "
                   f"inputs it takes from it: {', '.join(plan.produced_inputs)}")
    if executor == "local":
        out.append("local executor: the runs would run one after the other on this machine")
    if options.force:
        out.append("FORCE: existing run directories would be reused")
    return "\n".join(out)
