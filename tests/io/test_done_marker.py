"""The DONE marker names the job that finished the run and when."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from lib.io.done_marker import job_id, write_done_marker


@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_JOB_ID": "41", "SUBMITIT_LOCAL_JOB_ID": "977"}, "41"),
    ({"SUBMITIT_LOCAL_JOB_ID": "977"}, "977"),
    ({"SLURM_JOB_ID": ""}, f"local pid {os.getpid()}"),
], ids=["slurm", "submitit-local", "no-job"])
def test_job_id_prefers_slurm_then_submitit_then_the_pid(environ, expected):
    assert job_id(environ) == expected


def test_done_marker_says_which_job_finished_and_when(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    path = write_done_marker(tmp_path)
    words = path.read_text(encoding="utf-8").split()
    assert path == tmp_path / "DONE" and words[:3] == ["job", "1234", "finished"]
    assert dt.datetime.fromisoformat(words[3]) >= before and words[3].endswith("+00:00")
    assert os.listdir(tmp_path) == ["DONE"]
