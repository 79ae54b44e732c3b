"""XECInpainter: the XEC encoder plus light per-face heads that predict masked (dead) sensors.

The encoder sees the event as the MAE did in pretraining: masked sensors hold the normalization
sentinels and are hidden (sparse-conv semantics), every other sensor as the loader gave it. For each
masked sensor, the head of its face reads
  - the latent tokens of its face (the outer face has two: outer_coarse and outer_dense; the face of a
    token is read from encoder.token_names) and the mean of all tokens (the whole event), and
  - its same-face neighbourhood (lib.geometry.face_neighbours): per neighbour its normalized npho and time
    where visible (valid and not masked, else 0), the two visibility flags and whether the slot holds a
    neighbour at all, plus the sensor's own coordinates and each neighbour's offset from it.
A head predicts a correction to the mean of the visible neighbours' values (its last layer starts at
zero, so an untrained head is that neighbour average). Only masked sensors are predicted; the prediction
is in normalized units (lib.evaluation.units turns it into photo-electrons and seconds).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lib.config.model_schema import InpainterModelConfig
from lib.geometry import FACE_NAMES, N_SENSORS, NO_NEIGHBOUR, POSITIONS, SENSOR_FACE, face_neighbours
from lib.models.encoder import XECEncoder, sensor_coordinates
from lib.models.regressor import apply_freezing
from lib.normalization import CHANNEL_INDEX, NormalizationConfig

NEIGHBOUR_CHANNELS = 5
"""Per neighbour slot: visible npho, visible time, npho visible, time visible, slot holds a neighbour."""


def face_of_token(token: str) -> str:
    """The face a token of encoder.token_names belongs to ("outer_dense" -> "outer")."""
    face = next((face for face in FACE_NAMES if token == face or token.startswith(f"{face}_")), None)
    if face is None:
        raise ValueError(f"encoder token {token!r} belongs to no face of {FACE_NAMES}")
    return face


def sensor_static_features() -> np.ndarray:
    """(4760, 3 + 3K) float32: each sensor's standardized coordinates, then the offset of each neighbour slot
    (0 for an empty slot), in units of the RMS neighbour distance."""
    neighbours = face_neighbours()
    real = neighbours != NO_NEIGHBOUR
    offsets = np.where(real[..., None], POSITIONS[np.where(real, neighbours, 0)] - POSITIONS[:, None, :], 0.0)
    scale = np.sqrt((offsets[real] ** 2).sum(axis=1).mean())
    return np.concatenate([sensor_coordinates(), (offsets / scale).reshape(N_SENSORS, -1)], axis=1).astype(np.float32)


class FaceHead(nn.Module):
    """MLP of one face: (projected event context + projected neighbourhood) -> GELU -> Linear -> GELU -> Linear,
    the last layer zero-initialised (an untrained head adds nothing to the neighbour average)."""

    def __init__(self, context_dim: int, local_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.context = nn.Sequential(nn.LayerNorm(context_dim), nn.Linear(context_dim, hidden))
        self.local = nn.Linear(local_dim, hidden)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, context: torch.Tensor, event: torch.Tensor | None, local: torch.Tensor) -> torch.Tensor:
        """context (B, context_dim) per event. Rows: event (R,) the event of each row and local (R, local_dim)
        -> (R, out_dim); or event None and local (B, n, local_dim), n sensors of every event -> (B, n, out_dim)."""
        projected = self.context(context)
        return self.mlp((projected.unsqueeze(1) if event is None else projected[event]) + self.local(local))


class InpaintingHeads(nn.Module):
    """One FaceHead per face; forward(tokens, x, npho_visible, time_visible, mask) -> (B, 4760, C), filled at
    the masked sensors only (zeros elsewhere).

    Two ways to the same numbers: rows (the default) runs the heads on the masked sensors only (training; the
    number of rows depends on the mask), dense on every sensor of every event, then keeps the masked ones (the
    exported graph: shapes that depend on the batch size only)."""

    def __init__(self, token_names: tuple[str, ...], encoder_dim: int, hidden: int, channels: list[str]):
        super().__init__()
        self.out_dim = len(channels)
        self.channel_index = [CHANNEL_INDEX[channel] for channel in channels]
        neighbours = torch.from_numpy(np.array(face_neighbours()))
        self.register_buffer("neighbours", neighbours.masked_fill(neighbours == NO_NEIGHBOUR, N_SENSORS),
                             persistent=False)  # empty slots read the zero row appended at index N_SENSORS
        self.register_buffer("static", torch.from_numpy(sensor_static_features()), persistent=False)
        sensor_face = np.array(SENSOR_FACE)
        self.register_buffer("sensor_face", torch.from_numpy(sensor_face), persistent=False)
        self.register_buffer("face_order", torch.from_numpy(np.argsort(sensor_face, kind="stable")), persistent=False)
        self.face_bounds = np.concatenate([[0], np.cumsum(np.bincount(sensor_face, minlength=len(FACE_NAMES)))])
        self.face_tokens = [[i for i, token in enumerate(token_names) if face_of_token(token) == face]
                            for face in FACE_NAMES]
        local_dim = NEIGHBOUR_CHANNELS * neighbours.shape[1] + self.static.shape[1]
        self.heads = nn.ModuleList(FaceHead((len(tokens) + 1) * encoder_dim, local_dim, hidden, self.out_dim)
                                   for tokens in self.face_tokens)

    def _neighbourhood(self, x: torch.Tensor, npho_visible: torch.Tensor, time_visible: torch.Tensor,
                       event: torch.Tensor | None, sensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, neighbour average of each predicted channel) of the rows (event (R,), sensor (R,)) ->
        (R, local_dim), (R, C); or of the sensors (n,) of every event (event None) -> (B, n, ...)."""
        npho_seen, time_seen = npho_visible.to(x.dtype), time_visible.to(x.dtype)
        channels = torch.stack([x[..., 0] * npho_seen, x[..., 1] * time_seen, npho_seen, time_seen,
                                torch.ones_like(npho_seen)], dim=-1)
        channels = torch.cat([channels, channels.new_zeros(x.shape[0], 1, NEIGHBOUR_CHANNELS)], dim=1)
        slots = self.neighbours[sensor]
        around = channels[:, slots] if event is None else channels[event.unsqueeze(1), slots]  # (..., K, channels)
        average = around[..., :2].sum(-2) / around[..., 2:4].sum(-2).clamp_min(1.0)  # visible npho, time means
        features = torch.cat([around.flatten(-2), self.static[sensor].to(x.dtype).expand(*around.shape[:-2], -1)], -1)
        return features, average[..., self.channel_index].float()

    def _contexts(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per face (B, context_dim): the face's tokens and the mean of all tokens (the whole event)."""
        whole_event = tokens.mean(dim=1)
        return [torch.cat([tokens[:, token_ids].flatten(1), whole_event], dim=1) for token_ids in self.face_tokens]

    def forward(self, tokens: torch.Tensor, x: torch.Tensor, npho_visible: torch.Tensor, time_visible: torch.Tensor,
                mask: torch.Tensor, dense: bool = False) -> torch.Tensor:
        if dense:
            return self._dense(tokens, x, npho_visible, time_visible, mask)
        event, sensor = mask.nonzero(as_tuple=True)
        local, rows = self._neighbourhood(x, npho_visible, time_visible, event, sensor)
        face = self.sensor_face[sensor]
        for code, (head, context) in enumerate(zip(self.heads, self._contexts(tokens))):
            chosen = (face == code).nonzero(as_tuple=True)[0]  # every head runs, on no rows too (DDP sees it used)
            rows = rows.index_add(0, chosen, head(context, event[chosen], local[chosen]).float())
        return torch.zeros(*mask.shape, self.out_dim, device=x.device).index_put((event, sensor), rows)

    def _dense(self, tokens: torch.Tensor, x: torch.Tensor, npho_visible: torch.Tensor, time_visible: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(*mask.shape, self.out_dim, dtype=torch.float32)
        for code, (head, context) in enumerate(zip(self.heads, self._contexts(tokens))):
            sensors = self.face_order[int(self.face_bounds[code]) : int(self.face_bounds[code + 1])]
            local, average = self._neighbourhood(x, npho_visible, time_visible, None, sensors)
            out = out.index_copy(1, sensors, average + head(context, None, local).float())
        return torch.where(mask.unsqueeze(-1), out, out.new_zeros(()))


class XECInpainter(nn.Module):
    """forward(x (B, 4760, 2), npho_valid, time_valid, mask (B, 4760) bool[, dense]) -> (B, 4760, C) normalized predictions
    of `predict_channels` at the masked sensors (zeros elsewhere). With freeze_encoder the encoder's weights stay
    fixed and it runs in eval mode."""

    def __init__(self, cfg: InpainterModelConfig, norm: NormalizationConfig):
        super().__init__()
        self.predict_channels: list[str] = list(cfg.predict_channels)
        self.encoder = XECEncoder(cfg)
        self.heads = InpaintingHeads(self.encoder.token_names, cfg.encoder_dim, cfg.head_hidden,
                                     self.predict_channels)
        self.register_buffer("sentinels", torch.tensor([norm.npho_sentinel, norm.time_sentinel]), persistent=False)
        self.encoder_frozen = cfg.freeze_encoder
        apply_freezing(self.encoder, cfg.freeze_encoder, None)

    def train(self, mode: bool = True) -> XECInpainter:
        """Train mode for the heads; a frozen encoder stays in eval mode (no stochastic depth)."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor, npho_valid: torch.Tensor, time_valid: torch.Tensor,
                mask: torch.Tensor, dense: bool = False) -> torch.Tensor:
        """`dense`: run the heads on every sensor (shapes independent of the mask, for export; same values)."""
        masked_input = torch.where(mask.unsqueeze(-1), self.sentinels.to(x.dtype), x)
        tokens = self.encoder(masked_input, mask)
        return self.heads(tokens, x, npho_valid & ~mask, time_valid & ~mask, mask, dense)
