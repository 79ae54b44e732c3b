"""submitit executors: SLURM parameters, the rendered sbatch script, `sbatch --test-only`, submission, waiting.

`slurm`: submitit's SlurmExecutor (one sbatch job per run, a job array for a sweep, afterok
for a chain). `local`: submitit's LocalExecutor, one run after the other on this machine
(the default where no `sbatch` is on PATH or no controller answers `sinfo`). Per-job
stdout/stderr go to `<run dir>/logs/` as `<job id>_0_log.out` / `.err`.
"""
from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.knobs import JobError, slurm_time_minutes
from jobs.launch import LaunchSpec, TrainingJob
from jobs.plans import RunPlan
from jobs.time_limits import local_timeout_min
from lib.config import SlurmConfig

log = logging.getLogger(__name__)

MAX_REQUEUES = 20
"""Time-limit requeues a job may go through before submitit gives up (submitit's max_num_timeout)."""
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}
_SQUEUE_POLL_S = 2.0


def _slurm_answers() -> str | None:
    """None when `sinfo` reaches a SLURM controller, else what it said (the client tools can be
    installed on a machine that belongs to no cluster)."""
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["no output"])[-1]


def choose_executor(requested: str) -> str:
    """"slurm" or "local" for EXECUTOR=auto|slurm|local; slurm needs `sbatch` on PATH, and auto
    also a controller that answers `sinfo`."""
    has_sbatch = shutil.which("sbatch") is not None
    if requested == "slurm" and not has_sbatch:
        raise JobError("EXECUTOR=slurm but `sbatch` is not on PATH; run on a SLURM login node, or use "
                       "EXECUTOR=local (or auto) to train on this machine")
    if requested != "auto":
        return requested
    if not has_sbatch:
        return "local"
    problem = _slurm_answers()
    if problem is not None:
        log.warning("EXECUTOR=auto: sbatch is on PATH but no SLURM controller answers (sinfo: %s); "
                    "running on this machine", problem)
        return "local"
    return "slurm"


def job_parameters(slurm: SlurmConfig, job_name: str, cpus_per_task: int, gpus_per_node: int = 0, nodes: int = 1,
                   depends_on: str | None = None) -> dict[str, Any]:
    """SlurmExecutor parameters of a job with the `slurm` settings: one task per node, requeue on signal,
    `afterok` on the job `depends_on` when given."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": slurm_time_minutes(slurm.time),
        "nodes": nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus_per_task,
        "signal_delay_s": slurm.signal_delay_s,
        "setup": list(slurm.setup) or None,
        "additional_parameters": {"requeue": True},
    }
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(slurm, key) is not None:
            params[key] = getattr(slurm, key)
    if depends_on is not None:
        params["dependency"] = f"afterok:{depends_on}"
        params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
    return params


def slurm_parameters(plan: RunPlan, spec: LaunchSpec, depends_on: str | None = None) -> dict[str, Any]:
    """SlurmExecutor parameters of `plan`: one task per node, GPUs (or CPU_PROCS CPUs), requeue on signal."""
    slurm = plan.cfg.slurm
    cpus = spec.procs_per_node if spec.cpu else slurm.cpus_per_gpu * spec.procs_per_node
    return job_parameters(slurm, plan.run_name, cpus, 0 if spec.cpu else spec.procs_per_node, spec.nodes, depends_on)


def local_parameters(plan: RunPlan, spec: LaunchSpec) -> dict[str, Any]:
    """LocalExecutor parameters: one task, the GPUs of a GPU job, the same time limit (TIME=0: none) and signal
    delay."""
    return {
        "timeout_min": local_timeout_min(plan.cfg.slurm.time),
        "gpus_per_node": 0 if spec.cpu else spec.procs_per_node,
        "tasks_per_node": 1,
        "signal_delay_s": plan.cfg.slurm.signal_delay_s,
    }


def slurm_executor(folder: Path, params: dict[str, Any]):
    """submitit's SlurmExecutor writing into `folder`, with `params` (job_parameters / slurm_parameters)."""
    from submitit import SlurmExecutor

    executor = SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**params)
    return executor


