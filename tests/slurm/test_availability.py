"""The SLURM suite cannot be skipped silently in CI: cluster.sh start fails loudly, and CI=true turns the
skip of a `slurm` test without a cluster into a failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run_marked_test(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_slurm.py").write_text(
        "import pytest\n\n@pytest.mark.slurm\ndef test_needs_slurm():\n    pass\n")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "CI": ci, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.slurm.availability", "-p", "no:cacheprovider",
                           "-rA", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_slurm_test_without_a_cluster_skips_outside_ci_and_fails_in_ci(tmp_path):
    outside = _run_marked_test(tmp_path, ci="")
    assert outside.returncode == 0 and "1 skipped" in outside.stdout
    assert "sbatch / sinfo not on PATH" in outside.stdout
    in_ci = _run_marked_test(tmp_path, ci="true")
    assert in_ci.returncode == 1 and "1 error" in in_ci.stdout  # failed in setup: an error, not a skip
    assert "CI=true and a SLURM test cannot run: sbatch / sinfo not on PATH" in in_ci.stdout


def test_cluster_start_exits_non_zero_and_prints_no_environment_when_slurm_fails(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "slurmctld").write_text("#!/bin/sh\necho 'slurmctld: fatal: cannot start' >&2\nexit 1\n")
    (fake_bin / "slurmctld").chmod(0o755)
    result = subprocess.run([str(REPO / "tests" / "slurm" / "cluster.sh"), "start", str(tmp_path / "cluster")],
                            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURMCTLD_PORT": "16999"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "SLURM_CONF" not in result.stdout
