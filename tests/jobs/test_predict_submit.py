"""Prediction arrays without SLURM: planning, dry runs, bad input, the local executor, and an input file that
disappears between submission and its task (jobs.submit predict, jobs/run_predict.sh)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs.knobs import PREDICT_KNOBS, PredictOptions, resolve_knobs
from jobs.predict_plans import default_tag, plan_predictions
from jobs.predict_submit import CommandJob, run_local
from lib import predict
from tests.fixtures_e2e import e2e_data, one_thread, reg_checkpoint  # noqa: F401 (fixtures)
from tests.jobs.predict_helpers import REPO, model_in_run, planned_tasks, read, stamps


@pytest.fixture
def model(tmp_path, reg_checkpoint, monkeypatch) -> Path:
    """The session's tiny regressor in a run directory of its own under tmp_path; cwd = the repository."""
    monkeypatch.chdir(REPO)
    return model_in_run(tmp_path, reg_checkpoint)


def _out_dir(model: Path, tag: str) -> Path:
    return model.parent.parent / "predictions" / tag


def test_dry_run_plans_the_tasks_and_creates_nothing(model, shard_dir, submit):
    code, out, _ = submit(["predict", str(model), str(shard_dir)], {"DRY_RUN": "1", "FILES_PER_TASK": "2"})
    assert code == 0
    assert f"predictions: {_out_dir(model, shard_dir.name)}" in out
    assert "3 to predict in 2 task(s) of up to 2" in out
    assert "task 0: shard_0.root shard_1.root" in out and "task 1: shard_2.root" in out
    assert re.search(r"python -m lib\.predict --checkpoint \S+last\.pt --format checkpoint --out-dir \S+ --no-summary "
                     r"--device cpu --input \S+shard_0\.root \S+shard_1\.root", out)
    assert f"python -m lib.evaluation.prediction_jobs merge {_out_dir(model, shard_dir.name)}" in out
    assert not (model.parent.parent / "predictions").exists()


@pytest.mark.parametrize("kind, fragment", [
    ("empty folder", "contains no .root or .npz files"),
    ("empty list file", "names no input files"),
    ("glob matching nothing", "no files match"),
])
def test_an_array_over_zero_files_is_refused_in_one_line(model, tmp_path, submit, kind, fragment):
    source = {"empty folder": tmp_path / "empty", "empty list file": tmp_path / "files.txt",
              "glob matching nothing": tmp_path / "data" / "*.root"}[kind]
    if kind == "empty folder":
        source.mkdir()
    elif kind == "empty list file":
        source.write_text("# nothing yet\n\n")
    code, out, err = submit(["predict", str(model), str(source)])
    assert code == 2 and out == ""
    assert err.startswith("error: nothing to predict: ") and fragment in err and err.count("\n") == 1
    assert not (model.parent.parent / "predictions").exists()


def test_a_model_outside_any_run_needs_out_dir(tmp_path, reg_checkpoint, shard_dir, submit, monkeypatch):
    monkeypatch.chdir(REPO)
    loose = Path(shutil.copyfile(reg_checkpoint, tmp_path / "model.pt"))
    code, _, err = submit(["predict", str(loose), str(shard_dir)], {"DRY_RUN": "1"})
    assert code == 2 and "cannot tell which run" in err and "set OUT_DIR=DIR" in err
    code, out, _ = submit(["predict", str(loose), str(shard_dir)], {"DRY_RUN": "1", "OUT_DIR": str(tmp_path / "p")})
    assert code == 0 and f"predictions: {tmp_path / 'p'}" in out


def test_default_tags_name_the_input(tmp_path, shard_dir):
    files = sorted(shard_dir.glob("*.root"))
    listing = tmp_path / "run2021.txt"
    listing.write_text("\n".join(map(str, files)))
    assert default_tag([str(shard_dir)], files) == shard_dir.name
    assert default_tag([str(shard_dir / "*.root")], files) == shard_dir.name
    assert default_tag([str(listing)], files) == "run2021"
    assert default_tag([str(files[1])], files[1:2]) == "shard_1"


def test_the_local_executor_predicts_every_file_then_a_second_submission_does_nothing(model, shard_dir, submit):
    code, out, err = submit(["predict", str(model), str(shard_dir)], {"FILES_PER_TASK": "2", "TAG": "local"})
    out_dir = _out_dir(model, "local")
    assert code == 0, err[-3000:]
    assert "3 input files, 3 predicted now, 0 skipped as complete, 0 failed; 120 events" in out
    assert sorted(stamps(out_dir)) == ["shard_0_pred.root", "shard_1_pred.root", "shard_2_pred.root"]
    assert [record["kind"] for record in read(out_dir / "jobs.json")] == ["predict", "predict", "merge"]
    before = stamps(out_dir)
    code, out, _ = submit(["predict", str(model), str(shard_dir)], {"FILES_PER_TASK": "2", "TAG": "local"})
    assert code == 0 and "all 3 input files are predicted completely by this model" in out
    assert stamps(out_dir) == before and len(read(out_dir / "jobs.json")) == 3


