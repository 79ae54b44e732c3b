"""lib.data.files / readers / plan: path expansion, file checks, chunk and sharding arithmetic."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lib.data.files import DataError, common_truth_branches, expand_inputs, inspect_files
from lib.data.plan import Chunk, Placement, file_chunks, rank_chunks, round_robin_counts, worker_assignments
from lib.data.readers import BatchRecycler, ChunkReader
from lib.geometry import N_SENSORS
from tests.conftest import make_events, write_npz, write_root

INPUTS = ["npho", "relative_time"]


def test_expand_inputs_file_dir_glob_and_list(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    files = [tmp_path / "a" / "x.root", tmp_path / "a" / "deep" / "y.npz", tmp_path / "b.root"]
    for f in files:
        f.touch()
    (tmp_path / "a" / "notes.txt").touch()
    assert expand_inputs(tmp_path / "a") == sorted([files[1], files[0]])  # recursive, other suffixes ignored
    assert expand_inputs(str(tmp_path / "*.root")) == [files[2]]
    both = expand_inputs([str(files[2]), tmp_path / "a", str(tmp_path / "**" / "x.root")])
    assert both == [files[2], files[1], files[0]]  # de-duplicated, first occurrence kept


def test_list_files_name_inputs_one_per_line(tmp_path):
    (tmp_path / "data").mkdir()
    files = [tmp_path / "data" / name for name in ("a.root", "b.npz")]
    for f in files:
        f.touch()
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# run 1\n{files[1]}\n\ndata/a.root\n")  # absolute, and relative to the list file
    assert expand_inputs(listing) == [files[1], files[0]]
    (tmp_path / "empty.list").write_text("# none yet\n")
    with pytest.raises(DataError, match=r"list file '.*empty\.list' names no input files; add one path per line"):
        expand_inputs(tmp_path / "empty.list")
    (tmp_path / "bad.txt").write_text("data/missing.root\n")
    with pytest.raises(DataError, match=r"missing\.root'; check the input path \(list file .*bad\.txt\)"):
        expand_inputs(tmp_path / "bad.txt")


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"contains no \.root or \.npz files; check data\.train_path"):
        expand_inputs(tmp_path, config_key="data.train_path")


def test_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "data" / "*.root")
    with pytest.raises(DataError, match=re.escape(f"no files match '{pattern}'; check data.train_path")):
        expand_inputs(pattern, config_key="data.train_path")


@pytest.mark.parametrize("name", ["missing.root", "table.csv"])
def test_missing_path_and_wrong_suffix(tmp_path, name):
    if name.endswith(".csv"):
        (tmp_path / name).write_text("1,2\n")
    with pytest.raises(DataError, match=name):
        expand_inputs(tmp_path / name)


def test_non_root_file_with_root_suffix(tmp_path):
    bad = tmp_path / "fake.root"
    bad.write_text("this is not a ROOT file\n" * 20)
    with pytest.raises(DataError, match=r"fake\.root: not a readable ROOT file"):
        inspect_files([bad], "tree", INPUTS, None)


def test_truncated_root_file(tmp_path):
    good = write_root(tmp_path / "good.root", make_events(20))
    cut = tmp_path / "cut.root"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.root: .*(truncated|not a readable)"):
        inspect_files([cut], "tree", INPUTS, None)


def test_missing_tree_and_branch(tmp_path):
    events = make_events(5)
    del events["relative_time"]
    path = write_root(tmp_path / "f.root", events)
    with pytest.raises(DataError, match=r"f\.root: branch 'relative_time' not found"):
        inspect_files([path], "tree", INPUTS, None)
    with pytest.raises(DataError, match=r"f\.root: no TTree or RNTuple 'events' \(found: tree \(TTree\)\); set data"):
        inspect_files([path], "events", INPUTS, None)
    with pytest.raises(DataError, match=r"f\.root: branch 'energyTruthX' not found"):
        inspect_files([path], "tree", ["npho", "npho"], ["energyTruthX"])


@pytest.mark.parametrize("suffix", ["root", "npz"])
def test_wrong_sensor_count(tmp_path, suffix):
    path = tmp_path / f"short.{suffix}"
    (write_root if suffix == "root" else write_npz)(path, make_events(5, n_sensors=N_SENSORS - 1))
    expected = rf"short\.{suffix}: branch 'npho' has {N_SENSORS - 1} values per event, expected {N_SENSORS}"
    with pytest.raises(DataError, match=expected):
        inspect_files([path], "tree", INPUTS, None)


def test_corrupt_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 garbage" * 10)
    with pytest.raises(DataError, match=r"bad\.npz: not a readable npz"):
        inspect_files([bad], "tree", INPUTS, None)


def test_inspect_reports_entries_baskets_and_shapes(tmp_path):
    root = write_root(tmp_path / "a.root", make_events(25), basket_events=10)
    npz = write_npz(tmp_path / "b.npz", make_events(7))
    info_root, info_npz = inspect_files([root, npz], "tree", INPUTS, ["uvwTruth", "event"])
    assert (info_root.n_entries, info_root.boundaries) == (25, (0, 10, 20, 25))
    assert (info_npz.n_entries, info_npz.boundaries) == (7, (0, 7))
    for info in (info_root, info_npz):
        assert info.branches["uvwTruth"].shape == (3,)
        assert info.branches["npho"].shape == (N_SENSORS,)
        assert info.branches["event"].dtype.kind == "i"


@pytest.mark.parametrize("suffix", ["root", "npz"])
def test_reader_returns_the_written_rows(tmp_path, suffix):
    events = make_events(30)
    path = (write_root if suffix == "root" else write_npz)(tmp_path / f"f.{suffix}", events)
    infos = inspect_files([path], "tree", INPUTS, None)
    dtypes = {"npho": np.dtype(np.float32), "emiAng": np.dtype(np.float32), "run": np.dtype(np.int64)}
    with ChunkReader(infos, "tree", dtypes) as reader:
        rows = reader.read(0, 12, 27)
    np.testing.assert_array_equal(rows["npho"], events["npho"][12:27])
    np.testing.assert_array_equal(rows["emiAng"], events["emiAng"][12:27])
    assert rows["run"].dtype == np.int64 and (rows["run"] == 7).all()


def test_reader_reads_from_threads_at_once_and_bounds_open_files(tmp_path, monkeypatch):
    import lib.data.readers as readers

    events = make_events(40)
    paths = [write_root(tmp_path / f"f{k}.root", {n: v[10 * k : 10 * k + 10] for n, v in events.items()})
             for k in range(4)]  # fmt: skip
    infos = inspect_files(paths, "tree", INPUTS, None)
    opened, closed = [], []

    class Counted:  # an uproot file that records being opened and closed
        def __init__(self, path):
            self.file = real_open(path)
            opened.append(path)

        def __getitem__(self, key):
            return self.file[key]

        def close(self):
            closed.append(self)
            self.file.close()

    real_open = readers.open_root
    monkeypatch.setattr(readers, "open_root", Counted)
    reader = ChunkReader(infos, "tree", {"npho": np.dtype(np.float32), "event": np.dtype(np.int64)}, keep_open=2)
    jobs = [(k % 4, 2 * (k % 5), 2 * (k % 5) + 2) for k in range(40)]
    with ThreadPoolExecutor(4) as threads:
        rows = list(threads.map(lambda job: reader.read(*job), jobs))
    for (file, start, stop), got in zip(jobs, rows):
        np.testing.assert_array_equal(got["event"], events["event"][10 * file + start : 10 * file + stop])
        np.testing.assert_array_equal(got["npho"], events["npho"][10 * file + start : 10 * file + stop])
    assert len(opened) - len(closed) <= 2 and len(opened) >= 4  # idle files beyond keep_open were closed
    reader.close()
    assert len(opened) == len(closed)


def test_recycler_reuses_batch_arrays_only_when_nothing_refers_to_them():
    recycler = BatchRecycler()
    template = {"x": np.zeros((1, 4, 2), np.float32), "event": np.zeros(1, np.int64)}
    first = {k: torch.from_numpy(a) for k, a in recycler.empty(template, 3).items()}
    address = first["x"].data_ptr()
    assert recycler.empty(template, 3)["x"].ctypes.data != address  # the batch is still in use
    view = first["x"][1:]
    del first
    assert recycler.empty(template, 3)["x"].ctypes.data != address  # a view of it is still in use
    del view
    again = recycler.empty(template, 3)
    assert again["x"].ctypes.data == address and again["x"].shape == (3, 4, 2)
    assert recycler.empty(template, 5)["x"].shape == (5, 4, 2)  # another size: other arrays


def test_corrupt_basket_is_reported_with_file_and_range(tmp_path):
    import uproot

    path = write_root(tmp_path / "f.root", make_events(20))
    with uproot.open(path) as f:
        seek = int(f["tree"]["npho"].member("fBasketSeek")[1])
    data = bytearray(path.read_bytes())
    data[seek : seek + 64] = b"\xff" * 64  # overwrite the key header of the second npho basket
    path.write_bytes(bytes(data))
    infos = inspect_files([path], "tree", INPUTS, None)
    with ChunkReader(infos, "tree", {"npho": np.dtype(np.float32), "relative_time": np.dtype(np.float32)}) as reader:
        with pytest.raises(DataError, match=r"f\.root: cannot read entries 0-20"):
            reader.read(0, 0, 20)


# ---------------------------------------------------------------- plan arithmetic


def test_file_chunks_follow_baskets_and_reach_the_minimum():
    chunks = file_chunks(3, [0, 10, 20, 30, 40, 45], 42, min_events=15)
    assert [(c.start, c.stop) for c in chunks] == [(0, 20), (20, 40), (40, 42)]
    assert all(c.file == 3 for c in chunks)


def test_rank_chunks_by_file_and_by_entry_range():
    per_file = [[Chunk(0, 0, 10), Chunk(0, 10, 20)], [Chunk(1, 0, 7)], [Chunk(2, 0, 5)]]
    assert rank_chunks(per_file, 1, 2) == [Chunk(1, 0, 7)]
    assert rank_chunks(per_file, 0, 2) == per_file[0] + per_file[2]
    one_file = per_file[:1]  # fewer files than ranks: contiguous, disjoint, complete entry ranges
    parts = [rank_chunks(one_file, r, 3) for r in range(3)]
    covered = [e for part in parts for c in part for e in range(c.start, c.stop)]
    assert covered == list(range(20)) and all(parts)


def _simulate_round_robin(capacities, n):
    """DataLoader order: cycle over workers, skipping those that ran out."""
    left, order, w = list(capacities), [], 0
    while len(order) < n:
        if left[w]:
            order.append(w)
            left[w] -= 1
        w = (w + 1) % len(left)
    return order


def test_placement_moves_every_pool_event_to_its_output_row():
    groups = [np.array([1, 4, 6]), np.array([0, 7]), np.array([2, 5])]  # pool index 3 goes nowhere
    placement = Placement.of(groups, 8)
    pool = np.arange(100, 108)
    outputs = [np.full(len(g), -1) for g in groups]
    for lo, hi in [(0, 3), (3, 8)]:  # e.g. the carried events, then one chunk
        for t, src, dst in placement.moves(lo, hi):
            assert np.all(np.diff(src) > 0)
            outputs[t][dst] = pool[lo:hi][src]
    for group, out in zip(groups, outputs):
        np.testing.assert_array_equal(out, pool[group])
    assert placement.moves(3, 4) == []


@pytest.mark.parametrize("capacities", [[3, 1, 4], [0, 2, 2], [5], [2, 2, 2, 1]])
def test_round_robin_counts_and_resume_assignments(capacities):
    total = sum(capacities)
    full = _simulate_round_robin(capacities, total)
    for steps in range(1, total + 1):
        counts = [full[:steps].count(w) for w in range(len(capacities))]
        assert list(round_robin_counts(np.array(capacities), steps)) == counts
        for done in range(steps):
            slots = worker_assignments(np.array(capacities), steps, done)
            quotas = [s[2] - s[1] if s else 0 for s in slots]
            resumed = [slots[i][0] for i in _simulate_round_robin(quotas, steps - done)]
            assert resumed == full[done:steps]


def test_jagged_branch_cannot_be_truth(tmp_path):
    import awkward as ak
    import uproot

    events = make_events(4)
    path = tmp_path / "jagged.root"
    with uproot.recreate(path) as f:
        f.mktree("tree", {"npho": ("f4", (N_SENSORS,)), "relative_time": ("f4", (N_SENSORS,)), "hits": "var * float64"})
        f["tree"].extend({**{k: events[k] for k in INPUTS}, "hits": ak.Array([[1.0], [], [2.0, 3.0], [4.0]])})
    with pytest.raises(DataError, match=r"jagged\.root: branch 'hits' is a std::vector; truth branches must have a fix"):
        inspect_files([path], "tree", INPUTS, ["hits"])
    infos = inspect_files([path], "tree", INPUTS, None)
    assert infos[0].branches["hits"].vector and common_truth_branches(infos, INPUTS) == ["nhits"]
