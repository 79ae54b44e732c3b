"""The inference graph: in-graph normalization against the loader's, every npho scheme exported with parity,
refusals of what cannot be exported."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from lib.config import NormalizationConfig, RegressorConfig, load_config
from lib.evaluation.export_check import check_export, simulated_events, with_dead_channels
from lib.evaluation.export_formats import export_metadata, write_export
from lib.evaluation.exported_model import ExportError, load_exported_model
from lib.evaluation.inference_graph import GraphOutput, InferenceGraph, RawInputNormalization, RegressorGraph
from lib.io.atomic import temporary_files
from lib.normalization import NPHO_SCHEMES, normalize
from lib.recipes.finetune import build_regressor
from tests.fixtures_e2e import REG_CONFIG

NORMALIZATIONS = [NormalizationConfig(npho_scheme=scheme, preset=preset)
                  for scheme in NPHO_SCHEMES for preset in (None, "legacy")]
IDS = [f"{n.npho_scheme}-{n.preset or 'new'}" for n in NORMALIZATIONS]


def raw_events(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw events over every validity case: negative, zero, sub-threshold and threshold npho, domain boundaries,
    fill values, NaN, inf."""
    rng = np.random.default_rng(seed)
    npho = rng.exponential(300.0, (n, 4760)) * rng.choice([1.0, -0.5, 1e-3, 30.0], (n, 4760), p=[0.7, 0.1, 0.1, 0.1])
    time = rng.normal(0.0, 5e-8, (n, 4760))
    pick = rng.random((n, 4760))
    npho[pick < 0.01], time[(pick > 0.01) & (pick < 0.02)] = 1e10, 1e10
    npho[(pick > 0.02) & (pick < 0.03)], time[(pick > 0.03) & (pick < 0.04)] = np.nan, np.nan
    npho[(pick > 0.04) & (pick < 0.045)], time[(pick > 0.045) & (pick < 0.05)] = -np.inf, np.inf
    npho[(pick > 0.05) & (pick < 0.06)] = -1000.0  # the log1p domain boundary of the default scale
    npho[(pick > 0.06) & (pick < 0.08)] = 0.0  # the sqrt domain boundary (included), and sensors without light
    npho[(pick > 0.08) & (pick < 0.09)] = 100.0  # the default time threshold (included)
    return npho.astype(np.float32), time.astype(np.float32)


class NormalizationOnly(InferenceGraph):
    """A graph that returns the normalization itself (x, npho_valid, time_valid)."""

    part = "normalization"
    outputs = (GraphOutput("x", ""), GraphOutput("npho_valid", ""), GraphOutput("time_valid", ""))

    def forward(self, npho: Tensor, relative_time: Tensor) -> tuple[Tensor, ...]:
        return self.normalization(npho, relative_time)


def _fitted_regressor(norm: NormalizationConfig) -> RegressorGraph:
    cfg = load_config(REG_CONFIG, [], root=RegressorConfig)
    torch.manual_seed(0)
    model = build_regressor(cfg)
    for task in model.tasks.values():
        task.fit(torch.randn(64, task.n_outputs, dtype=torch.float64) * 5 + 10)
    return RegressorGraph(model, norm)


@pytest.mark.parametrize("norm", NORMALIZATIONS, ids=IDS)
def test_in_graph_normalization_matches_the_loaders(norm):
    npho, time = raw_events()
    x, npho_valid, time_valid = normalize(npho, time, norm)  # numpy: the loader's compiled kernel
    graph_x, graph_npho_valid, graph_time_valid = RawInputNormalization(norm)(torch.from_numpy(npho),
                                                                             torch.from_numpy(time))
    np.testing.assert_array_equal(graph_npho_valid.numpy(), npho_valid)
    np.testing.assert_array_equal(graph_time_valid.numpy(), time_valid)
    np.testing.assert_array_equal(graph_x.numpy()[~npho_valid, 0], norm.npho_sentinel)
    np.testing.assert_array_equal(graph_x.numpy()[~time_valid, 1], norm.time_sentinel)
    ulps = np.abs(graph_x.numpy() - x) / np.spacing(np.abs(x))
    assert ulps.max() <= 2  # the torch and numpy transforms round differently by at most 2 ulp
    torch_x = normalize(torch.from_numpy(npho), torch.from_numpy(time), norm)[0]  # the library's own torch path
    np.testing.assert_array_equal(graph_x.numpy(), torch_x.numpy())


