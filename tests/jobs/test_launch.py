"""Preemption timing under a real torchrun: one knob (slurm.signal_delay_s) sets the job wrapper's wait and
the agent's shutdown timeout, and the checkpoint request reaches workers that run in their own sessions."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from jobs.knobs import JobError, JobOptions
from jobs.launch import LaunchSpec, launch_command, launch_environment, start_trainer
from jobs.plans import RunPlan, launch_spec
from jobs.time_limits import check_time_limit, checkpoint_grace_s
from lib.config import MAEConfig

REPO = Path(__file__).resolve().parents[2]
STANDIN = "tests.slurm.standin_trainer"


def test_grace_and_agent_timeout_follow_the_signal_delay():
    cfg = MAEConfig(slurm={"signal_delay_s": 120}, checkpoint={"run_name": "r"})
    spec = launch_spec(RunPlan("mae", cfg, "c.yaml"), JobOptions(cpu_procs=2))
    assert spec.grace_s == checkpoint_grace_s(120) == 105
    assert launch_environment(spec, base={})["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "105"
    assert checkpoint_grace_s(5) == 10  # never less than the minimum, however short the delay


@pytest.mark.parametrize("time_limit, delay, accepted", [
    ("3", 300, False), ("00:09:59", 300, False), ("00:10:00", 300, True), ("0", 300, True), ("1", 10, False),
    ("2", 10, True), ("24:00:00", 300, True),
])
def test_time_limit_must_leave_training_before_the_signal(time_limit, delay, accepted):
    if accepted:
        check_time_limit(time_limit, delay, "run 'r'")
        return
    with pytest.raises(JobError, match=rf"run 'r': TIME \(slurm.time\) = {time_limit} .* too short .*"
                                       rf"signal_delay_s = {delay}.*set TIME to at least"):
        check_time_limit(time_limit, delay, "run 'r'")


def test_time_limit_message_offers_the_largest_delay_that_fits():
    with pytest.raises(JobError, match=r"at least 00:10:00, or lower the delay \(--set slurm.signal_delay_s=90 "):
        check_time_limit("3", 300, "run 'r'")


def _wait_for(predicate, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _kill_workers(log: str) -> None:
    """Kill stand-in workers an agent may have left behind (they run in sessions of their own)."""
    for pid in re.findall(r"standin rank \d+ pid (\d+)", log):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


TORCHRUN_DEFAULT_SHUTDOWN_S = 30


def test_torchrun_relays_the_request_and_its_agent_waits_exactly_the_grace(tmp_path, monkeypatch):
    """The wrapper signals the trainer's process group; torchrun's workers live in sessions of their own, so
    only the agent can relay the request, and it kills workers that are still stopping after the grace
    (derived from signal_delay_s = 25 s: 10 s here, not torchrun's default of 30 s)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checkpoint": {"save_dir": str(tmp_path), "run_name": "run"},
                                      "training": {"epochs": 100000}}))
    grace_s = checkpoint_grace_s(25)
    spec = LaunchSpec(entry=STANDIN, config=str(config), workdir=str(REPO), procs_per_node=2, grace_s=grace_s,
                      cpu=True)
    monkeypatch.setenv("STANDIN_STEP_S", "0.05")
    monkeypatch.setenv("STANDIN_STOP_S", str(grace_s + 5))
    log_path = tmp_path / "torchrun.log"
    with log_path.open("w") as log_file:
        trainer = start_trainer(spec, launch_command(spec), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: log_path.read_text().count("started at step") == 2, "both workers to start")
        os.killpg(trainer.pid, signal.SIGUSR1)
        asked = time.monotonic()
        trainer.wait(timeout=grace_s + 20)
        stopped_after = time.monotonic() - asked
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
        _kill_workers(log_path.read_text())
    log = log_path.read_text()
    assert log.count("standin: signal 10") == 2, log[-3000:]  # both workers got SIGUSR1 through the agent
    assert "wrote last.pt" not in log, log[-3000:]  # still stopping when the agent's grace ran out
    # the agent's own default would be 30 s; the upper bound leaves room for a loaded machine
    assert grace_s - 1 < stopped_after < TORCHRUN_DEFAULT_SHUTDOWN_S - 5, (stopped_after, log[-3000:])
