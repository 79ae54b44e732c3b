"""Shared data fixtures: tiny ROOT / npz shards written here with uproot and numpy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.geometry import N_SENSORS

pytest_plugins = ["tests.slurm.availability"]  # `slurm` tests: skipped without a cluster, failed in CI

# per-event shapes of the truth branches the real files carry
TRUTH_SHAPES = {
    "energyTruth": (), "timeTruth": (), "uvwTruth": (3,), "xyzTruth": (3,),
    "emiAng": (2,), "emiVec": (3,), "xyzVTX": (3,),
}  # fmt: skip


def make_events(n: int, first_event: int = 0, n_sensors: int = N_SENSORS, seed: int = 0) -> dict[str, np.ndarray]:
    """Random events; `event` numbers them first_event, first_event + 1, ... (unique ids)."""
    rng = np.random.default_rng([seed, first_event])
    events = {
        "npho": rng.exponential(300.0, (n, n_sensors)).astype(np.float32),
        "relative_time": rng.normal(0.0, 5e-8, (n, n_sensors)).astype(np.float32),
        "run": np.full(n, 7, dtype=np.int32),
        "event": np.arange(first_event, first_event + n, dtype=np.int64),
    }
    for name, shape in TRUTH_SHAPES.items():
        events[name] = rng.normal(size=(n, *shape)).astype(np.float32)
    return events


def write_root(path: Path, events: dict[str, np.ndarray], basket_events: int = 10, tree: str = "tree") -> Path:
    """ROOT file with one LZ4-compressed basket per `basket_events` entries."""
    import uproot

    n = len(events["npho"])
    types = {k: (v.dtype, v.shape[1:]) if v.ndim > 1 else v.dtype for k, v in events.items()}
    with uproot.recreate(path, compression=uproot.LZ4(1)) as f:
        f.mktree(tree, types)
        for lo in range(0, n, basket_events):
            f[tree].extend({k: v[lo : lo + basket_events] for k, v in events.items()})
    return path


def write_npz(path: Path, events: dict[str, np.ndarray]) -> Path:
    np.savez(path, **events)
    return path


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    """3 ROOT shards of 40 events (baskets of 10), event ids 0..119 in file order."""
    root = tmp_path_factory.mktemp("shards")
    for k in range(3):
        write_root(root / f"shard_{k}.root", make_events(40, first_event=40 * k))
    return root


@pytest.fixture(scope="session")
def shard_events(shard_dir) -> dict[str, np.ndarray]:
    """The events of `shard_dir`, concatenated (row i has event id i)."""
    parts = [make_events(40, first_event=40 * k) for k in range(3)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
