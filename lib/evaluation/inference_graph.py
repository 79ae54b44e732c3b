"""Torch modules that run a trained model on raw sensor arrays: the graphs lib.export writes to files.

An exported graph takes what the experiment's C++ side has, raw `npho` and `relative_time` of
shape (B, 4760) float32 with fill values (1e10, NaN) where a channel is dead, applies the run's
normalization and validity rules itself (`RawInputNormalization`) and returns named outputs:
a regressor its predictions in physical units (`RegressorGraph`: one (B,) tensor per output,
e.g. E in GeV, u v w in cm, theta phi in degrees, sigma_<output> where the task predicts one),
an encoder its tokens (`EncoderGraph`), an inpainter its predictions at the dead (npho-invalid)
channels (`InpainterGraph`). Each graph also runs from already normalized inputs
(`from_normalized(x, npho_valid, time_valid)`), which is how lib.evaluation.export_check compares
it with the loader's normalization. The models are used through their public faces only
(Regressor.head_outputs, XECEncoder(x, None), XECInpainter(...), the tasks' predict / predict_sigma).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lib.evaluation.exported_model import ExportError
from lib.evaluation.units import CHANNEL_UNITS, to_physical
from lib.geometry import N_SENSORS
from lib.normalization import RAW_MISSING_ABOVE, NormalizationConfig, npho_domain_min, npho_forward, time_forward


@dataclass(frozen=True)
class GraphOutput:
    """One named output of an exported graph: its unit, the task it belongs to and its per-event shape."""

    name: str
    unit: str
    task: str | None = None
    shape: tuple[int, ...] = ()

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description for the export metadata (shape with a leading "batch")."""
        return {"name": self.name, "unit": self.unit, "task": self.task, "shape": ["batch", *self.shape]}


