"""Invalid-aware masking: random (random_mask) and from dead-channel patterns (dead_pattern_mask, inpainting_mask)."""
from __future__ import annotations

import pytest
import torch

from lib.geometry import N_SENSORS
from lib.models.masking import EventSeededNoise, dead_pattern_mask, inpainting_mask, random_mask


def _validity(batch: int, invalid_fraction: float, time_invalid_fraction: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    npho_valid = torch.rand(batch, N_SENSORS, generator=gen) >= invalid_fraction
    time_valid = npho_valid & (torch.rand(batch, N_SENSORS, generator=gen) >= time_invalid_fraction)
    return npho_valid, time_valid


def test_invalid_sensors_are_never_masked():
    npho_valid, time_valid = _validity(8, invalid_fraction=0.5, time_invalid_fraction=0.3)
    mask = random_mask(npho_valid, time_valid, 0.9, generator=torch.Generator().manual_seed(1))
    assert not (mask & ~npho_valid).any()


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.6, 0.75, 1.0])
def test_exact_count_per_event(ratio):
    npho_valid, time_valid = _validity(6, invalid_fraction=0.2, time_invalid_fraction=0.2, seed=2)
    npho_valid[0, :-5] = False  # an event with only 5 valid sensors
    mask = random_mask(npho_valid, time_valid, ratio, generator=torch.Generator().manual_seed(3))
    for event in range(mask.shape[0]):
        n_valid = int(npho_valid[event].sum())
        assert int(mask[event].sum()) == round(ratio * n_valid)


def test_actual_ratio_close_to_requested_on_large_batch():
    npho_valid, time_valid = _validity(64, invalid_fraction=0.1, time_invalid_fraction=0.3, seed=4)
    mask = random_mask(npho_valid, time_valid, 0.6, generator=torch.Generator().manual_seed(5))
    actual = mask.sum().item() / npho_valid.sum().item()
    assert abs(actual - 0.6) < 0.01


def test_time_scale_biases_towards_time_valid_sensors():
    npho_valid, time_valid = _validity(64, invalid_fraction=0.1, time_invalid_fraction=0.5, seed=6)

    def time_valid_fraction(scale: float) -> float:
        mask = random_mask(npho_valid, time_valid, 0.5, scale, generator=torch.Generator().manual_seed(7))
        return (mask & time_valid).sum().item() / time_valid.sum().item()

    unbiased = time_valid_fraction(1.0)
    assert abs(unbiased - 0.5) < 0.02
    assert time_valid_fraction(3.0) > unbiased + 0.1


def test_generator_makes_the_draw_reproducible():
    npho_valid, time_valid = _validity(4, invalid_fraction=0.1, time_invalid_fraction=0.1, seed=8)

    def draw(seed: int) -> torch.Tensor:
        return random_mask(npho_valid, time_valid, 0.6, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(11), draw(11))
    assert not torch.equal(draw(11), draw(12))


def test_event_without_valid_sensors_gets_no_mask():
    npho_valid, time_valid = _validity(3, invalid_fraction=0.1, time_invalid_fraction=0.1, seed=9)
    npho_valid[1] = False
    time_valid[1] = False
    mask = random_mask(npho_valid, time_valid, 0.6, generator=torch.Generator().manual_seed(10))
    assert not mask[1].any()
    assert int(mask[0].sum()) == round(0.6 * int(npho_valid[0].sum()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"mask_ratio": 0.5, "time_mask_ratio_scale": 0.0}, "mask_ratio_scale"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    npho_valid, time_valid = _validity(2, invalid_fraction=0.1, time_invalid_fraction=0.1)
    with pytest.raises(ValueError, match=message):
        random_mask(npho_valid, time_valid, **kwargs)


def test_mismatched_mask_shapes_raise():
    npho_valid, time_valid = _validity(2, invalid_fraction=0.1, time_invalid_fraction=0.1)
    with pytest.raises(ValueError, match="time_valid"):
        random_mask(npho_valid, time_valid[:1], 0.5)


def _patterns(n_patterns: int, dead_fraction: float, seed: int) -> torch.Tensor:
    return torch.rand(n_patterns, N_SENSORS, generator=torch.Generator().manual_seed(seed)) < dead_fraction


def test_dead_pattern_masks_exactly_one_pattern_restricted_to_valid_sensors():
    npho_valid, _ = _validity(32, invalid_fraction=0.2, time_invalid_fraction=0.1, seed=11)
    patterns = _patterns(3, 0.05, seed=12)
    torch.manual_seed(13)
    mask = dead_pattern_mask(npho_valid, patterns)
    assert not (mask & ~npho_valid).any()
    used = set()
    for event in range(len(mask)):
        matches = [p for p in range(len(patterns)) if torch.equal(mask[event], patterns[p] & npho_valid[event])]
        assert len(matches) == 1  # the patterns differ, so the event's mask names its pattern
        used.add(matches[0])
    assert used == {0, 1, 2}


def test_event_seeded_dead_patterns_are_fixed_per_event():
    npho_valid, time_valid = _validity(12, invalid_fraction=0.1, time_invalid_fraction=0.1, seed=14)
    patterns = _patterns(5, 0.03, seed=15)
    noise = EventSeededNoise(torch.arange(100, 112))
    first = inpainting_mask("mixed", npho_valid, time_valid, 0.05, patterns=patterns, generator=noise)
    order = torch.tensor([7, 2, 11])
    again = inpainting_mask("mixed", npho_valid[order], time_valid[order], 0.05, patterns=patterns,
                            generator=EventSeededNoise(torch.arange(100, 112)[order]))
    assert torch.equal(again, first[order])
    chosen = noise.choose(len(patterns), torch.device("cpu"))
    assert len(set(chosen.tolist())) > 1 and torch.equal(chosen, noise.choose(len(patterns), torch.device("cpu")))


def test_mixed_masks_the_pattern_plus_the_ratio_of_the_other_valid_sensors():
    npho_valid, time_valid = _validity(16, invalid_fraction=0.1, time_invalid_fraction=0.2, seed=16)
    patterns = _patterns(1, 0.04, seed=17)
    mask = inpainting_mask("mixed", npho_valid, time_valid, 0.05, patterns=patterns,
                           generator=EventSeededNoise(torch.arange(16)))
    assert not (mask & ~npho_valid).any()
    dead = patterns[0] & npho_valid
    assert (mask | ~dead).all()  # every valid dead sensor is masked
    others = npho_valid & ~dead
    assert (mask & others).sum(1).tolist() == torch.round(others.sum(1) * 0.05).long().tolist()
    only_dead = inpainting_mask("dead_pattern", npho_valid, time_valid, 0.05, patterns=patterns)
    assert torch.equal(only_dead, dead)


def test_random_mode_is_random_mask_and_pattern_modes_need_patterns():
    npho_valid, time_valid = _validity(4, invalid_fraction=0.1, time_invalid_fraction=0.1, seed=18)
    noise = EventSeededNoise(torch.arange(4))
    assert torch.equal(inpainting_mask("random", npho_valid, time_valid, 0.05, generator=noise),
                       random_mask(npho_valid, time_valid, 0.05, generator=noise))
    with pytest.raises(ValueError, match="needs dead-channel patterns"):
        inpainting_mask("dead_pattern", npho_valid, time_valid, 0.05)
    with pytest.raises(ValueError, match="training.mask_mode = 'stripes' is unknown"):
        inpainting_mask("stripes", npho_valid, time_valid, 0.05)
