"""Guards of a run directory: what must hold before a submission writes into it, and its claim meanwhile.

Validation (dry runs too; nothing is written):
- a run whose recorded job (jobs.json) is still pending or running in SLURM is refused, FORCE or not:
  a second job would train in the same run directory;
- an existing run directory needs FORCE, and then the new resolved config must agree with the run's
  own config.yaml in every key that gives its weights their meaning (lib.config.compatibility);
- the run directory, or the folder it would be created in, must be writable.

Submission (`claim_run_dirs`): each run directory is created (exclusively unless FORCE, so that of
several submissions racing for one new run only one gets it) and locked (flock on submit.lock while
the job is submitted and recorded, or while a local run lasts); the live-job check is repeated under
the lock, and only then are logs/ and the resolved config written.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from jobs.executors import ENDED_STATES, queue_states
from jobs.knobs import JobError, JobOptions
from jobs.plans import RunPlan, check_inputs
from jobs.run_paths import CHECKPOINT_DIR, RunPaths
from jobs.time_limits import check_time_limit
from lib.config import ConfigError, load_resolved, to_dict, write_resolved
from lib.config.compatibility import describe_differences, weight_defining_differences


def live_jobs(layout: RunPaths) -> dict[str, str]:
    """{job id: state} of the run's recorded SLURM jobs that squeue shows as not ended (PENDING, RUNNING, ...)."""
    job_ids = [record["job_id"] for record in layout.read_jobs() if record["executor"] == "slurm"]
    states = queue_states(job_ids)
    return {job_id: states[job_id][0] for job_id in job_ids
            if job_id in states and states[job_id][0] not in ENDED_STATES}


def _refuse_live_jobs(plan: RunPlan) -> None:
    live = live_jobs(plan.layout)
    if not live:
        return
    job_id, state = next(iter(live.items()))
    others = f" (and {', '.join(sorted(live)[1:])})" if len(live) > 1 else ""
    raise JobError(f"run {plan.run_name!r} still has job {job_id}{others} {state} in SLURM (recorded in "
                   f"{plan.layout.jobs}); a second job would train in the same run directory. Wait for it to end "
                   f"(python -m jobs.submit status {plan.run_name}) or cancel it (scancel {' '.join(live)}), then "
                   "submit again; FORCE=1 does not override this")


def _check_writable(plan: RunPlan) -> None:
    """Raise JobError unless the run directory (or the nearest existing folder above it) can be written."""
    layout = plan.layout
    nearest = next(path for path in (layout.run_dir, *layout.run_dir.parents) if path.exists())
    folders = [nearest, *(path for path in (layout.logs, layout.run_dir / CHECKPOINT_DIR) if path.is_dir())]
    for folder in folders:
        if not folder.is_dir():
            raise JobError(f"run {plan.run_name!r}: {folder} is a file, not a folder; set checkpoint.save_dir "
                           "(--set checkpoint.save_dir=DIR) or RUN_NAME to a path where a run folder can be created")
        if not os.access(folder, os.W_OK | os.X_OK):
            why = "read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "permission denied"
            raise JobError(f"run {plan.run_name!r}: cannot write in {folder} ({why}); set checkpoint.save_dir "
                           "(--set checkpoint.save_dir=DIR) to a folder you can write to")


def _check_compatible(plan: RunPlan) -> None:
    """Raise JobError when the run's existing config.yaml gives its weights another meaning than plan.cfg."""
    layout = plan.layout
    if not layout.config.is_file():
        return
    try:
        existing = load_resolved(layout.config, type(plan.cfg))
    except ConfigError as err:
        raise JobError(f"run {plan.run_name!r}: FORCE=1 cannot check the run's own config, which does not load as a "
                       f"{plan.kind} config: {err}; choose another RUN_NAME") from None
    differences = weight_defining_differences(to_dict(existing), to_dict(plan.cfg))
    if differences:
        raise JobError(f"run {plan.run_name!r}: FORCE=1 would continue the weights in {layout.run_dir} under a config "
                       f"that changes what they mean ({describe_differences(differences)}); use the run's own "
                       f"values (its {layout.config}) or choose another RUN_NAME for a new run")


def check_run_dir(plan: RunPlan, force: bool) -> None:
    """Validate the run directory of `plan` (nothing is written); raises JobError saying what to change."""
    layout = plan.layout
    _refuse_live_jobs(plan)
    if layout.run_dir.exists():
        if not force and layout.done.exists():
            raise JobError(f"run {plan.run_name!r} already finished ({layout.done} exists); choose another "
                           "RUN_NAME, or set FORCE=1 (--force) to run it again from its last checkpoint")
        if not force:
            raise JobError(f"run directory {layout.run_dir} already exists; choose another RUN_NAME, or set FORCE=1 "
                           "(--force) to submit into it (it continues from its checkpoints/last.pt if there is one)")
        _check_compatible(plan)
    _check_writable(plan)


def validate_plans(plans: Sequence[RunPlan], options: JobOptions) -> None:
    """Check inputs, time limit and run directory of every plan; run directories must be distinct."""
    seen: dict[Path, str] = {}
    for plan in plans:
        run_dir = plan.layout.run_dir.resolve()
        if run_dir in seen:
            raise JobError(f"runs {seen[run_dir]!r} and {plan.run_name!r} would share the run directory "
                           f"{plan.layout.run_dir}; give them different run names")
        seen[run_dir] = plan.run_name
        check_inputs(plan)
        check_time_limit(plan.cfg.slurm.time, plan.cfg.slurm.signal_delay_s, f"run {plan.run_name!r}")
        check_run_dir(plan, options.force)


def _prepare(plan: RunPlan) -> None:
    """Create logs/, write the resolved config; a forced re-run loses its DONE marker."""
    layout = plan.layout
    layout.logs.mkdir(exist_ok=True)
    write_resolved(plan.cfg, layout.config)
    layout.done.unlink(missing_ok=True)


@contextmanager
def held_submit_lock(layout: RunPaths, what: str, follow: str) -> Iterator[None]:
    """Hold layout.submit_lock (flock) inside the block; JobError naming `what` is being submitted and how to
    `follow` it when another submission holds the lock."""
    lock = os.open(layout.submit_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"another submission of {what} is in progress (it holds {layout.submit_lock}); wait for "
                           f"it and check {follow}") from None
        yield
    finally:
        os.close(lock)


@contextmanager
def _claim(plan: RunPlan, force: bool) -> Iterator[None]:
    layout = plan.layout
    try:
        layout.run_dir.parent.mkdir(parents=True, exist_ok=True)
        layout.run_dir.mkdir(exist_ok=force)
    except FileExistsError:
        raise JobError(f"run directory {layout.run_dir} was just created by another submission; choose another "
                       "RUN_NAME, or check that submission (python -m jobs.submit status "
                       f"{plan.run_name})") from None
    except OSError as err:
        raise JobError(f"cannot create the run directory {layout.run_dir} ({err.strerror}); set checkpoint.save_dir "
                       "(--set checkpoint.save_dir=DIR) to a folder you can write to") from None
    with held_submit_lock(layout, f"run {plan.run_name!r}", f"python -m jobs.submit status {plan.run_name}"):
        _refuse_live_jobs(plan)
        _prepare(plan)
        yield


@contextmanager
def claim_run_dirs(plans: Sequence[RunPlan], force: bool) -> Iterator[None]:
    """Create, lock, re-check and prepare the run directory of every plan; keep them locked inside the block."""
    with ExitStack() as stack:
        for plan in plans:
            stack.enter_context(_claim(plan, force))
        yield
