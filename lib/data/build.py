"""The config -> loader mapping: every EventLoader (training, validation, evaluation, benchmarks,
lib.predict) is built here from a run config's `data` and `normalization` sections."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.data.files import DataError, FileInfo, expand_inputs, open_root
from lib.data.loader import EventLoader
from lib.data.stream import TIME_WEIGHT


def run_extras(cfg: Any) -> tuple[str, ...]:
    """Extra batch columns the run's training needs: the time-loss weight with training.time.use_npho_weight."""
    return (TIME_WEIGHT,) if cfg.training.time.use_npho_weight else ()


def build_loader(cfg: Any, split: str, rank: int, world_size: int, *,
                 extras: Sequence[str] = ()) -> EventLoader | None:
    """EventLoader for `split` ("train" or "val") of `cfg` on this rank; None when val_path is unset.

    "train" is a training loader (shuffled, full batches), "val" an evaluation loader (every
    event in file order); both carry `run_extras(cfg)` and the `extras` asked for here (e.g.
    the raw inputs for the classical baseline). Every file is opened and checked here (paths,
    branches, sensor counts), so bad input fails before any model is built.
    """
    train = split == "train"
    paths = cfg.data.train_path if train else cfg.data.val_path
    if paths is None:
        if train:
            raise DataError("data.train_path is not set; give it in the config or with --train_path")
        return None
    return EventLoader(
        expand_inputs(paths, config_key=f"data.{split}_path"), cfg.data, cfg.normalization,
        role="train" if train else "eval", rank=rank, world_size=world_size, seed=cfg.training.seed,
        extras=tuple(dict.fromkeys([*run_extras(cfg), *extras])),
    )


def prediction_loader(cfg: Any, paths: Sequence[str], batch_size: int, extras: Sequence[str] = ()) -> EventLoader:
    """Evaluation loader over any `paths` (lib.predict's --input) with the run's data settings
    (tree, branches), `batch_size` events per batch, every event in file order, streamed, and the
    truth branches the input has in common. No worker processes: DataLoader interleaves the batches
    of its workers, which would reorder the events (the loader's threads still read ahead)."""
    data = cfg.data.model_copy(update={"batch_size": batch_size, "max_val_events": None, "in_memory": False,
                                       "truth_branches": None, "num_workers": 0})
    return EventLoader(expand_inputs(list(paths), config_key="--input"), data, cfg.normalization, role="eval",
                       extras=extras)


def read_branches(files: list[FileInfo], names: list[str], tree_name: str) -> dict[str, np.ndarray]:
    """Values of scalar/small branches (e.g. truth) of the used entries of `files`, concatenated.

    Reads only the named branches, so it is cheap next to the sensor arrays; used to fit
    target standardization once before training.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for info in files:
        if info.kind == "root":
            with open_root(info.path) as file:
                arrays = file[tree_name].arrays(names, library="np", entry_stop=info.n_entries)
        else:
            with np.load(info.path) as file:
                arrays = {name: file[name][: info.n_entries] for name in names}
        for name in names:
            parts[name].append(np.asarray(arrays[name]))
    return {name: np.concatenate(values) for name, values in parts.items()}
