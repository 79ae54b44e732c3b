"""Two-node training through the job suite on the real two-node cluster of tests/slurm/cluster.sh: an MAE
run with NODES=2 CPU_PROCS=1 (torchrun's c10d rendezvous across the nodes) runs to the end, and the same
run requeued mid-epoch resumes and ends at the same step with the same weights, bit for bit."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from jobs.executors import wait_slurm
from jobs.submit import main
from tests.jobs.slurm_helpers import REPO, WAIT_S, job_state, records, running_until, wait_for

pytestmark = pytest.mark.slurm(nodes=2)

EPOCHS, STEPS = 1, 8
"""120 events in 3 files of 4 chunks, at least 40 per rank, in batches of 4: 8 of the 10 full batches used; one
epoch, so that any stop before the end is mid-epoch."""


def _submit(runs: Path, run_name: str, shard_dir: Path) -> str:
    overrides = [f"data.train_path={shard_dir}", f"data.val_path={shard_dir}", f"checkpoint.save_dir={runs}",
                 "data.num_workers=0", "data.batch_size=4", f"data.steps_per_epoch={STEPS}",
                 "data.max_val_events=16", f"training.epochs={EPOCHS}", "training.num_val_predictions=0",
                 "checkpoint.save_every_steps=1"]
    sets = [arg for item in overrides for arg in ("--set", item)]
    env = {"EXECUTOR": "slurm", "CPU_PROCS": "1", "NODES": "2", "RUN_NAME": run_name}
    assert main(["mae", "config/mae/mae_demo.yaml", *sets], env) == 0
    return records(runs / run_name)[0]["job_id"]


@pytest.fixture(scope="module")
def two_node_runs(tmp_path_factory, shard_dir):
    """An uninterrupted two-node run and one requeued after its first checkpoint, side by side (each node has
    room for both); returns their run directories, job ids and the step the requeued one stopped at."""
    from lib.engine.checkpoint import load_checkpoint

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        base = tmp_path_factory.mktemp("two_node")
        whole_id = _submit(base / "whole", "mae_2n", shard_dir)
        requeued_id = _submit(base / "requeued", "mae_2n", shard_dir)
    requeued_dir = base / "requeued" / "mae_2n"
    last = requeued_dir / "checkpoints" / "last.pt"
    wait_for(running_until(requeued_id, requeued_dir, last), "the first last.pt", poll_s=0.05)
    subprocess.run(["scancel", "--signal=USR2", requeued_id], check=True)
    wait_for(lambda: job_state(requeued_id) == "PENDING", "the requeue")
    stopped_at = load_checkpoint(last)["global_step"]
    states = wait_slurm([whole_id, requeued_id], timeout_s=2 * WAIT_S)
    return {"whole": (base / "whole" / "mae_2n", whole_id), "requeued": (requeued_dir, requeued_id),
            "stopped_at": stopped_at, "states": states}


def test_two_node_run_completes_through_the_job_suite(two_node_runs):
    run_dir, job_id = two_node_runs["whole"]
    assert two_node_runs["states"][job_id] == "COMPLETED"
    joined = []
    for node in (0, 1):
        log = (run_dir / "logs" / f"{job_id}_{node}_log.err").read_text()
        assert f"node {node}: " in log and "--nnodes=2" in log and f"--node_rank={node}" in log
        joined += re.findall(r"rank (\d)/2 joined the gloo process group", log)  # c10d ranks by arrival, not node
    assert sorted(joined) == ["0", "1"]
    history = json.loads((run_dir / "training_history.json").read_text())
    assert [record["global_step"] for record in history] == [STEPS * epoch for epoch in range(1, EPOCHS + 1)]
    assert (run_dir / "DONE").exists() and (run_dir / "encoder_best.pt").exists()


def test_two_node_run_requeued_mid_epoch_ends_bit_exact(two_node_runs):
    from lib.engine.checkpoint import load_checkpoint

    run_dir, job_id = two_node_runs["requeued"]
    assert two_node_runs["states"][job_id] == "COMPLETED"
    assert 0 < two_node_runs["stopped_at"] < EPOCHS * STEPS and two_node_runs["stopped_at"] % STEPS, (
        f"stopped at step {two_node_runs['stopped_at']}, not mid-epoch")
    assert "resumed from" in (run_dir / "train.log").read_text() and (run_dir / "DONE").exists()
    requeued = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    whole = load_checkpoint(two_node_runs["whole"][0] / "checkpoints" / "last.pt")
    assert requeued["global_step"] == whole["global_step"] == EPOCHS * STEPS
    assert requeued["model"].keys() == whole["model"].keys()
    different = [name for name, tensor in whole["model"].items() if not tensor.equal(requeued["model"][name])]
    assert not different, f"weights differ after the requeue: {different[:5]}"
