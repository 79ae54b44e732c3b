"""Which sensors an inpainting evaluation fills, with a mask type per filled sensor (`evaluation_masks`):
- MASK_ARTIFICIAL (0): hidden on purpose, its value known (the truth): in MC the sensors of the event's run
  in the dead-channel list (lib.data.dead_channels) that the file reads as valid, and (MC and data) a random
  `artificial_fraction` of the other healthy sensors;
- MASK_DEAD (1): no value to compare with: sensors the file flags (fill values, NaN: the validity masks),
  and in real data the listed ones too. They get predictions only (plausibility).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from lib.data.dead_channels import DeadChannels
from lib.geometry import N_SENSORS

MASK_ARTIFICIAL, MASK_DEAD = 0, 1
NOT_MASKED = -1


def listed_dead(dead_channels: DeadChannels, runs: np.ndarray) -> np.ndarray:
    """(B, 4760) bool: the listed dead sensors of each event's run (the one list of a file without run numbers;
    none for a run the file does not name)."""
    runs = np.asarray(runs).reshape(-1)
    dead = np.zeros((len(runs), N_SENSORS), dtype=bool)
    for run in np.unique(runs):
        dead[np.ix_(runs == run, dead_channels.for_run(int(run)))] = True
    return dead


def event_generators(seed: int, runs: np.ndarray, events: np.ndarray) -> list[np.random.Generator]:
    """One generator per event, seeded by (seed, run, event): an event gets the same draw in any batch."""
    return [np.random.default_rng([seed, int(run) & 0x7FFFFFFF, int(event) & 0xFFFFFFFF])
            for run, event in zip(np.asarray(runs).ravel(), np.asarray(events).ravel())]


def evaluation_masks(batch: Mapping[str, torch.Tensor], dead_list: DeadChannels | None, real_data: bool,
                     artificial_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask (B, 4760) bool, mask_type (B, 4760) int8: MASK_ARTIFICIAL, MASK_DEAD or NOT_MASKED) of a batch
    (see the module docstring)."""
    valid = batch["npho_valid"].cpu().numpy()
    runs, events = batch["run"].cpu().numpy(), batch["event"].cpu().numpy()
    listed = listed_dead(dead_list, runs) if dead_list is not None else np.zeros_like(valid)
    dead = ~valid | (listed if real_data else False)
    artificial = valid & listed & (not real_data)
    if artificial_fraction > 0:
        healthy = valid & ~dead & ~artificial
        for row, generator in enumerate(event_generators(seed, runs, events)):
            artificial[row] |= healthy[row] & (generator.random(N_SENSORS) < artificial_fraction)
    mask_type = np.full(valid.shape, NOT_MASKED, dtype=np.int8)
    mask_type[dead] = MASK_DEAD
    mask_type[artificial] = MASK_ARTIFICIAL
    return mask_type != NOT_MASKED, mask_type
