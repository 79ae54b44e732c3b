"""What runs inside the allocation: start the trainer, relay preemption, mark the run finished.

submitit runs `TrainingJob()` once per node. It starts the training entry point on the
resolved config in the run directory:

- one process (1 GPU, or CPU_PROCS=1): `python -m lib.train_<kind> --config <run dir>/config.yaml`
- one node, N processes: `python -m torch.distributed.run --standalone --nproc_per_node=N -m ...` (torchrun)
- several nodes: torchrun on every node with a c10d rendezvous on the first node of the job

Under torchrun the workers run in sessions of their own: the agent relays SIGUSR1 to them, and
kills those still running after its shutdown timeout, which is set to the same grace that
`checkpoint()` waits (derived from slurm.signal_delay_s, jobs.time_limits). A trainer that
exited 0 is never requeued, however late the signal comes.

On submitit's timeout / preemption signal, `checkpoint()` sends SIGUSR1 to the trainer's process
group (the trainer writes checkpoints/last.pt and exits with status 75), waits for it and returns
a fresh copy of this job, which submitit requeues; the requeued job resumes from last.pt
(checkpoint.auto_resume is true in the resolved config). The trainer itself writes `<run dir>/DONE`
when it finishes.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from lib.io.exit_codes import PREEMPTED_EXIT_CODE

log = logging.getLogger(__name__)

ENTRY_MODULES = {"mae": "lib.train_mae", "reg": "lib.train_regressor", "inp": "lib.train_inpainter"}
_POLL_S = 0.5
_RENDEZVOUS_BASE_PORT = 29500
# torchrun relays these to its workers; SIGUSR1 is added so that the preemption request reaches them.
_TORCHRUN_RELAYED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# submitit's timeout / preemption signal (sbatch --signal=USR2@signal_delay_s).
_CHECKPOINT_SIGNAL = signal.SIGUSR2


@dataclass(frozen=True)
class LaunchSpec:
    """How to start the trainer of one run on each node of its allocation."""

    entry: str
    """Python module to run (lib.train_mae, lib.train_regressor, lib.train_inpainter)."""
    config: str
    """Absolute path of the resolved config in the run directory."""
    workdir: str
    """Working directory of the submission (relative paths in the config are relative to it)."""
    procs_per_node: int
    """Training processes per node: GPUs per node, or CPU processes."""
    grace_s: int
    """How long the trainer may take to write last.pt and exit once asked: checkpoint() waits this long,
    and so does torchrun's agent before it kills its workers (jobs.time_limits.checkpoint_grace_s)."""
    nodes: int = 1
    cpu: bool = False
    """CPU-only: hide GPUs from the trainer (it then uses gloo)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.config).parent


def launch_command(spec: LaunchSpec, node_rank: int = 0, first_host: str = "localhost",
                   job_id: str = "0", python: str = sys.executable) -> list[str]:
    """The command that starts the trainer on node `node_rank` of the job."""
    target = ["-m", spec.entry, "--config", spec.config]
    if spec.nodes == 1 and spec.procs_per_node == 1:
        return [python, *target]
    torchrun = [python, "-m", "torch.distributed.run", f"--nproc_per_node={spec.procs_per_node}"]
    if spec.nodes == 1:
        return [*torchrun, "--standalone", *target]
    port = _RENDEZVOUS_BASE_PORT + int("".join(filter(str.isdigit, job_id)) or 0) % 1000
    # The first node hosts the rendezvous store: said explicitly, as torchrun's guess from host names fails
    # where node names are aliases (and where several nodes share one machine, as in the test cluster).
    return [*torchrun, f"--nnodes={spec.nodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={first_host}:{port}", f"--rdzv_id={job_id}",
            f"--rdzv_conf=is_host={int(node_rank == 0)}", *target]


def launch_environment(spec: LaunchSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the trainer: unbuffered output, GPUs hidden for CPU jobs; under torchrun, SIGUSR1
    relayed to the workers and the agent's shutdown timeout set to the grace."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if spec.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if spec.nodes * spec.procs_per_node > 1:
        # PET_SIGNALS_TO_HANDLE is torchrun's --signals_to_handle, from which recent versions overwrite
        # TORCHELASTIC_SIGNALS_TO_HANDLE; older versions read the latter directly.
        env["PET_SIGNALS_TO_HANDLE"] = env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = _TORCHRUN_RELAYED_SIGNALS
        env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(spec.grace_s)
    return env


def _ignore_job_signals() -> None:
    """In the trainer before exec: ignore submitit's signal (SLURM sends it to every process of the
    step; only the submitit process must act on it) and SIGUSR1 until the trainer installs its handler."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(_CHECKPOINT_SIGNAL, signal.SIG_IGN)


