"""lib.data.loader.EventLoader: batch content, bad values, sharding, determinism, resume."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lib.config.schema import DataConfig
from lib.data.files import DataError
from lib.data.loader import EventLoader
from lib.geometry import N_SENSORS
from lib.normalization import NormalizationConfig, normalize, time_loss_weight
from tests.conftest import TRUTH_SHAPES, make_events, write_npz, write_root

NORM = NormalizationConfig()


def loader(paths, *, role="train", rank=0, world_size=1, seed=0, extras=(), **data) -> EventLoader:
    """EventLoader over a DataConfig with the `data` fields given (batches of 8, no workers unless given)."""
    config = DataConfig(**{"batch_size": 8, "num_workers": 0, **data})
    return EventLoader(paths, config, NORM, role=role, rank=rank, world_size=world_size, seed=seed, extras=extras)


def event_ids(batches) -> list[list[int]]:
    return [b["event"].tolist() for b in batches]


def test_batches_hold_the_normalized_file_content(shard_dir, shard_events):
    data = loader(shard_dir, batch_size=16, shuffle_buffer=30)
    # several windows per epoch and two epochs: the normalized chunks' memory is reused, the
    # batches kept from earlier windows and epochs must not change
    batches = list(data) + list(data)
    assert len(batches) == 2 * len(data) == 2 * (120 // 16)
    for batch in batches:
        ids = batch["event"].numpy()
        x, npho_valid, time_valid = normalize(shard_events["npho"][ids], shard_events["relative_time"][ids], NORM)
        assert batch["x"].dtype == torch.float32 and batch["x"].shape == (16, N_SENSORS, 2)
        np.testing.assert_array_equal(batch["x"].numpy(), x)
        np.testing.assert_array_equal(batch["npho_valid"].numpy(), npho_valid)
        np.testing.assert_array_equal(batch["time_valid"].numpy(), time_valid)
        for name, shape in TRUTH_SHAPES.items():
            assert batch[name].dtype == torch.float32 and batch[name].shape == (16, *shape)
            np.testing.assert_array_equal(batch[name].numpy(), shard_events[name][ids])
        assert batch["run"].dtype == torch.int64 and (batch["run"] == 7).all()


def test_batch_memory_is_reused_once_batches_are_let_go(shard_dir):
    data = loader(shard_dir, shuffle_buffer=80)  # windows of 80 and 40 events: 10 and 5 batches of 8
    addresses = {batch["x"].data_ptr() for _ in range(3) for batch in data}
    assert len(data) == 15 and len(addresses) <= 10 + 2  # one window's batches, and the one in use


def test_npz_and_root_give_the_same_batches(tmp_path, shard_events):
    events = {k: v[:40] for k, v in shard_events.items()}
    from_root = list(loader(write_root(tmp_path / "a.root", events), shuffle_buffer=0))
    from_npz = list(loader(write_npz(tmp_path / "a.npz", events), shuffle_buffer=0))
    assert len(from_root) == len(from_npz) == 5
    for a, b in zip(from_root, from_npz):
        assert set(a) == set(b)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_bad_values_load_with_false_masks(tmp_path):
    events = make_events(8)
    events["npho"][0] = np.nan  # all-NaN event
    events["npho"][1] = 1e10  # "missing" marker everywhere
    events["npho"][2] = -2 * NORM.npho_scale  # below the log1p domain
    data = loader(write_root(tmp_path / "bad.root", events), shuffle_buffer=0)
    (batch,) = list(data)
    for row in range(3):
        assert not batch["npho_valid"][row].any() and not batch["time_valid"][row].any()
        assert (batch["x"][row, :, 0] == NORM.npho_sentinel).all()
        assert (batch["x"][row, :, 1] == NORM.time_sentinel).all()
    assert torch.isfinite(batch["x"]).all() and batch["npho_valid"][3:].all()


def test_empty_shard_is_skipped_and_all_empty_is_an_error(tmp_path, caplog):
    write_root(tmp_path / "full.root", make_events(16))
    write_root(tmp_path / "empty.root", make_events(0))
    with caplog.at_level(logging.WARNING):
        data = loader(tmp_path)
    assert "empty.root has zero entries" in caplog.text and data.n_events == 16
    with pytest.raises(DataError, match="zero entries"):
        loader(tmp_path / "empty.root")


def test_batch_size_larger_than_the_data_set(shard_dir):
    with pytest.raises(DataError, match="batch_size 200 is larger than the data set"):
        loader(shard_dir, batch_size=200)


def test_steps_per_epoch_and_max_events(shard_dir):
    assert len(loader(shard_dir, steps_per_epoch=3)) == len(list(loader(shard_dir, steps_per_epoch=3))) == 3
    with pytest.raises(DataError, match="steps_per_epoch=16, but every rank can deliver only 15"):
        loader(shard_dir, steps_per_epoch=16)
    capped = loader(shard_dir, max_events=50, shuffle_buffer=0)
    assert capped.n_events == 50 and sorted(sum(event_ids(capped), [])) == list(range(48))


def test_fewer_files_than_ranks(tmp_path, caplog):
    path = write_root(tmp_path / "one.root", make_events(40))
    with caplog.at_level(logging.WARNING):
        ranks = [loader(path, rank=r, world_size=2) for r in range(2)]
    assert "only 1 input file(s) for 2 ranks" in caplog.text
    ids = [sum(event_ids(r), []) for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == len(event_ids(ranks[0])) == len(event_ids(ranks[1])) == 2
    assert not set(ids[0]) & set(ids[1])


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_sharding_is_disjoint_complete_and_equal_length(tmp_path, world_size):
    sizes = [40, 25, 33, 12]  # uneven files
    for k, n in enumerate(sizes):
        write_root(tmp_path / f"f{k}.root", make_events(n, first_event=100 * k))
    ranks = [loader(tmp_path, rank=r, world_size=world_size, shuffle_buffer=20) for r in range(world_size)]
    per_rank_events = [sum(sizes[r::world_size]) for r in range(world_size)]  # files dealt round-robin
    assert {len(r) for r in ranks} == {min(per_rank_events) // 8}
    per_rank_ids = [sum(event_ids(r), []) for r in ranks]
    for r, ids in enumerate(per_rank_ids):  # each rank reads only its own files
        assert {e // 100 for e in ids} <= set(range(r, len(sizes), world_size))
    seen = sum(per_rank_ids, [])
    assert len(seen) == len(set(seen)) == world_size * len(ranks[0]) * 8
    assert set(seen) <= {100 * k + i for k, n in enumerate(sizes) for i in range(n)}


def test_seeded_order_and_new_order_each_epoch(shard_dir):
    a, b, c = (loader(shard_dir, seed=s, shuffle_buffer=30) for s in (1, 1, 2))
    first = event_ids(a)
    assert first == event_ids(b) and first != event_ids(c)
    second = event_ids(a)  # iterating again moves on to the next epoch
    assert a.epoch == 2 and second != first and sorted(sum(second, [])) == sorted(sum(first, []))
    b.set_epoch(1)
    assert event_ids(b) == second


MODES = [(0, False), (2, False), (0, True)]  # (num_workers, in_memory)


@pytest.mark.parametrize("role", ["train", "eval"])
@pytest.mark.parametrize(("num_workers", "in_memory"), MODES)
def test_resume_equals_uninterrupted(shard_dir, num_workers, in_memory, role):
    kw = dict(batch_size=16, shuffle_buffer=30, num_workers=num_workers, in_memory=in_memory, seed=5, role=role)
    whole = loader(shard_dir, **kw)
    whole.set_epoch(1)
    expected = event_ids(whole)
    for n_head in (3, len(whole) - 1):  # for "eval", the last resume point is before the partial batch
        interrupted = loader(shard_dir, **kw)
        interrupted.set_epoch(1)
        stream = iter(interrupted)
        head = [next(stream)["event"].tolist() for _ in range(n_head)]
        state = interrupted.state_dict()
        del stream
        resumed = loader(shard_dir, **kw)
        resumed.load_state_dict(state)
        resumed.set_epoch(1)
        assert state["batches_done"] == n_head and head + event_ids(resumed) == expected


def test_workers_deliver_every_planned_batch_once(shard_dir):
    data = loader(shard_dir, num_workers=2, shuffle_buffer=30)
    ids = sum(event_ids(data), [])
    # baskets of 10 events are already >= batch 8: 12 chunks dealt to 2 streams -> 60 events per stream
    assert len(data) == 2 * (60 // 8) and len(ids) == len(set(ids)) == len(data) * 8


def test_worker_processes_stay_up_and_follow_the_epoch(shard_dir):
    kw = dict(num_workers=2, shuffle_buffer=30, seed=3)
    data = loader(shard_dir, **kw)
    first = event_ids(data)
    pids = [w.pid for w in data._workers._iterator._workers]
    stream = iter(data)  # epoch 1, left after two batches
    partial = [next(stream)["event"].tolist() for _ in range(2)]
    del stream
    data.set_epoch(2)
    third = event_ids(data)
    assert [w.pid for w in data._workers._iterator._workers] == pids
    fresh = [loader(shard_dir, **kw) for _ in range(3)]
    for epoch, got in ((0, first), (1, partial), (2, third)):
        fresh[epoch].set_epoch(epoch)
        assert event_ids(fresh[epoch])[: len(got)] == got
    assert first != third


def test_in_memory_equals_streaming(shard_dir):
    streamed = list(loader(shard_dir, shuffle_buffer=0))
    held = list(loader(shard_dir, shuffle_buffer=0, in_memory=True))
    assert len(streamed) == len(held)
    for a, b in zip(streamed, held):
        assert set(a) == set(b)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    shuffled = loader(shard_dir, in_memory=True, seed=4)
    assert sorted(sum(event_ids(shuffled), [])) == list(range(120)) and event_ids(shuffled) != event_ids(held)


def test_state_dict_inside_and_after_an_epoch(shard_dir):
    data = loader(shard_dir)
    positions = []
    for _ in data:
        positions.append(data.state_dict()["batches_done"])
    assert positions == [*range(1, len(data)), 0]  # after the last batch the position is the next epoch's start
    assert (data.state_dict()["epoch"], data.state_dict()["batches_done"]) == (1, 0)


def test_bench_reports_machine_settings_and_every_container(shard_dir, capsys):
    from lib.data.bench import main

    assert main(["--input", str(shard_dir), "--batch-size", "8", "--repeat", "1", "--workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["machine:", "settings:", "TTree", "RNTuple", "npz"]
    assert "threads" in lines[0] and "batch size 8, 0 workers" in lines[1]
    for line in lines[2:5]:  # each reads all 120 events; the loader delivers 15 full batches of 8
        assert "120 events read, 120 per epoch" in line and "b/a" in line


@pytest.mark.parametrize("flags, fragment", [
    ((), "no TTree or RNTuple 'tree' (found: events (TTree)); set --tree"),
    (("--tree", "events", "--time-branch", "t"), "branch 't' not found (fixed-size branches there: npho, relative_t"),
    (("--tree", "events", "--npho-branch", "bad"), "no sensor has a valid npho in branch 'bad'"),
], ids=["tree", "branch", "degenerate"])
def test_bench_input_errors_are_one_line_naming_its_flags(tmp_path, caplog, flags, fragment):
    from lib.data.bench import main

    events = make_events(8)
    events["bad"] = -events["npho"] - 2000  # below log1p's domain (npho > -1000): never a valid npho
    path = write_root(tmp_path / "other.root", events, tree="events")
    with caplog.at_level(logging.ERROR, logger="lib.data.bench"):
        assert main(["--input", str(path), "--repeat", "1", *flags]) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fragment in record.getMessage() and "\n" not in record.getMessage() and record.exc_info is None
    ok = main(["--input", str(path), "--repeat", "1", "--batch-size", "4", "--tree", "events"])
    assert ok == 0


def test_in_order_keeps_order_bounds_lookahead_and_raises():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from lib.data.stream import in_order

    started = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))  # later items often finish first
        if i == 7:
            raise DataError("item 7 is damaged")
        return i * i

    with ThreadPoolExecutor(2) as threads:
        assert list(in_order(threads, work, range(6), ahead=2)) == [i * i for i in range(6)]
        started.clear()
        stream = in_order(threads, work, range(100), ahead=2)
        assert next(stream) == 0
        time.sleep(0.05)  # time enough to start anything that was submitted
        stream.close()
        assert set(started) == {0, 1, 2}  # the item being used and the 2 ahead, no more
        with pytest.raises(DataError, match="item 7"):
            list(in_order(threads, work, range(10), ahead=2))


# ------------------------------------------------------------------------------- role "eval": every event
@pytest.mark.parametrize(("num_workers", "in_memory"), MODES)
def test_eval_every_event_comes_once_on_each_rank(tmp_path, num_workers, in_memory):
    sizes = [37, 29, 13]  # uneven files, none a multiple of the batch size
    for k, n in enumerate(sizes):
        write_root(tmp_path / f"f{k}.root", make_events(n, first_event=100 * k))
    kw = dict(shuffle_buffer=20, num_workers=num_workers, in_memory=in_memory, role="eval")
    ranks = [loader(tmp_path, rank=r, world_size=2, **kw) for r in range(2)]
    per_rank = [[b["event"].tolist() for b in r] for r in ranks]
    for r, (data, batches) in enumerate(zip(ranks, per_rank)):
        n_rank = sum(sizes[r::2])  # files dealt round-robin: 50 and 29 events
        assert len(data) == len(batches) and sum(map(len, batches)) == n_rank
        if num_workers == 0:  # one stream: full batches, then the rest
            assert [len(b) for b in batches] == [8] * (n_rank // 8) + [n_rank % 8]
        else:  # one partial batch at most per stream
            assert sum(len(b) < 8 for b in batches) <= num_workers and all(0 < len(b) <= 8 for b in batches)
    assert len(ranks[0]) != len(ranks[1])  # ranks may differ in length
    seen = sum(sum(per_rank, []), [])
    assert sorted(seen) == [100 * k + i for k, n in enumerate(sizes) for i in range(n)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_gives_the_full_batches_of_an_unshuffled_train_loader_first(shard_dir, num_workers):
    kw = dict(batch_size=16, shuffle_buffer=0, num_workers=num_workers, seed=3)
    full = event_ids(loader(shard_dir, **kw))
    every = event_ids(loader(shard_dir, role="eval", **{**kw, "shuffle_buffer": 30}))  # eval never shuffles
    # shard_dir's 120 events: 7 full batches + 8 events in one stream, 3 + 12 in each of two
    assert every[: len(full)] == full
    assert [len(b) for b in every[len(full) :]] == ([8] if num_workers == 0 else [12, 12])
    assert sorted(sum(every, [])) == list(range(120))


@pytest.mark.parametrize("in_memory", [False, True])
def test_eval_a_data_set_smaller_than_a_batch_is_one_batch(tmp_path, in_memory):
    events = make_events(5)
    data = loader(write_root(tmp_path / "small.root", events), in_memory=in_memory, role="eval")
    (batch,) = list(data)
    assert len(data) == 1 and batch["event"].tolist() == list(range(5))
    x, _, time_valid = normalize(events["npho"], events["relative_time"], NORM)
    np.testing.assert_array_equal(batch["x"].numpy(), x)
    np.testing.assert_array_equal(batch["time_valid"].numpy(), time_valid)
    np.testing.assert_array_equal(batch["energyTruth"].numpy(), events["energyTruth"])


@pytest.mark.parametrize(("num_workers", "in_memory"), MODES)
def test_eval_a_rank_without_events_yields_nothing(tmp_path, num_workers, in_memory):
    path = write_root(tmp_path / "one.root", make_events(1))  # rank 0 of 2 gets entries [0, 0)
    empty, other = (loader(path, rank=r, world_size=2, num_workers=num_workers, in_memory=in_memory,
                           role="eval") for r in range(2))  # fmt: skip
    assert len(empty) == 0 and list(empty) == [] and list(empty) == []
    assert (empty.state_dict()["epoch"], empty.state_dict()["batches_done"]) == (0, 0)
    assert event_ids(other) == [[0]]


def test_eval_takes_max_val_events_and_no_step_limit(shard_dir):
    data = loader(shard_dir, role="eval", steps_per_epoch=3, max_events=10, max_val_events=50)
    assert data.n_events == 50 and sum(event_ids(data), []) == list(range(50)) and len(data) == 7


def test_unknown_role_or_extra_column_is_refused(shard_dir):
    with pytest.raises(ValueError, match="role must be one of"):
        loader(shard_dir, role="validate")
    with pytest.raises(ValueError, match=r"unknown extra loader column\(s\) \['npho_weight'\]"):
        loader(shard_dir, extras=["npho_weight"])


# ------------------------------------------------------------------------------- extra columns
EXTRAS = ("time_weight", "npho_raw", "time_raw")


@pytest.mark.parametrize(("num_workers", "in_memory"), MODES)
def test_extra_columns_hold_the_files_raw_inputs_and_the_time_weight(shard_dir, shard_events, num_workers,
                                                                      in_memory):
    data = loader(shard_dir, batch_size=16, shuffle_buffer=30, num_workers=num_workers, in_memory=in_memory,
                  extras=EXTRAS, role="eval")
    for batch in list(data) + list(data):  # recycled batch memory must not mix events up
        ids = batch["event"].numpy()
        npho, time = shard_events["npho"][ids], shard_events["relative_time"][ids]
        np.testing.assert_array_equal(batch["npho_raw"].numpy(), npho)  # bit-exact: the files' values
        np.testing.assert_array_equal(batch["time_raw"].numpy(), time)
        _, _, time_valid = normalize(npho, time, NORM)
        assert batch["time_weight"].dtype == torch.float32
        np.testing.assert_array_equal(batch["time_weight"].numpy(), time_loss_weight(npho, time_valid))
        expected = np.where(time_valid, np.sqrt(npho.astype(np.float64)), 0.0)
        np.testing.assert_allclose(batch["time_weight"].numpy(), expected, rtol=1e-7)
        assert (batch["time_weight"].numpy()[~time_valid] == 0).all() and (~time_valid).any()


def test_without_extras_the_batch_has_only_the_model_columns(shard_dir):
    batch = next(iter(loader(shard_dir)))
    assert set(batch) == {"x", "npho_valid", "time_valid", "run", "event", *TRUTH_SHAPES}
    (only_weight,) = list(loader(shard_dir, extras=["time_weight"], steps_per_epoch=1))
    assert set(only_weight) == set(batch) | {"time_weight"}
