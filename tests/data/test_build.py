"""lib.data.build: the one config -> loader mapping (roles, schema defaults, extra columns, prediction)."""
from __future__ import annotations

from lib.config import MAEConfig, load_config
from lib.config.schema import DataConfig
from lib.data.build import build_loader, prediction_loader


def _cfg(shard_dir, **data) -> MAEConfig:
    fields = {"train_path": str(shard_dir), "val_path": str(shard_dir), "batch_size": 8, "num_workers": 0, **data}
    return MAEConfig(data=DataConfig(**fields))


def test_defaults_come_from_the_schema(shard_dir):
    val = build_loader(MAEConfig(data=DataConfig(val_path=str(shard_dir))), "val", 0, 1)
    assert (val.num_workers, val.batch_size) == (DataConfig().num_workers, DataConfig().batch_size) == (2, 256)


def test_train_and_val_roles(shard_dir):
    cfg = _cfg(shard_dir, steps_per_epoch=4, max_events=60, max_val_events=30, shuffle_buffer=20)
    train, val = build_loader(cfg, "train", 0, 1), build_loader(cfg, "val", 0, 1)
    assert (len(train), train.n_events, train.shuffle, train.seed) == (4, 60, True, cfg.training.seed)
    assert (len(val), val.n_events, val.shuffle) == (4, 30, False)  # 3 full batches and one of 6 events
    assert [e for batch in val for e in batch["event"].tolist()] == list(range(30))
    assert build_loader(_cfg(shard_dir, val_path=None), "val", 0, 1) is None


def test_the_time_weight_travels_only_when_the_run_asks_for_it(shard_dir):
    plain = _cfg(shard_dir)
    assert "time_weight" not in next(iter(build_loader(plain, "train", 0, 1)))
    weighted = load_config(None, ["training.time.use_npho_weight=true", f"data.train_path={shard_dir}",
                                  f"data.val_path={shard_dir}", "data.batch_size=8", "data.num_workers=0"])
    for split in ("train", "val"):  # validation scores the same loss
        batch = next(iter(build_loader(weighted, split, 0, 1)))
        assert batch["time_weight"].shape == batch["time_valid"].shape
        assert (batch["time_weight"][~batch["time_valid"]] == 0).all() and batch["time_weight"].max() > 1


def test_prediction_loader_reads_every_event_of_any_input_in_file_order(shard_dir):
    cfg = _cfg(shard_dir, max_val_events=10, truth_branches=["no_such_branch"], in_memory=True, num_workers=2)
    loader = prediction_loader(cfg, [str(shard_dir)], batch_size=50, extras=("npho_raw",))
    batches = list(loader)
    assert [len(b["event"]) for b in batches] == [50, 50, 20] and not loader.in_memory
    assert [int(e) for b in batches for e in b["event"]] == list(range(120))  # workers would interleave chunks
    assert "npho_raw" in batches[0] and "energyTruth" in batches[0]
