"""Submit a prediction array: `python -m jobs.submit predict MODEL INPUT...` (jobs/run_predict.sh).

SLURM: one job array over the plan's groups of input files (jobs.predict_plans), each task running
`python -m lib.predict --out-dir DIR --no-summary` on its files, and a merge job with afterok on the
array (`python -m lib.evaluation.prediction_jobs merge DIR`: manifest.json, summary.json, exit 1 when
inputs failed). A task stopped by its time limit or a preemption is requeued and skips the inputs it
finished. Local executor: the tasks one after the other on this machine, then the merge. The
submission writes DIR/plan.json (under DIR/submit.lock) and records its jobs in DIR/jobs.json; it is
refused while jobs of an earlier submission into DIR are pending or running.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from jobs import executors
from jobs.knobs import PREDICT_KNOBS, JobError, PredictOptions, add_knob_flags, resolve_knobs
from jobs.predict_plans import MODEL_FORMATS, PredictionPlan, plan_predictions
from jobs.run_guard import held_submit_lock, live_jobs
from jobs.time_limits import local_timeout_min
from lib.io.prediction_records import PLAN_NAME, SUMMARY_NAME, read_json, write_json

log = logging.getLogger(__name__)

_POLL_S = 0.5
_STOP_GRACE_S = 10
MERGE_CPUS = 1
HEADLINE = ("E_rel_w68_pct", "u_w68", "v_w68", "w_w68", "t_w68", "opening_68_deg")


def _ignore_checkpoint_signal() -> None:
    """In the command before exec: SLURM sends submitit's USR2 to every process of the job; only submitit acts."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class CommandJob(Checkpointable):
    """The submitit callable of one job of a prediction array: `python ARGUMENTS` (a lib.predict task or the
    merge step) run to its end; on the time-limit / preemption signal it is stopped and requeued, and the
    next attempt skips the inputs already predicted."""

    def __init__(self, arguments: list[str], workdir: str, cpu_threads: int | None) -> None:
        self.arguments, self.workdir, self.cpu_threads = arguments, workdir, cpu_threads
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_process": None}

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.cpu_threads is not None:
            env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(self.cpu_threads))
        return env

    def __call__(self) -> int:
        """Run the command; raises RuntimeError when it exits non-zero."""
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        command = [sys.executable, *self.arguments]
        log.info("running %s (in %s)", " ".join(command), self.workdir)
        self._process = subprocess.Popen(command, cwd=self.workdir, env=self._environment(),
                                         preexec_fn=_ignore_checkpoint_signal)
        try:
            while (code := self._process.poll()) is None:
                time.sleep(_POLL_S)
        finally:
            self._stop()
        if code != 0:
            raise RuntimeError(f"python {' '.join(self.arguments[:2])} exited with status {code} (its log is above)")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Stop the command and hand submitit a fresh copy of this job to requeue."""
        log.warning("time limit / preemption: stopping the command and requeueing")
        self._stop()
        return DelayedSubmission(CommandJob(self.arguments, self.workdir, self.cpu_threads))

    def _stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()


# ---------------------------------------------------------------- parameters and scripts


def task_parameters(plan: PredictionPlan, options: PredictOptions) -> dict[str, Any]:
    """SlurmExecutor parameters of an array task: one GPU, or CPU_PROCS CPUs."""
    cpu = options.cpu_procs is not None
    cpus = options.cpu_procs if cpu else plan.slurm.cpus_per_gpu
    return executors.job_parameters(plan.slurm, plan.job_name, cpus, 0 if cpu else 1)


def merge_parameters(plan: PredictionPlan, depends_on: str | None) -> dict[str, Any]:
    """SlurmExecutor parameters of the merge job: one CPU, afterok on the array `depends_on`."""
    return executors.job_parameters(plan.slurm, f"{plan.job_name}_merge", MERGE_CPUS, depends_on=depends_on)


def _jobs(plan: PredictionPlan, options: PredictOptions) -> tuple[list[CommandJob], CommandJob]:
    workdir, threads = os.getcwd(), options.cpu_procs
    cpu = threads is not None
    tasks = [CommandJob(plan.task_arguments(index, cpu), workdir, threads) for index in range(len(plan.groups))]
    return tasks, CommandJob(plan.merge_arguments(), workdir, MERGE_CPUS)


def dry_run_report(plan: PredictionPlan, options: PredictOptions, executor: str) -> str:
    """What a real submission would do: the files per task, the commands and (SLURM) the checked sbatch scripts."""
    tasks, merge = _jobs(plan, options)
    out = [f"DRY RUN (executor: {executor}; nothing is submitted and no directory is created)",
           f"model: {plan.model} ({plan.model_format}, sha256 {plan.model_sha256[:16]}...)",
           f"predictions: {plan.out_dir}",
           f"inputs: {len(plan.outputs)} files, {len(plan.skipped)} predicted completely already (skipped); "
           f"{sum(map(len, plan.groups))} to predict in {len(plan.groups)} task(s) of up to {options.files_per_task}"]
    for index, group in enumerate(plan.groups):
        out.append(f"  task {index}: {' '.join(Path(path).name for path in group)}")
    out += [f"task 0 runs (in {tasks[0].workdir}): python {' '.join(tasks[0].arguments)}",
            f"then the merge (afterok): python {' '.join(merge.arguments)}"]
    if executor == "slurm":
        logs = plan.layout.logs
        array = executors.render_sbatch(logs, task_parameters(plan, options), array_size=len(tasks))
        checks = [("array", array, array),  # the merge job is tested without its dependency (no array yet)
                  ("merge job", executors.render_sbatch(logs, merge_parameters(plan, "<array job id>")),
                   executors.render_sbatch(logs, merge_parameters(plan, None)))]
        for what, script, tested in checks:
            out += [f"sbatch script of the {what}:", *("    | " + line for line in script.splitlines()),
                    f"sbatch --test-only: {executors.sbatch_test_only(tested, f'the {what}')}"]
    return "\n".join(out)


def check_sbatch(plan: PredictionPlan, options: PredictOptions) -> None:
    """`sbatch --test-only` on the array's script (raises JobError with sbatch's answer)."""
    script = executors.render_sbatch(plan.layout.logs, task_parameters(plan, options), array_size=len(plan.groups))
    executors.sbatch_test_only(script, "the prediction array")


# ---------------------------------------------------------------- submission


def refuse_live_jobs(plan: PredictionPlan) -> None:
    """JobError while jobs of an earlier submission into the prediction directory are pending or running."""
    live = live_jobs(plan.layout)
    if live:
        raise JobError(f"{plan.out_dir} still has job(s) {', '.join(sorted(live))} of an earlier submission in SLURM "
                       f"({', '.join(sorted(set(live.values())))}); wait for them or scancel them, then submit again")


def _record(plan: PredictionPlan, job_id: str, kind: str, executor: str, after: str | None = None) -> None:
    plan.layout.add_job({"job_id": job_id, "kind": kind, "executor": executor, "logs": str(plan.layout.logs),
                         "after": after, "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def _claim(plan: PredictionPlan) -> None:
    """Create the prediction directory and its logs/, write plan.json (call with the submit lock held)."""
    refuse_live_jobs(plan)
    plan.layout.logs.mkdir(parents=True, exist_ok=True)
    write_json(plan.out_dir / PLAN_NAME, plan.to_json())


def submit_slurm(plan: PredictionPlan, options: PredictOptions) -> tuple[list[str], str]:
    """Submit the array and the merge job (afterok); returns (task job ids, merge job id)."""
    tasks, merge = _jobs(plan, options)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    with held_submit_lock(plan.layout, f"predictions into {plan.out_dir}", f"squeue and {plan.layout.jobs}"):
        _claim(plan)
        executor = executors.slurm_executor(plan.layout.logs, task_parameters(plan, options))
        with executor.batch():
            submitted = [executor.submit(task) for task in tasks]
        task_ids = [job.job_id for job in submitted]
        array_id = task_ids[0].split("_")[0]
        for job_id in task_ids:
            _record(plan, job_id, "predict", "slurm")
        merge_id = executors.slurm_executor(plan.layout.logs, merge_parameters(plan, array_id)).submit(merge).job_id
        _record(plan, merge_id, "merge", "slurm", after=array_id)
    return task_ids, merge_id


def run_local(plan: PredictionPlan, options: PredictOptions) -> int:
    """Run the tasks one after the other on this machine, then the merge when every task succeeded; returns
    0 when the merge succeeded, else 1 (a task failed, or the merge step found failed inputs)."""
    from submitit import LocalExecutor

    tasks, merge = _jobs(plan, options)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    params = {"timeout_min": local_timeout_min(plan.slurm.time), "tasks_per_node": 1,
              "gpus_per_node": 0 if options.cpu_procs else 1, "signal_delay_s": plan.slurm.signal_delay_s}

    def run(job: CommandJob, kind: str) -> Any:
        executor = LocalExecutor(folder=plan.layout.logs)
        executor.update_parameters(**params)
        local = executor.submit(job)
        _record(plan, local.job_id, kind, "local")
        local.wait()
        return local

    with held_submit_lock(plan.layout, f"predictions into {plan.out_dir}", str(plan.layout.jobs)):
        _claim(plan)
        failed = [f"{index} ({local.paths.stderr})" for index, local in enumerate(run(t, "predict") for t in tasks)
                  if local.exception() is not None]
        if failed:
            print(f"task(s) {', '.join(failed)} failed; the merge did not run; submit again to predict the files "
                  "still missing", flush=True)
            return 1
        local = run(merge, "merge")
    if local.exception() is not None:
        print(f"the merge step exited non-zero: input files failed, named below (log: {local.paths.stderr})",
              flush=True)
        return 1
    return 0


def summary_lines(out_dir: Path) -> list[str]:
    """The headline of out_dir/summary.json: files, events, failures, resolutions."""
    path = out_dir / SUMMARY_NAME
    if not path.is_file():
        return [f"no {SUMMARY_NAME} in {out_dir} (the merge step did not run)"]
    summary = read_json(path)
    lines = [f"predictions in {out_dir}: {summary['files']} input files, {summary['done']} predicted now, "
             f"{summary['skipped']} skipped as complete, {len(summary['failures'])} failed; {summary['events']} events"]
    lines += [f"  failed: {failure['input']}: {failure['error']}" for failure in summary["failures"]]
    resolutions = (summary.get("resolutions") or {}).get("all", {})
    shown = [f"{key} {resolutions[key]:.4g}" for key in HEADLINE if key in resolutions]
    if shown:
        lines.append("  resolutions over all files: " + ", ".join(shown))
    return lines


# ---------------------------------------------------------------- the sub-command

_PASSED_ON = {"tree": "--tree", "npho_branch": "--npho-branch", "time_branch": "--time-branch",
              "batch_size": "--batch_size"}
"""Flags of the sub-command that every task passes on to lib.predict."""


def add_predict_parser(commands: Any) -> None:
    """The `predict` sub-command of jobs.submit."""
    parser = commands.add_parser("predict", help="predictions of a regressor for many files, as one job array")
    parser.add_argument("model", help="regressor checkpoint (.pt) or ONNX export (.onnx)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="data files, folders, globs or list files (.txt)")
    parser.add_argument("--format", choices=MODEL_FORMATS, help="what MODEL is [default: onnx for .onnx files]")
    parser.add_argument("--tree", help="TTree / RNTuple name [default: the model's run's data.tree_name]")
    parser.add_argument("--npho-branch", help="npho branch [default: the run's]")
    parser.add_argument("--time-branch", help="time branch [default: the run's]")
    parser.add_argument("--batch-size", type=int, help="events per forward pass [lib.predict's default]")
    add_knob_flags(parser, PREDICT_KNOBS)


def _submit_and_wait(plan: PredictionPlan, options: PredictOptions) -> int:
    check_sbatch(plan, options)
    task_ids, merge_id = submit_slurm(plan, options)
    print(f"submitted prediction array {task_ids[0].split('_')[0]} ({len(task_ids)} task(s) over "
          f"{sum(map(len, plan.groups))} files; {len(plan.skipped)} skipped as complete) and merge job {merge_id} "
          f"(afterok); logs: {plan.layout.logs}", flush=True)
    if not options.wait:
        print(f"the summary will be in {plan.out_dir / SUMMARY_NAME}")
        return 0
    states = executors.wait_slurm([*task_ids, merge_id])
    unfinished = {job_id: state for job_id, state in states.items() if state != "COMPLETED"}
    if merge_id in unfinished and set(unfinished) != {merge_id}:
        named = ", ".join(f"{job_id} {state}" for job_id, state in unfinished.items() if job_id != merge_id)
        print(f"task(s) {named}: the merge did not run; submit again to predict the files still missing")
        return 1
    print("\n".join(summary_lines(plan.out_dir)))
    return 0 if not unfinished else 1


def run_predict(args: Any, env: Mapping[str, str]) -> int:
    """Plan, validate, then dry-run, run locally or submit the prediction array; returns the exit status."""
    knobs = resolve_knobs(vars(args), env, PREDICT_KNOBS, PredictOptions)
    options: PredictOptions = knobs.options  # type: ignore[assignment]
    flags = tuple(item for key, flag in _PASSED_ON.items() if getattr(args, key) is not None
                  for item in (flag, str(getattr(args, key))))
    plan = plan_predictions(args.model, args.inputs, args.format, knobs, flags)
    executor = executors.choose_executor(options.executor)
    refuse_live_jobs(plan)
    if not plan.groups:
        print(f"all {len(plan.outputs)} input files are predicted completely by this model in {plan.out_dir}; "
              "nothing to submit")
        return 0
    if options.dry_run:
        print(dry_run_report(plan, options, executor))
        return 0
    if executor == "slurm":
        return _submit_and_wait(plan, options)
    print(f"running {len(plan.groups)} prediction task(s) here, then the merge; logs in {plan.layout.logs}", flush=True)
    code = run_local(plan, options)
    print("\n".join(summary_lines(plan.out_dir)))
    return code
