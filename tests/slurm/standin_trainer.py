"""Stand-in for lib.train_mae / lib.train_regressor in the job-suite tests (no torch, runs in ~1 s).

`python -m tests.slurm.standin_trainer --config RUN_DIR/config.yaml` follows the trainer's
contract: run directory from checkpoint.save_dir / run_name, training.epochs steps of
STANDIN_STEP_S seconds, checkpoints/last.pt (JSON, written atomically) after every step and
resumed from, SIGUSR1 / SIGTERM -> write last.pt and exit 75, success: training_history.json
(and encoder_best.pt for an MAE config, metrics.json for a regressor config: E_rel_w68_pct = 100 /
sqrt(data.max_events), x 0.8 with a pretrained encoder, + 0.1 x (training.seed mod 10)), then the DONE
marker, and exit 0. Every start appends the step it starts from to starts.txt. Under torchrun (RANK set) only rank 0 writes files.

Faults on request: STANDIN_FAIL=1 exits 3; STANDIN_STOP_S=S takes S seconds between a signal
and writing last.pt (a slow checkpoint); STANDIN_IGNORE_SIGNALS=1 installs no handler (a
trainer still starting up when the signal comes).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml

from lib.io.atomic import atomic_write_text
from lib.io.done_marker import write_done_marker
from lib.io.exit_codes import PREEMPTED_EXIT_CODE


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    run_dir = Path(cfg["checkpoint"]["save_dir"]) / cfg["checkpoint"]["run_name"]
    writes = os.environ.get("RANK", "0") == "0"
    last = run_dir / "checkpoints" / "last.pt"
    stop = []
    if os.environ.get("STANDIN_IGNORE_SIGNALS") != "1":
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.append(signum))
    step = json.loads(last.read_text(encoding="utf-8"))["step"] if last.exists() else 0
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "starts.txt").open("a", encoding="utf-8") as handle:
            handle.write(f"{step}\n")
    print(f"standin rank {os.environ.get('RANK', '0')} pid {os.getpid()}: started at step {step}", file=sys.stderr,
          flush=True)
    if os.environ.get("STANDIN_FAIL") == "1":
        print("standin: failing on purpose", file=sys.stderr)
        return 3
    step_s = float(os.environ.get("STANDIN_STEP_S", "0.02"))
    total = cfg["training"]["epochs"]
    while step < total:
        time.sleep(step_s)
        step += 1
        if stop:
            print(f"standin: signal {stop[0]} at step {step}", file=sys.stderr, flush=True)
            time.sleep(float(os.environ.get("STANDIN_STOP_S", "0")))
        if writes:
            atomic_write_text(last, json.dumps({"step": step}))
        if stop:
            print(f"standin: wrote last.pt at step {step}", file=sys.stderr, flush=True)
            return PREEMPTED_EXIT_CODE
    if writes:
        atomic_write_text(run_dir / "training_history.json",
                          json.dumps([{"epoch": total, "global_step": step, "val/loss": 0.5}]))
        if "tasks" not in cfg:
            atomic_write_text(run_dir / "encoder_best.pt", "encoder")
        else:  # a regressor's final evaluation; the resolution falls with data.max_events
            pretrained = 0.8 if cfg["model"].get("pretrained_encoder") else 1.0
            width = 100.0 * pretrained / (cfg["data"].get("max_events") or 100) ** 0.5 + 0.1 * (cfg["training"]["seed"] % 10)
            atomic_write_text(run_dir / "metrics.json", json.dumps({
                "regressor": {"E_rel_w68_pct": width}, "baseline": {"E_rel_w68_pct": 5.0}, "events": {"all": 8}}))
        atomic_write_text(run_dir / "train.log", f"standin trained {step} steps\n")
        write_done_marker(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