def start_trainer(spec: LaunchSpec, command: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start `command` as the trainer of `spec`: leader of its own session (signalled as a process group),
    the job's signals ignored until it installs its own handlers."""
    return subprocess.Popen(command, cwd=spec.workdir, env=launch_environment(spec), start_new_session=True,
                            preexec_fn=_ignore_job_signals, **popen_kwargs)


class _TrainerFinished(Exception):
    """Raised by checkpoint() (inside submitit's signal handler) when the trainer has exited 0: the job
    ends as a success instead of being requeued."""


class TrainingJob(Checkpointable):
    """The submitit callable of one run: start the trainer, wait, requeue on preemption."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_process": None}

    def __call__(self) -> dict[str, Any]:
        """Run the trainer on this node; returns {"run_dir", "job_id"} after it exits 0."""
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        job_env = submitit.JobEnvironment()
        command = launch_command(self.spec, job_env.node, job_env.hostnames[0], job_env.job_id)
        log.info("job %s node %d: %s (in %s); grace after a checkpoint request %d s", job_env.job_id, job_env.node,
                 " ".join(command), self.spec.workdir, self.spec.grace_s)
        self._process = start_trainer(self.spec, command)
        code = self._wait_for_trainer()
        if code == PREEMPTED_EXIT_CODE:
            raise RuntimeError(f"the trainer stopped on a preemption signal after writing its last.pt; resubmit "
                               f"with FORCE=1 to continue {self.spec.run_dir}")
        if code != 0:
            raise RuntimeError(f"the trainer exited with status {code}; see {job_env.paths.stderr}")
        return {"run_dir": str(self.spec.run_dir), "job_id": job_env.job_id}

    def _wait_for_trainer(self) -> int:
        """The trainer's exit status; once it exited 0, checkpoint signals are ignored (nothing to requeue)."""
        try:
            try:
                while (code := self._process.poll()) is None:
                    time.sleep(_POLL_S)
            finally:
                self._stop_trainer()
            if code == 0:
                signal.signal(_CHECKPOINT_SIGNAL, signal.SIG_IGN)
        except _TrainerFinished:
            code = 0
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Ask the trainer to write last.pt and stop (SIGUSR1), wait for it, and hand submitit a fresh job;
        a trainer that exited 0 (before or while it was asked) ends the job instead."""
        process = self._process
        if process is not None and process.poll() is None:
            log.warning("preemption / time limit: asking the trainer (pid %d) to checkpoint", process.pid)
            self._signal_trainer(signal.SIGUSR1)
            deadline = time.monotonic() + self.spec.grace_s
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(_POLL_S)
        if process is not None and process.poll() == 0:
            log.warning("the trainer finished (exit status 0) before the checkpoint signal was handled: not requeueing")
            raise _TrainerFinished
        log.info("trainer exit status %s; requeueing", None if process is None else process.poll())
        return DelayedSubmission(TrainingJob(self.spec))

    def _signal_trainer(self, signum: int) -> None:
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass

    def _stop_trainer(self) -> None:
        """Leave no trainer behind when this process is interrupted (SIGTERM lets it write last.pt)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._signal_trainer(signal.SIGTERM)
        deadline = time.monotonic() + self.spec.grace_s
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if self._process.poll() is None:
            self._signal_trainer(signal.SIGKILL)
