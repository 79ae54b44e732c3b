"""Tests for lib/normalization: transforms, inverses, validity masks, time-loss weights, presets."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lib.normalization import (
    NPHO_SCHEMES,
    NormalizationConfig,
    check_compatible,
    describe,
    normalize,
    normalize_rows,
    npho_domain_min,
    npho_forward,
    npho_inverse,
    time_forward,
    time_inverse,
    time_loss_weight,
    validity_masks,
)

BACKENDS = ("numpy", "torch")


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """Any RuntimeWarning (log of negative, sqrt of NaN, overflow ...) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def as_backend(values, backend: str, dtype=np.float64):
    array = np.asarray(values, dtype=dtype)
    return torch.from_numpy(array) if backend == "torch" else array


def to_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def reference_npho(x: float, scheme: str, s1: float, s2: float) -> float:
    """The issue's formulas, written out with the math module."""
    if scheme == "log1p":
        return math.log(1.0 + x / s1) / s2
    if scheme == "sqrt":
        return math.sqrt(x) / math.sqrt(s1)
    if scheme == "anscombe":
        return 2.0 * math.sqrt(x + 0.375) / (2.0 * math.sqrt(s1 + 0.375))
    return x / s1


def sample_domain(cfg: NormalizationConfig, rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """Random raw npho strictly inside the scheme's domain, spanning several decades."""
    minimum, _ = npho_domain_min(cfg)
    low = max(minimum, -50.0)
    return low + 1e-3 + rng.uniform(0.0, 1.0, n) * 10.0 ** rng.uniform(0, 6, n)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_npho_round_trip(scheme, backend):
    cfg = NormalizationConfig(npho_scheme=scheme)
    raw = sample_domain(cfg, np.random.default_rng(0))
    back = npho_inverse(npho_forward(as_backend(raw, backend), cfg), cfg)
    assert type(back) is type(as_backend(raw, backend))
    np.testing.assert_allclose(to_numpy(back), raw, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_round_trip(backend):
    cfg = NormalizationConfig()
    raw = np.random.default_rng(1).uniform(-1e-6, 1e-6, 64)
    back = time_inverse(time_forward(as_backend(raw, backend), cfg), cfg)
    np.testing.assert_allclose(to_numpy(back), raw, rtol=1e-6, atol=1e-18)


@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_npho_formula_matches_reference(scheme):
    cfg = NormalizationConfig(npho_scheme=scheme, npho_scale=37.0, npho_scale2=2.5)
    points = [0.0, 0.5, 12.0, 1234.5, 2.0e5]
    got = to_numpy(npho_forward(np.array(points), cfg))
    want = [reference_npho(p, scheme, 37.0, 2.5) for p in points]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_time_formula_matches_reference():
    cfg = NormalizationConfig(time_scale=2e-7, time_shift=0.3)
    points = [-3e-7, 0.0, 1e-7, 5e-6]
    got = to_numpy(time_forward(np.array(points), cfg))
    np.testing.assert_allclose(got, [p / 2e-7 - 0.3 for p in points], rtol=1e-12)


@pytest.mark.parametrize(
    ("scheme", "minimum", "inclusive"),
    [("log1p", -1000.0, False), ("sqrt", 0.0, True), ("anscombe", -0.375, False),
     ("linear", -math.inf, False)],
)
def test_domain_minimum(scheme, minimum, inclusive):
    cfg = NormalizationConfig(npho_scheme=scheme)
    assert npho_domain_min(cfg) == (minimum, inclusive)
    if math.isinf(minimum):
        npho = np.array([-1e9, -1.0])
        expected = [True, True]
    else:
        npho = np.array([minimum - 1e-6, minimum, minimum + 1e-6])
        expected = [False, inclusive, True]
    npho_valid, _ = validity_masks(npho, np.zeros_like(npho), cfg)
    np.testing.assert_array_equal(npho_valid, expected)
    x, _, _ = normalize(npho, np.zeros_like(npho), cfg)
    assert np.isfinite(x).all()


# ---------------------------------------------------------------- validity masks and sentinels

# (raw npho, raw time, npho_valid, time_valid) for the default config (threshold 100).
CASES = [
    (500.0, 1e-7, True, True),  # ordinary sensor
    (1e10, 1e-7, False, False),  # missing npho marker
    (math.nan, 1e-7, False, False),
    (math.inf, 1e-7, False, False),
    (-math.inf, 1e-7, False, False),
    (-2000.0, 1e-7, False, False),  # below log1p domain (-1000)
    (50.0, 1e-7, True, False),  # below threshold: npho kept, time dropped
    (500.0, 1e10, True, False),  # missing time marker
    (500.0, -1e10, True, False),
    (500.0, math.nan, True, False),
    (500.0, math.inf, True, False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_and_sentinels(backend, dtype):
    cfg = NormalizationConfig(npho_sentinel=-7.0, time_sentinel=-9.0)
    npho, time, npho_ok, time_ok = (np.array(column) for column in zip(*CASES))
    x, npho_valid, time_valid = normalize(as_backend(npho, backend, dtype), as_backend(time, backend, dtype), cfg)
    x, npho_valid, time_valid = to_numpy(x), to_numpy(npho_valid), to_numpy(time_valid)
    np.testing.assert_array_equal(npho_valid, npho_ok)
    np.testing.assert_array_equal(time_valid, time_ok)
    assert x.shape == (len(CASES), 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x[~npho_ok, 0], -7.0)
    np.testing.assert_array_equal(x[~time_ok, 1], -9.0)
    want_npho = [reference_npho(n, "log1p", 1000.0, 4.08) for n in npho[npho_ok]]
    want_time = [t / 1.14e-7 + 0.46 for t in time[time_ok]]
    np.testing.assert_allclose(x[npho_ok, 0], want_npho, rtol=1e-6)
    np.testing.assert_allclose(x[time_ok, 1], want_time, rtol=1e-6)
    masks = validity_masks(as_backend(npho, backend, dtype), as_backend(time, backend, dtype), cfg)
    np.testing.assert_array_equal(to_numpy(masks[0]), npho_ok)
    np.testing.assert_array_equal(to_numpy(masks[1]), time_ok)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_all_nan_event(scheme, backend):
    cfg = NormalizationConfig(npho_scheme=scheme)
    nan = as_backend(np.full((2, 5), np.nan), backend)
    x, npho_valid, time_valid = normalize(nan, nan, cfg)
    assert to_numpy(x).shape == (2, 5, 2)
    assert not to_numpy(npho_valid).any() and not to_numpy(time_valid).any()
    np.testing.assert_array_equal(to_numpy(x)[..., 0], cfg.npho_sentinel)
    np.testing.assert_array_equal(to_numpy(x)[..., 1], cfg.time_sentinel)


def raw_sample(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 raw npho / time with ordinary values and every kind of bad value."""
    rng = np.random.default_rng(seed)
    npho = rng.uniform(-10.0, 3000.0, shape).astype(np.float32)
    time = rng.uniform(-5e-7, 5e-7, shape).astype(np.float32)
    npho.reshape(-1)[:4] = [np.nan, np.inf, 2e10, -1e5]
    time.reshape(-1)[5:8] = [np.nan, -np.inf, 3e10]
    return npho, time


def reference_masks(npho, time, cfg: NormalizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """validity_masks' documented rules, evaluated in float64."""
    npho, time = np.asarray(npho, np.float64), np.asarray(time, np.float64)
    minimum, inclusive = npho_domain_min(cfg)
    with np.errstate(invalid="ignore"):
        in_domain = npho >= minimum if inclusive else npho > minimum
        npho_ok = np.isfinite(npho) & (npho <= 9e9) & in_domain
        time_ok = npho_ok & (npho >= cfg.npho_threshold) & np.isfinite(time) & (np.abs(time) <= 9e9)
    return npho_ok, time_ok


@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_numpy_and_torch_agree(scheme):
    cfg = NormalizationConfig(npho_scheme=scheme)
    npho, time = raw_sample((3, 4, 16), seed=2)
    out_np = normalize(npho, time, cfg)
    out_torch = normalize(torch.from_numpy(npho), torch.from_numpy(time), cfg)
    assert all(isinstance(t, torch.Tensor) for t in out_torch)
    np.testing.assert_allclose(out_np[0], out_torch[0].numpy(), rtol=1e-6, atol=0)
    for a, b in zip(out_np[1:], out_torch[1:]):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_compiled_kernel_gives_the_bits_of_the_array_operations(scheme, dtype, monkeypatch):
    # numpy input goes through lib.normalization.kernel; the generic array operations (used
    # for tensors) must give the same bits on numpy input, at every bound and across blocks
    import lib.normalization.transforms as normalization

    monkeypatch.setattr(normalization, "_BLOCK", 64)
    cfg = NormalizationConfig(npho_scheme=scheme, npho_threshold=0.7, npho_sentinel=-7.0, time_sentinel=-9.0)
    edges = np.array([npho_domain_min(cfg)[0], 0.0, -0.0, 0.7, 9e9, -9e9, 1e10, np.nan, np.inf, -np.inf], dtype)
    edges = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf))])
    npho, time = (a.astype(dtype) for a in raw_sample((5, 40), seed=6))
    npho.reshape(-1)[20 : 20 + len(edges)] = edges
    time.reshape(-1)[100 : 100 + len(edges)] = edges
    compiled = normalize(npho, time, cfg)
    monkeypatch.setattr(normalization, "_normalize_compiled", normalization._normalize_generic)
    generic = normalize(npho, time, cfg)
    for a, b in zip(compiled, generic):
        np.testing.assert_array_equal(a, b)
    _, npho_valid, time_valid = compiled
    assert 0 < npho_valid.sum() < npho_valid.size and 0 < time_valid.sum() < npho_valid.sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_input_is_judged_like_its_float64_value(backend):
    # bounds that float32 cannot represent (0.7 and 9e9 round down, -0.7 up), and float32
    # values right at and next to each bound
    cfg = NormalizationConfig(npho_threshold=0.7, npho_scale=0.7)
    bounds = np.array([0.7, -0.7, 9e9, -9e9, 0.0], np.float32)
    npho = np.concatenate([bounds, np.nextafter(bounds, np.inf), np.nextafter(bounds, -np.inf)])
    npho32, time32 = npho.astype(np.float32), np.roll(npho, 3).astype(np.float32)
    got = validity_masks(as_backend(npho32, backend, np.float32), as_backend(time32, backend, np.float32), cfg)
    want = reference_masks(npho32, time32, cfg)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(to_numpy(g), w)
    assert to_numpy(got[0]).any() and not to_numpy(got[0]).all() and to_numpy(got[1]).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_in_float32_matches_float64_across_blocks(backend, monkeypatch):
    import lib.normalization.transforms as normalization

    monkeypatch.setattr(normalization, "_BLOCK", 64)  # several blocks and a partial last one
    cfg = NormalizationConfig()
    npho, time = raw_sample((7, 50), seed=3)
    out = normalize(as_backend(npho, backend, np.float32), as_backend(time, backend, np.float32), cfg)
    x, npho_valid, time_valid = (to_numpy(a) for a in out)
    x64, npho_valid64, time_valid64 = normalize(npho.astype(np.float64), time.astype(np.float64), cfg)
    assert x.dtype == np.float32 and x.shape == (7, 50, 2)
    np.testing.assert_array_equal(npho_valid, reference_masks(npho, time, cfg)[0])
    np.testing.assert_array_equal(time_valid, reference_masks(npho, time, cfg)[1])
    np.testing.assert_array_equal(npho_valid, npho_valid64)
    np.testing.assert_array_equal(time_valid, time_valid64)
    np.testing.assert_allclose(x, x64, rtol=1e-6, atol=1e-7)
    assert np.isfinite(x).all() and 0 < (~npho_valid).sum() < 8 and (~time_valid).sum() > 4  # bad values are rare
    np.testing.assert_array_equal(x[~npho_valid, 0], cfg.npho_sentinel)
    np.testing.assert_array_equal(x[~time_valid, 1], cfg.time_sentinel)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_loss_weight_is_sqrt_raw_npho_where_time_is_valid(backend):
    cfg = NormalizationConfig(npho_threshold=-5.0)  # lets a negative npho be time-valid
    npho = np.array([[150.0, 2.0e4, 1e10, -3.0], [np.nan, 300.0, 4.0, 0.0]])
    time = np.array([[1e-7, np.nan, 0.0, 0.0], [0.0, 2e-7, 3e-7, 0.0]])
    _, _, time_valid = normalize(as_backend(npho, backend), as_backend(time, backend), cfg)
    weight = to_numpy(time_loss_weight(as_backend(npho, backend), time_valid))
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, np.float32([[math.sqrt(150.0), 0, 0, 0], [0, math.sqrt(300.0), 2, 0]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_time_weight_gives_the_bits_of_the_array_operations(dtype):
    # normalize_rows writes the weights in the compiled kernel; time_loss_weight computes them
    # with numpy array operations: the same bits, at every bound (torch's float32 sqrt may differ in the last bit)
    cfg = NormalizationConfig(npho_threshold=-0.5)
    edges = np.array([-0.5, 0.0, -0.0, 0.7, 2.0, 9e9, 1e10, np.nan, np.inf], dtype)
    edges = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf))])
    npho, time = (a.astype(dtype) for a in raw_sample((6, 40), seed=7))
    npho.reshape(-1)[20 : 20 + len(edges)] = edges
    rows = np.array([4, 0, 2], np.int64)
    x, masks = np.zeros((3, 40, 2), np.float32), [np.zeros((3, 40), bool) for _ in range(2)]
    weight = np.full((3, 40), 7.0, np.float32)
    normalize_rows(npho, time, cfg, [(rows, np.arange(3), (x, *masks, weight))])
    _, _, time_valid = normalize(npho[rows], time[rows], cfg)
    np.testing.assert_array_equal(masks[1], time_valid)
    np.testing.assert_array_equal(weight, time_loss_weight(npho[rows], time_valid))
    on_torch = time_loss_weight(torch.from_numpy(npho[rows]), torch.from_numpy(time_valid)).numpy()
    np.testing.assert_allclose(weight, on_torch, rtol=1e-6, atol=0)
    assert 0 < time_valid.sum() < time_valid.size and (weight[time_valid] > 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_into_given_arrays(backend):
    cfg = NormalizationConfig()
    npho, time = raw_sample((3, 16), seed=4)
    npho, time = as_backend(npho, backend, np.float32), as_backend(time, backend, np.float32)
    x = as_backend(np.full((5, 16, 2), 7.0), backend, np.float32)
    masks = [as_backend(np.zeros((5, 16), bool), backend, bool) for _ in range(2)]
    out = (x[1:4], masks[0][1:4], masks[1][1:4])
    got = normalize(npho, time, cfg, out=out)
    assert all(g is o for g, o in zip(got, out))
    for a, b in zip(got, normalize(npho, time, cfg)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert (to_numpy(x)[[0, 4]] == 7.0).all() and not to_numpy(masks[0])[[0, 4]].any()  # rows outside untouched
    with pytest.raises(ValueError, match=r"out x must be a contiguous float32 .* of shape \(3, 16, 2\)"):
        normalize(npho, time, cfg, out=(x[:3, :, :1], *out[1:]))
    with pytest.raises(ValueError, match="out npho_valid must be a contiguous bool"):
        normalize(npho, time, cfg, out=(out[0], x[1:4, :, 0], out[2]))


def test_bad_inputs_raise():
    cfg = NormalizationConfig()
    with pytest.raises(ValueError, match="shape"):
        normalize(np.zeros(3), np.zeros(4), cfg)
    with pytest.raises(TypeError, match="both"):
        normalize(np.zeros(3), torch.zeros(3), cfg)


# ---------------------------------------------------------------- config, presets, metadata


def test_legacy_preset_and_overrides():
    legacy = NormalizationConfig.from_preset("legacy")
    assert (legacy.npho_scale, legacy.npho_scale2, legacy.time_scale, legacy.time_shift) == (
        0.58, 1.0, 6.5e-8, 0.5)
    from_yaml = NormalizationConfig.model_validate({"preset": "legacy", "time_shift": 0.1})
    assert from_yaml.npho_scale == 0.58 and from_yaml.time_shift == 0.1
    assert NormalizationConfig.from_preset("legacy", npho_scale=2.0).npho_scale == 2.0
    assert check_compatible(NormalizationConfig.from_preset("new"), NormalizationConfig()) == []


def test_describe_round_trips():
    cfg = NormalizationConfig.from_preset("legacy", npho_scheme="sqrt", npho_threshold=5.0)
    assert NormalizationConfig(**describe(cfg)) == cfg


def test_invalid_config_rejected():
    with pytest.raises(ValidationError, match="npho_scal"):
        NormalizationConfig(npho_scal=3.0)
    with pytest.raises(ValidationError, match="unknown preset 'old'"):
        NormalizationConfig(preset="old")
    with pytest.raises(ValidationError, match="npho_scale"):
        NormalizationConfig(npho_scale=0.0)
    with pytest.raises(ValidationError, match="npho_scheme"):
        NormalizationConfig(npho_scheme="log")
    with pytest.raises(ValidationError):
        NormalizationConfig().npho_scale = 2.0  # frozen


def test_check_compatible_lists_differing_fields():
    a = NormalizationConfig()
    b = NormalizationConfig(npho_scheme="sqrt", time_shift=0.0)
    assert sorted(check_compatible(a, b)) == ["npho_scheme", "time_shift"]
    assert check_compatible(a, NormalizationConfig()) == []
