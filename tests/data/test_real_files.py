"""Files as the experiment writes them: ROOT-written fixtures (tests/data/fixtures), RNTuple, files
without run / event, and inputs that would train on nothing."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lib.config.schema import DataConfig
from lib.data.files import DataError, inspect_files
from lib.data.loader import EventLoader
from lib.data.stream import RAW_INPUTS
from lib.normalization import NormalizationConfig
from tests.conftest import make_events, write_root
from tests.data.fixtures.make_fixtures import EVENTS, FOLDER, KINDS, fixture_events

INPUTS = ["npho", "relative_time"]
NORM = NormalizationConfig()


def eval_loader(paths, **data) -> EventLoader:
    """An evaluation loader (every event, file order) carrying the raw inputs."""
    config = DataConfig(**{"batch_size": 2, "num_workers": 0, **data})
    return EventLoader(paths, config, NORM, role="eval", extras=RAW_INPUTS)


def all_rows(loader: EventLoader) -> dict[str, np.ndarray]:
    batches = list(loader)
    return {name: np.concatenate([b[name].numpy() for b in batches]) for name in batches[0]}


def write_rntuple(path: Path, events: dict[str, np.ndarray], cluster_events: int) -> Path:
    """An RNTuple `tree` (what uproot writes for file["tree"] = {...}) with one cluster per `cluster_events`."""
    import uproot

    with uproot.recreate(path) as file:
        file["tree"] = {name: values[:cluster_events] for name, values in events.items()}
        for start in range(cluster_events, len(events["npho"]), cluster_events):
            file["tree"].extend({name: values[start : start + cluster_events] for name, values in events.items()})
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_root_written_files_are_read_value_for_value(kind):
    rows = all_rows(eval_loader(FOLDER / f"{kind}.root"))
    written = fixture_events(kind)
    np.testing.assert_array_equal(rows["npho_raw"], written["npho"])
    np.testing.assert_array_equal(rows["time_raw"], written["relative_time"])
    for name in ("run", "event", "energyReco", "uvwRecoFI", "emiAng"):
        np.testing.assert_array_equal(rows[name], written[name].astype(rows[name].dtype))
    assert rows["run"].dtype == np.int64 and len(rows["event"]) == EVENTS
    assert not {"nphe", "time", "relative_npho", "solid_angle"} & set(rows), "other per-sensor arrays are not read"


def test_real_data_layout_has_no_truth_and_mc_layout_has_it():
    loaders = {kind: eval_loader(FOLDER / f"{kind}.root") for kind in ("realdata", "mc")}
    truth = {"energyTruth", "uvwTruth", "timeTruth", "xyzTruth"}
    assert not truth & set(loaders["realdata"].truth_branches)
    assert truth <= set(loaders["mc"].truth_branches)


def test_a_vector_input_of_the_wrong_length_is_refused_when_read(tmp_path):
    import awkward as ak
    import uproot

    events = make_events(3)
    lengths = [4760, 4760, 4000]
    with uproot.recreate(tmp_path / "short.root") as file:
        file.mktree("tree", {"npho": "var * float32", "relative_time": ("f4", (4760,))})
        file["tree"].extend({"npho": ak.Array([events["npho"][k, :n] for k, n in enumerate(lengths)]),
                             "relative_time": events["relative_time"]})
    with pytest.raises(DataError, match=r"short\.root: std::vector branch 'npho' holds 4000 values in entry 2, exp"):
        all_rows(eval_loader(tmp_path / "short.root"))


# ---------------------------------------------------------------------------------------- RNTuple
def test_rntuple_is_read_like_the_same_events_in_a_ttree(tmp_path):
    events = make_events(25)
    ttree = write_root(tmp_path / "ttree.root", events, basket_events=10)
    rntuple = write_rntuple(tmp_path / "rntuple.root", events, cluster_events=10)
    (info,) = inspect_files([rntuple], "tree", INPUTS, None)
    assert (info.container, info.boundaries) == ("RNTuple", (0, 10, 20, 25))
    assert info.branches["uvwTruth"].shape == (3,) and info.branches["npho"].shape == (4760,)
    from_ttree, from_rntuple = all_rows(eval_loader(ttree)), all_rows(eval_loader(rntuple))
    assert from_ttree.keys() == from_rntuple.keys()
    for name, values in from_ttree.items():
        np.testing.assert_array_equal(from_rntuple[name], values, err_msg=name)


def test_rntuple_of_another_name_is_named_in_the_message(tmp_path):
    path = write_rntuple(tmp_path / "r.root", make_events(4), cluster_events=4)
    with pytest.raises(DataError, match=r"r\.root: no TTree or RNTuple 'events' \(found: tree \(ROOT::RNTuple\)\)"):
        inspect_files([path], "events", INPUTS, None)


# -------------------------------------------------------------------------------------- run / event
def test_files_without_run_and_event_get_file_and_entry_ids_with_one_warning(tmp_path, caplog):
    events = make_events(7)
    for name in ("run", "event"):
        del events[name]
    paths = [write_root(tmp_path / f"f{k}.root", {n: v[rows] for n, v in events.items()})
             for k, rows in enumerate((slice(0, 4), slice(4, 7)))]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lib.data.loader"):
        rows = all_rows(eval_loader(paths))
        eval_loader(paths)  # a run builds several loaders: still one warning
    assert rows["run"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert rows["event"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert rows["run"].dtype == np.int64
    warnings = [r for r in caplog.records if "lack a run or event branch" in r.getMessage()]
    assert len(warnings) == 1


def test_train_loader_without_ids_shuffles_them_with_their_events(tmp_path):
    events = make_events(40)
    for name in ("run", "event"):
        del events[name]
    path = write_root(tmp_path / "f.root", events)
    config = DataConfig(batch_size=8, num_workers=0, shuffle_buffer=40)
    for batch in EventLoader(path, config, NORM, role="train", extras=RAW_INPUTS):
        entries = batch["event"].numpy()
        assert (batch["run"].numpy() == 0).all()
        np.testing.assert_array_equal(batch["npho_raw"].numpy(), events["npho"][entries])


# ------------------------------------------------------------------------------- degenerate inputs
def test_relative_npho_with_the_raw_threshold_is_refused_with_what_to_change():
    with pytest.raises(DataError) as refused:
        eval_loader(FOLDER / "realdata.root", npho_branch="relative_npho")
    message = str(refused.value)
    assert "realdata.root" in message and "no sensor time is valid" in message
    assert "largest npho in branch 'relative_npho' is 1" in message
    assert "data.npho_branch=npho" in message and "normalization.npho_threshold" in message


def test_times_in_nanoseconds_are_refused_as_a_unit_mismatch(tmp_path):
    events = make_events(8)
    events["relative_time"] = events["relative_time"] * 1e9  # ns instead of s
    with pytest.raises(DataError, match=r"branch 'relative_time' has values from .* normalize to magnitudes up to .*"
                                        r"check its unit against normalization\.time_scale / time_shift"):
        eval_loader(write_root(tmp_path / "ns.root", events))


def test_a_branch_of_fill_values_is_refused(tmp_path):
    events = make_events(8)
    events["relative_time"][:] = 1e10
    with pytest.raises(DataError, match=r"branch 'relative_time' holds no finite time .*; check data\.time_branch"):
        eval_loader(write_root(tmp_path / "dead.root", events))


def test_usable_inputs_are_summarized():
    summary = eval_loader(FOLDER / "mc.root").input_summary
    assert summary.events == 2 and 0.99 < summary.npho_valid < 1.0 and 0.3 < summary.time_valid < 1.0
    assert summary.npho_range[0] >= 0 and summary.time_range[0] == 0.0
