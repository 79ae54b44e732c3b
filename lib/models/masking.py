"""Invalid-aware masking of sensors: random (MAE pretraining, inpainter) and from dead-channel patterns (inpainter).

Only npho-valid sensors are ever masked: a masked sensor is one whose truth the loss can use.
"""
from __future__ import annotations

import torch

_INVALID_NOISE = 2.0  # above any uniform noise in [0, 1): invalid sensors sort last
_PATTERN_SEED_SALT = 0x2545F4914F6CDD1D  # makes an event's pattern choice independent of its mask noise


class EventSeededNoise:
    """Mask noise of a batch drawn per event, from a generator seeded by the event alone: an event gets the same
    mask in any batch, on any rank and in any epoch (fixed validation masks). Drawn on the CPU, so the masks
    are the same on every device too."""

    def __init__(self, seeds: torch.Tensor) -> None:
        """`seeds`: (B,) non-negative integers, one per event."""
        self.seeds = [int(seed) for seed in seeds.reshape(-1).tolist()]

    @classmethod
    def from_ids(cls, run: torch.Tensor, event: torch.Tensor) -> EventSeededNoise:
        """Seeds from each event's run and event numbers (the low 31 and 32 bits of each)."""
        return cls((run.reshape(-1).long().cpu() & 0x7FFFFFFF) * 2**32 + (event.reshape(-1).long().cpu() & 0xFFFFFFFF))

    def draw(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """(B, n_sensors) uniform noise in [0, 1), row i from the generator of seed i."""
        if shape[0] != len(self.seeds):
            raise ValueError(f"EventSeededNoise holds {len(self.seeds)} seeds for a batch of {shape[0]} events")
        generator = torch.Generator()
        rows = [torch.rand(shape[1], generator=generator.manual_seed(seed)) for seed in self.seeds]
        return torch.stack(rows).to(device) if rows else torch.empty(tuple(shape), device=device)

    def choose(self, n_options: int, device: torch.device) -> torch.Tensor:
        """(B,) int64 in [0, n_options), one per event from its own seed (independent of its `draw` noise)."""
        generator = torch.Generator()
        picks = [int(torch.randint(n_options, (1,), generator=generator.manual_seed(seed ^ _PATTERN_SEED_SALT)))
                 for seed in self.seeds]
        return torch.tensor(picks, dtype=torch.long, device=device)


def random_mask(
    npho_valid: torch.Tensor,
    time_valid: torch.Tensor,
    mask_ratio: float,
    time_mask_ratio_scale: float = 1.0,
    generator: torch.Generator | EventSeededNoise | None = None,
) -> torch.Tensor:
    """Pick round(mask_ratio * n_valid) of each event's npho-valid sensors to hide; (B, 4760) bool, True = masked.

    Sensors are ranked by uniform noise with invalid ones pushed to the end, so they
    are never picked; the n_masked lowest-noise sensors of each event are masked. `time_mask_ratio_scale` > 1 divides the noise of time-valid
    sensors by the scale, biasing the choice towards them; 1 is unbiased. `generator`
    (on the masks' device) makes the draw reproducible; an EventSeededNoise fixes each
    event's mask by its seed.
    """
    if npho_valid.ndim != 2 or npho_valid.shape != time_valid.shape:
        raise ValueError(
            f"npho_valid and time_valid must both be (B, n_sensors); got {tuple(npho_valid.shape)} "
            f"and {tuple(time_valid.shape)}"
        )
    if npho_valid.dtype != torch.bool or time_valid.dtype != torch.bool:
        raise ValueError(f"validity masks must be bool tensors, got {npho_valid.dtype} and {time_valid.dtype}")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio = {mask_ratio} must lie in [0, 1] (training.mask_ratio)")
    if not time_mask_ratio_scale > 0.0:
        raise ValueError(
            f"time_mask_ratio_scale = {time_mask_ratio_scale} must be > 0 (training.time.mask_ratio_scale)"
        )
    if isinstance(generator, EventSeededNoise):
        noise = generator.draw(npho_valid.shape, npho_valid.device)
    else:
        noise = torch.rand(npho_valid.shape, generator=generator, device=npho_valid.device)
    if time_mask_ratio_scale != 1.0:
        noise = torch.where(time_valid, noise / time_mask_ratio_scale, noise)
    noise = noise.masked_fill(~npho_valid, _INVALID_NOISE)
    n_masked = torch.round(npho_valid.sum(dim=1, dtype=torch.float64) * mask_ratio).long()
    most = round(mask_ratio * noise.shape[1])  # no event masks more: a bound known without a device sync
    lowest = noise.topk(most, dim=1, largest=False, sorted=True).indices  # a partial sort: cheaper than argsort
    picked = torch.arange(most, device=noise.device).expand_as(lowest) < n_masked.unsqueeze(1)
    return torch.zeros_like(npho_valid).scatter_(1, lowest, picked)


def dead_pattern_mask(npho_valid: torch.Tensor, patterns: torch.Tensor,
                      generator: EventSeededNoise | None = None) -> torch.Tensor:
    """Mask each event with one of `patterns` (P, n_sensors) bool (dead-channel lists, lib.data.dead_channels),
    chosen uniformly (by the global RNG, or by each event's seed), restricted to the event's npho-valid sensors."""
    if patterns.ndim != 2 or patterns.shape[1] != npho_valid.shape[1] or not len(patterns):
        raise ValueError(f"dead patterns must be (P >= 1, {npho_valid.shape[1]}) bool, got {tuple(patterns.shape)}")
    if isinstance(generator, EventSeededNoise):
        index = generator.choose(len(patterns), npho_valid.device)
    else:
        index = torch.randint(len(patterns), (npho_valid.shape[0],), device=npho_valid.device)
    return patterns.to(npho_valid.device)[index] & npho_valid


def inpainting_mask(mode: str, npho_valid: torch.Tensor, time_valid: torch.Tensor, mask_ratio: float,
                    time_mask_ratio_scale: float = 1.0, patterns: torch.Tensor | None = None,
                    generator: EventSeededNoise | None = None) -> torch.Tensor:
    """The inpainter's training mask (B, n_sensors) bool for training.mask_mode `mode`: random (random_mask),
    dead_pattern (dead_pattern_mask) or mixed (a dead pattern plus random_mask over the other valid sensors)."""
    if mode == "random":
        return random_mask(npho_valid, time_valid, mask_ratio, time_mask_ratio_scale, generator)
    if mode not in ("dead_pattern", "mixed"):
        raise ValueError(f"training.mask_mode = {mode!r} is unknown; use random, dead_pattern or mixed")
    if patterns is None:
        raise ValueError(f"training.mask_mode = {mode} needs dead-channel patterns (data.dead_channels)")
    dead = dead_pattern_mask(npho_valid, patterns, generator)
    if mode == "dead_pattern":
        return dead
    return dead | random_mask(npho_valid & ~dead, time_valid, mask_ratio, time_mask_ratio_scale, generator)