class RawInputNormalization(nn.Module):
    """lib.normalization's validity rules and transforms as graph operations on raw (B, 4760) tensors.

    forward(npho, relative_time) -> (x (B, 4760, 2) float32, npho_valid, time_valid), the values
    `lib.normalization.normalize` gives. The masks compare the inputs in float64 with the rules'
    bounds (RAW_MISSING_ABOVE, npho_domain_min, npho_threshold): float32 input judged exactly as
    its float64 value, as `validity_masks` defines it. NaN fails every comparison, so NaN and
    fill values make a channel invalid without a sentinel test. The transforms are
    lib.normalization's own npho_forward / time_forward, so every npho scheme is the library's.
    """

    def __init__(self, norm: NormalizationConfig) -> None:
        super().__init__()
        self.norm = norm
        self.npho_min, self.npho_min_inclusive = npho_domain_min(norm)

    def forward(self, npho: Tensor, relative_time: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        npho64, time64 = npho.double(), relative_time.double()
        above_min = npho64 >= self.npho_min if self.npho_min_inclusive else npho64 > self.npho_min
        npho_valid = (npho64 <= RAW_MISSING_ABOVE) & above_min
        time_valid = npho_valid & (npho64 >= self.norm.npho_threshold) & (time64.abs() <= RAW_MISSING_ABOVE)
        npho_x = torch.where(npho_valid, npho_forward(npho, self.norm), self.norm.npho_sentinel)
        time_x = torch.where(time_valid, time_forward(relative_time, self.norm), self.norm.time_sentinel)
        return torch.stack([npho_x, time_x], dim=-1), npho_valid, time_valid


class InferenceGraph(nn.Module):
    """Raw inputs -> normalization -> model -> named outputs; subclasses define `from_normalized`."""

    part: str
    outputs: tuple[GraphOutput, ...]

    def __init__(self, norm: NormalizationConfig) -> None:
        super().__init__()
        self.normalization = RawInputNormalization(norm)

    @property
    def norm(self) -> NormalizationConfig:
        return self.normalization.norm

    def from_normalized(self, x: Tensor, npho_valid: Tensor, time_valid: Tensor) -> tuple[Tensor, ...]:
        """Outputs (in `outputs` order) for normalized x (B, 4760, 2) and its validity masks (B, 4760)."""
        raise NotImplementedError

    def forward(self, npho: Tensor, relative_time: Tensor) -> tuple[Tensor, ...]:
        """Outputs for raw npho and relative_time (B, 4760) float32."""
        return self.from_normalized(*self.normalization(npho, relative_time))


class RegressorGraph(InferenceGraph):
    """A regressor's predictions in physical units: per task its outputs, then sigma_<output> where predicted."""

    part = "regressor"

    def __init__(self, regressor: nn.Module, norm: NormalizationConfig) -> None:
        super().__init__(norm)
        self.regressor = regressor.eval()
        outputs = []
        for name, task in regressor.tasks.items():
            _check_fitted(name, task)
            outputs += [GraphOutput(o, unit, name) for o, unit in zip(task.output_names, task.units)]
            if task.predicts_sigma:
                outputs += [GraphOutput(f"sigma_{o}", unit, name) for o, unit in zip(task.output_names, task.units)]
        self.outputs = tuple(outputs)

    def from_normalized(self, x: Tensor, npho_valid: Tensor, time_valid: Tensor) -> tuple[Tensor, ...]:
        heads = self.regressor.head_outputs(x)
        values: list[Tensor] = []
        for name, task in self.regressor.tasks.items():
            values += task.predict(heads[name]).float().unbind(1)
            if task.predicts_sigma:
                values += task.predict_sigma(heads[name]).float().unbind(1)
        return tuple(values)


class EncoderGraph(InferenceGraph):
    """An encoder's tokens (B, n_tokens, dim): the representation downstream models start from."""

    part = "encoder"

    def __init__(self, encoder: nn.Module, norm: NormalizationConfig) -> None:
        super().__init__(norm)
        self.encoder = encoder.eval()
        with torch.no_grad():
            token_shape = tuple(encoder(torch.zeros(1, N_SENSORS, 2), None).shape[1:])
        self.outputs = (GraphOutput("tokens", "", None, token_shape),)
        self.token_names = list(getattr(encoder, "token_names", []))

    def from_normalized(self, x: Tensor, npho_valid: Tensor, time_valid: Tensor) -> tuple[Tensor, ...]:
        return (self.encoder(x, None),)


class InpainterGraph(InferenceGraph):
    """An inpainter's predictions for the dead channels (npho invalid by the normalization's rules): per
    predicted channel inpainted_<channel> (B, 4760) in physical units (npho in photo-electrons, time in s) at
    the dead channels and 0 elsewhere, and `dead` (B, 4760), 1.0 where a value was predicted. The heads run
    densely (XECInpainter dense=True), so the graph's shapes depend on the batch size only."""

    part = "inpainter"

    def __init__(self, inpainter: nn.Module, norm: NormalizationConfig) -> None:
        super().__init__(norm)
        self.inpainter = inpainter.eval()
        self.channels = list(inpainter.predict_channels)
        self.outputs = (*(GraphOutput(f"inpainted_{c}", CHANNEL_UNITS[c], None, (N_SENSORS,)) for c in self.channels),
                        GraphOutput("dead", "", None, (N_SENSORS,)))

    def from_normalized(self, x: Tensor, npho_valid: Tensor, time_valid: Tensor) -> tuple[Tensor, ...]:
        dead = ~npho_valid
        pred = self.inpainter(x, npho_valid, time_valid, dead, dense=True)
        physical = [torch.where(dead, to_physical(pred[..., i].double(), channel, self.norm).float(), 0.0)
                    for i, channel in enumerate(self.channels)]
        return (*physical, dead.float())


def _check_fitted(name: str, task: Any) -> None:
    """Refuse a task whose standardization was never fitted (predict would fail inside the graph)."""
    try:
        task.predict(torch.zeros(1, task.head_dim))
    except RuntimeError as exc:
        raise ExportError(f"task '{name}' cannot predict: {exc}") from exc
