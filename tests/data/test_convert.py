"""lib.data.convert: inputs (TTree, RNTuple, std::vector, npz) rewritten into shards bit-exactly, the loader
reads them, an interrupted (SIGKILLed) conversion resumes to the same shards, bad input is one line."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import uproot

from lib.config.schema import DataConfig
from lib.data.convert import BASKET_BYTES, ZIP_DATE, main, plan_shards
from lib.data.loader import EventLoader
from lib.geometry import N_SENSORS
from lib.normalization import NormalizationConfig
from tests.conftest import make_events, write_npz, write_root
from tests.data.fixtures.make_fixtures import FOLDER, fixture_events

REPO = Path(__file__).resolve().parents[2]


def _read(folder: Path) -> dict[str, np.ndarray]:
    """Every branch of the shards of `folder` (in manifest order), concatenated."""
    manifest = json.loads((folder / "manifest.json").read_text())
    parts = []
    for shard in manifest["shards"]:
        path = folder / shard["name"]
        if path.suffix == ".npz":
            with np.load(path) as file:
                parts.append({name: file[name] for name in file.files})
        else:
            with uproot.open(path) as file:
                parts.append(file["tree"].arrays(library="np"))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        assert got[name].dtype == values.dtype, name
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def _convert(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def two_inputs(tmp_path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Two ROOT files of 40 and 25 events (truth, run, event) and their events concatenated."""
    parts = [make_events(40), make_events(25, first_event=40)]
    (tmp_path / "in").mkdir()
    paths = [write_root(tmp_path / "in" / f"f{k}.root", part) for k, part in enumerate(parts)]
    return paths, {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def test_shards_cut_the_inputs_in_order():
    shards = plan_shards([40, 25], 30, "npz")
    assert [s.name for s in shards] == ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    assert [s.sources for s in shards] == [((0, 0, 30),), ((0, 30, 40), (1, 0, 20)), ((1, 20, 25),)]


def test_root_to_npz_to_root_to_npz_is_bit_exact_and_the_loader_reads_it(two_inputs, tmp_path):
    paths, events = two_inputs
    assert _convert("--input", *map(str, paths), "--out", str(tmp_path / "npz"), "--events-per-shard", "30") == 0
    _same(_read(tmp_path / "npz"), events)
    assert _convert("--input", str(tmp_path / "npz"), "--out", str(tmp_path / "root"), "--format", "root",
                    "--events-per-shard", "30") == 0
    _same(_read(tmp_path / "root"), events)
    assert _convert("--input", str(tmp_path / "root"), "--out", str(tmp_path / "npz2"), "--events-per-shard", "30") == 0
    for shard in sorted((tmp_path / "npz").glob("*.npz")):
        assert shard.read_bytes() == (tmp_path / "npz2" / shard.name).read_bytes()  # same events, same bytes
        with zipfile.ZipFile(shard) as archive:  # also when written at another time: no clock in the file
            assert {(info.date_time, info.compress_type) for info in archive.infolist()} == {(ZIP_DATE, 0)}
    loader = EventLoader(str(tmp_path / "root"), DataConfig(batch_size=16, num_workers=0), NormalizationConfig(),
                         role="eval")
    assert [int(e) for batch in loader for e in batch["event"]] == list(range(65))


def test_root_shards_have_baskets_of_the_stated_size(tmp_path):
    write_npz(tmp_path / "in.npz", make_events(1000))
    assert _convert("--input", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out"), "--format", "root") == 0
    with uproot.open(tmp_path / "out" / "shard_00000.root") as file:
        offsets = list(file["tree"]["npho"].entry_offsets)
    basket = BASKET_BYTES // (N_SENSORS * 4)
    assert basket == 881 and offsets == [0, basket, 1000]


def test_rntuple_and_std_vector_inputs_become_fixed_arrays(tmp_path):
    events = {k: v for k, v in make_events(12).items() if v.ndim == 1 or k in ("npho", "relative_time", "uvwTruth")}
    with uproot.recreate(tmp_path / "rntuple.root") as file:
        file["events"] = events
    assert _convert("--input", str(tmp_path / "rntuple.root"), "--tree", "events", "--out", str(tmp_path / "a")) == 0
    _same(_read(tmp_path / "a"), events)
    assert _convert("--input", str(FOLDER / "vector_npho.root"), "--out", str(tmp_path / "b")) == 0
    got, written = _read(tmp_path / "b"), fixture_events("vector_npho")
    assert got["npho"].shape == (len(written["npho"]), N_SENSORS) and got["npho"].dtype == np.float32
    np.testing.assert_array_equal(got["npho"], written["npho"])
    np.testing.assert_array_equal(got["energyReco"], written["energyReco"])


def test_a_rerun_skips_finished_shards_and_rewrites_a_damaged_one(two_inputs, tmp_path):
    paths, events = two_inputs
    args = ("--input", *map(str, paths), "--out", str(tmp_path / "out"), "--events-per-shard", "30")
    assert _convert(*args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npz")}
    damaged = tmp_path / "out" / "shard_00001.npz"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    assert _convert(*args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npz")}
    for name in ("shard_00000.npz", "shard_00002.npz"):
        assert after[name] == stamps[name]
    assert after["shard_00001.npz"] != stamps["shard_00001.npz"]
    _same(_read(tmp_path / "out"), events)


def _manifest_shards(folder: Path) -> int:
    try:
        return len(json.loads((folder / "manifest.json").read_text())["shards"])
    except (OSError, ValueError):
        return 0


def test_a_killed_conversion_resumes_to_the_same_shards(tmp_path):
    source = write_root(tmp_path / "big.root", make_events(600), basket_events=50)
    args = ["--input", str(source), "--events-per-shard", "10"]
    assert _convert(*args, "--out", str(tmp_path / "whole")) == 0
    killed = tmp_path / "killed"
    for attempt in range(3):  # a conversion that ends before the kill lands proves nothing: try again
        process = subprocess.Popen([sys.executable, "-m", "lib.data.convert", *args, "--out", str(killed)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and _manifest_shards(killed) < 1:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if 0 < _manifest_shards(killed) < 60:
            break
        subprocess.run(["rm", "-rf", str(killed)], check=True)
    else:
        pytest.fail("the conversion always finished before it was killed")
    assert _convert(*args, "--out", str(killed)) == 0
    whole, resumed = (json.loads((folder / "manifest.json").read_text()) for folder in (tmp_path / "whole", killed))
    assert resumed == {**whole, "inputs": resumed["inputs"]} and resumed["complete"] and len(resumed["shards"]) == 60
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for shard in whole["shards"]:
        assert (killed / shard["name"]).read_bytes() == (tmp_path / "whole" / shard["name"]).read_bytes()


@pytest.mark.parametrize("case, fragment", [
    ("missing branch", "branch 'nope' not found"),
    ("sensor count", f"branch 'npho' has {N_SENSORS - 1} values per event, expected {N_SENSORS}; set --npho-branch"),
    ("other settings", "holds a conversion with other events_per_shard; give another --out"),
    ("foreign data", "holds data files (x.npz, ...) but no manifest.json"),
])
def test_bad_input_is_refused_in_one_line(case, fragment, two_inputs, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "in"), "--out", str(out)]  # the folder of two_inputs
    if case == "missing branch":
        args += ["--branches", "energyTruth", "nope"]
    elif case == "sensor count":
        write_root(tmp_path / "in" / "short.root", make_events(5, n_sensors=N_SENSORS - 1))
    elif case == "other settings":
        assert _convert(*args, "--events-per-shard", "30") == 0
    else:
        out.mkdir()
        write_npz(out / "x.npz", make_events(2))
    before = sorted(out.rglob("*")) if out.exists() else []
    with caplog.at_level(logging.ERROR, logger="lib.data.convert"):
        assert _convert(*args) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fragment in record.getMessage() and "\n" not in record.getMessage()
    assert (sorted(out.rglob("*")) if out.exists() else []) == before