def test_a_file_that_disappears_after_submission_fails_alone(model, shard_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for path in shard_dir.glob("*.root"):
        (data / path.name).write_bytes(path.read_bytes())
    knobs = resolve_knobs({}, {"FILES_PER_TASK": "2", "CPU_PROCS": "1", "EXECUTOR": "local"}, PREDICT_KNOBS,
                          PredictOptions)
    plan = plan_predictions(str(model), [str(data)], None, knobs)
    (data / "shard_0.root").unlink()  # after the plan, before its task
    assert run_local(plan, knobs.options) == 1  # the merge step's status: an input failed
    assert planned_tasks(plan.out_dir) == {"shard_0.root": 0, "shard_1.root": 0, "shard_2.root": 1}
    assert sorted(stamps(plan.out_dir)) == ["shard_1_pred.root", "shard_2_pred.root"]  # the rest of its task too
    manifest = {Path(entry["input"]).name: entry for entry in read(plan.out_dir / "manifest.json")["inputs"]}
    assert [manifest[name]["status"] for name in sorted(manifest)] == ["failed", "done", "done"]
    assert "shard_0.root: does not exist" in manifest["shard_0.root"]["error"]
    summary = read(plan.out_dir / "summary.json")
    assert [failure["input"] for failure in summary["failures"]] == [str(data / "shard_0.root")]
    assert summary["events"] == 80
    logs = "".join(path.read_text() for path in sorted(plan.out_dir.joinpath("logs").glob("*_log.err")))
    assert f"1 of 3 input files failed: {data / 'shard_0.root'} (file " in logs  # the merge step's message
    assert "the merge step exited non-zero: input files failed" in capsys.readouterr().out


def test_predictions_of_another_model_are_refused_unless_forced(model, shard_dir, submit, tmp_path):
    other = model_in_run(tmp_path / "other", model)
    other.write_bytes(model.read_bytes() + b"\0")  # another file, another sha256
    out_dir = tmp_path / "shared"
    env = {"OUT_DIR": str(out_dir), "FILES_PER_TASK": "3"}
    first = ["--checkpoint", str(model), "--input", str(shard_dir / "shard_0.root"), "--out-dir", str(out_dir)]
    assert predict.main(first) == 0  # what a task of an earlier array leaves
    code, _, err = submit(["predict", str(other), str(shard_dir / "shard_0.root")], {**env, "DRY_RUN": "1"})
    assert code == 2 and "holds predictions of another model for 1 input file(s)" in err and "FORCE=1" in err
    code, out, _ = submit(["predict", str(other), str(shard_dir / "shard_0.root")],
                          {**env, "DRY_RUN": "1", "FORCE": "1"})
    assert code == 0 and "--force" in out


def test_the_wrapper_is_thin_and_documents_its_knobs():
    text = (REPO / "jobs" / "run_predict.sh").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert code == ["set -euo pipefail", 'exec "${PYTHON:-python}" -m jobs.submit predict "$@"']
    for knob in PREDICT_KNOBS:
        assert re.search(rf"^#\s+{knob.env}\s", text, re.M), knob.env
    if (shellcheck := shutil.which("shellcheck")) is not None:
        assert subprocess.run([shellcheck, str(REPO / "jobs" / "run_predict.sh")]).returncode == 0


def test_the_submission_does_not_import_torch(model, shard_dir):
    argv = ["predict", str(model), str(shard_dir)]
    probe = ("import sys; from jobs.submit import main; "
             f"code = main({argv!r}, {{'DRY_RUN': '1', 'EXECUTOR': 'local'}}); "
             "assert code == 0, code; assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_task_asked_to_checkpoint_stops_its_command_and_hands_back_a_fresh_copy(tmp_path):
    job = CommandJob(["-c", "import time; time.sleep(120)"], str(tmp_path), 1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            job()
        except RuntimeError as err:  # the stopped command's status (submitit requeues before it matters)
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while job._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process = job._process
    resubmission = job.checkpoint()
    thread.join(30)
    assert process.poll() is not None and not thread.is_alive() and "exited with status" in str(errors[0])
    fresh = resubmission.function
    assert isinstance(fresh, CommandJob) and fresh is not job
    assert (fresh.arguments, fresh.workdir, fresh.cpu_threads) == (job.arguments, job.workdir, 1)
