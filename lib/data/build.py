"""Build the train / validation loaders of a run from its resolved config."""
from __future__ import annotations

from typing import Any

import numpy as np

from lib.data.files import DataError, FileInfo, expand_inputs, open_root
from lib.data.loader import EventLoader


def build_loader(cfg: Any, split: str, rank: int, world_size: int) -> EventLoader | None:
    """EventLoader for `split` ("train" or "val") of `cfg` on this rank; None when val_path is unset.

    Every file is opened and checked here (paths, branches, sensor counts), so bad input
    fails before any model is built.
    """
    data = cfg.data
    train = split == "train"
    paths = data.train_path if train else data.val_path
    if paths is None:
        if train:
            raise DataError("data.train_path is not set; give it in the config or with --train_path")
        return None
    return EventLoader(
        expand_inputs(paths, config_key=f"data.{split}_path"),
        batch_size=data.batch_size,
        norm=cfg.normalization,
        tree_name=data.tree_name,
        npho_branch=data.npho_branch,
        time_branch=data.time_branch,
        truth_branches=data.truth_branches,
        shuffle=train,
        shuffle_buffer=data.shuffle_buffer,
        num_workers=data.num_workers,
        seed=cfg.training.seed,
        rank=rank,
        world_size=world_size,
        in_memory=data.in_memory,
        steps_per_epoch=data.steps_per_epoch if train else None,
        max_events=data.max_events if train else data.max_val_events,
        drop_last=train,
    )


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