def render_sbatch(folder: Path, params: dict[str, Any], array_size: int | None = None) -> str:
    """The sbatch script submitit would submit with these parameters (nothing is written)."""
    executor = slurm_executor(folder, params)
    if array_size is not None and array_size > 1:
        executor.parameters["map_count"] = array_size
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def sbatch_test_only(script: str, what: str) -> str:
    """Run `sbatch --test-only` on `script`; returns sbatch's answer, raises JobError with it verbatim."""
    result = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    answer = (result.stderr + result.stdout).strip()
    if result.returncode != 0:
        raise JobError(f"sbatch rejected the job of {what}:\n{answer}")
    return answer


@dataclass
class Submitted:
    """A submitted run: its plan, job id and submitit job handle."""

    plan: RunPlan
    job_id: str
    executor: str
    job: Any
    log_folder: Path


def _record(submitted: Submitted, after: str | None) -> None:
    submitted.plan.layout.add_job({
        "job_id": submitted.job_id, "kind": submitted.plan.kind, "executor": submitted.executor,
        "logs": str(submitted.log_folder),
        "after": after, "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })


def submit_slurm(plans: Sequence[RunPlan], specs: Sequence[LaunchSpec]) -> list[Submitted]:
    """Submit each plan as one sbatch job into its prepared run directory; a plan with `after` waits for
    that job (afterok)."""
    submitted: list[Submitted] = []
    for plan, spec in zip(plans, specs):
        after = submitted[plan.after].job_id if plan.after is not None else None
        job = slurm_executor(plan.layout.logs, slurm_parameters(plan, spec, after)).submit(TrainingJob(spec))
        submitted.append(Submitted(plan, job.job_id, "slurm", job, plan.layout.logs))
        _record(submitted[-1], after)
    return submitted


def submit_slurm_array(plans: Sequence[RunPlan], specs: Sequence[LaunchSpec], folder: Path,
                       job_name: str) -> list[Submitted]:
    """Submit the plans as one job array (logs in `folder`, linked from each run's prepared logs/)."""
    folder.mkdir(parents=True, exist_ok=True)
    params = {**slurm_parameters(plans[0], specs[0]), "job_name": job_name}
    executor = slurm_executor(folder, params)
    with executor.batch():
        jobs = [executor.submit(TrainingJob(spec)) for spec in specs]
    submitted = []
    for plan, job in zip(plans, jobs):
        for path in (job.paths.stdout, job.paths.stderr):
            link = plan.layout.logs / path.name
            if not link.is_symlink():
                link.symlink_to(path.resolve())
        submitted.append(Submitted(plan, job.job_id, "slurm", job, folder))
        _record(submitted[-1], None)
    return submitted


class RunFailedError(RuntimeError):
    """A submitted run did not finish; the message names its logs."""


def run_local(plan: RunPlan, spec: LaunchSpec) -> Submitted:
    """Run `plan` in its prepared run directory with submitit's LocalExecutor and wait for it; raises
    RunFailedError when the job fails."""
    from submitit import LocalExecutor

    executor = LocalExecutor(folder=plan.layout.logs, max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**local_parameters(plan, spec))
    job = executor.submit(TrainingJob(spec))
    submitted = Submitted(plan, job.job_id, "local", job, plan.layout.logs)
    _record(submitted, None)
    log.info("run %r is running locally (job %s); log: %s", plan.run_name, job.job_id, job.paths.stderr)
    job.wait()
    error = job.exception()
    if error is not None:
        raise RunFailedError(f"run {plan.run_name!r} failed (local job {job.job_id}); see {job.paths.stderr} and "
                       f"{plan.layout.train_log}:\n{error}")
    return submitted


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from squeue for the jobs it still knows (array elements one by one)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    main_ids = sorted({job_id.split("_")[0] for job_id in job_ids})
    result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(main_ids), "-o", "%i|%T|%r"],
                            capture_output=True, text=True, timeout=60)
    states = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def wait_slurm(job_ids: Sequence[str], timeout_s: float | None = None) -> dict[str, str]:
    """Poll squeue until every job has ended (or left the queue); returns {job id: last state seen}."""
    last: dict[str, str] = {job_id: "UNKNOWN" for job_id in job_ids}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        states = queue_states(job_ids)
        for job_id in job_ids:
            if job_id in states:
                last[job_id] = states[job_id][0]
        if all(job_id not in states or states[job_id][0] in ENDED_STATES for job_id in job_ids):
            return last
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"jobs {', '.join(job_ids)} still running after {timeout_s:.0f} s: {last}")
        time.sleep(_SQUEUE_POLL_S)
