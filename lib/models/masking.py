"""Invalid-aware random masking of sensors for MAE pretraining."""
from __future__ import annotations

import torch

_INVALID_NOISE = 2.0  # above any uniform noise in [0, 1): invalid sensors sort last


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