@pytest.mark.parametrize("norm", NORMALIZATIONS[::2], ids=IDS[::2])
def test_every_npho_scheme_exports_to_onnx_as_the_loader_normalizes(norm, tmp_path):
    graph = NormalizationOnly(norm)
    path = write_export(graph, "onnx", tmp_path / "norm.onnx", export_metadata(graph, "onnx", {}))
    npho, time = raw_events(seed=1)
    got = load_exported_model(path)(npho, time)
    x, npho_valid, time_valid = normalize(npho, time, norm)
    np.testing.assert_array_equal(got["npho_valid"], npho_valid)
    np.testing.assert_array_equal(got["time_valid"], time_valid)
    # onnx has no log1p: log(1 + y) loses digits for y << 1, ~1e-8 in normalized units
    np.testing.assert_allclose(got["x"], x, rtol=5e-7, atol=1e-7)


@pytest.mark.parametrize("norm", NORMALIZATIONS[::2], ids=IDS[::2])
def test_a_regressor_exports_with_parity_under_every_normalization(norm, tmp_path):
    graph = _fitted_regressor(norm)
    npho, time = with_dead_channels(*simulated_events(8))
    summary = {}
    write_export(graph, "torchscript", tmp_path / "model.torchscript.pt", export_metadata(graph, "torchscript", {}),
                 verify=lambda tmp: summary.update(check_export(graph, "torchscript", tmp, npho, time)))
    assert summary["passed"] and set(summary["outputs"]) == {"E", "u", "v", "w"}


@torch.library.custom_op("xecmae_test::no_onnx", mutates_args=())
def no_onnx(x: Tensor) -> Tensor:
    """An op without an ONNX translation."""
    return x.clone()


@no_onnx.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


class WithUnsupportedOp(InferenceGraph):
    part = "test"
    outputs = (GraphOutput("y", ""),)

    def from_normalized(self, x: Tensor, npho_valid: Tensor, time_valid: Tensor) -> tuple[Tensor, ...]:
        return (torch.ops.xecmae_test.no_onnx(x).sum(dim=(1, 2)),)


def test_an_op_without_onnx_translation_is_refused_naming_it(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"xecmae_test\.no_onnx.*opset 18.*--format torchscript"):
        write_export(WithUnsupportedOp(NormalizationConfig()), "onnx", out, {})
    assert not out.exists() and temporary_files(tmp_path) == []


def test_a_regressor_with_unfitted_targets_is_refused():
    model = build_regressor(load_config(REG_CONFIG, [], root=RegressorConfig))
    with pytest.raises(ExportError, match="task 'energy' cannot predict: .*not fitted"):
        RegressorGraph(model, NormalizationConfig())


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_a_log_energy_target_exports_energy_in_gev_with_its_sigma(fmt, tmp_path):
    """tasks.energy.log_target: the graph holds the exp, so the export gives E (and sigma_E) in GeV."""
    cfg = load_config(REG_CONFIG, ["tasks={energy: {loss: beta_nll, log_target: true}}"], root=RegressorConfig)
    torch.manual_seed(0)
    model = build_regressor(cfg)
    model.tasks["energy"].fit(torch.empty(256, 1, dtype=torch.float64).uniform_(0.015, 0.06))
    graph = RegressorGraph(model, cfg.normalization)
    npho, time = with_dead_channels(*simulated_events(8))
    summary, path = {}, tmp_path / f"model.{fmt}"
    write_export(graph, fmt, path, export_metadata(graph, fmt, {}),
                 verify=lambda tmp: summary.update(check_export(graph, fmt, tmp, npho, time)))
    assert summary["passed"] and set(summary["outputs"]) == {"E", "sigma_E"}
    outputs = load_exported_model(path)(npho, time)
    assert ((outputs["E"] > 0.005) & (outputs["E"] < 0.2)).all(), outputs["E"]  # GeV, not log(GeV)
    assert (outputs["sigma_E"] > 0).all()
