"""Fast toy simulation of gamma showers in the detector, written as ROOT or npz shards.

    python -m lib.sim --config config/sim/demo.yaml --out DIR \
        [--events N] [--shards K] [--format root|npz] [--seed S]

Each event is a gamma from a vertex near the origin that converts behind the
inner face and leaves a handful of point deposits along its axis; every sensor
gets a photo-electron count and a time. The physics model and every
simplification are documented in lib.sim.physics.

Output per event (keys of `simulate_events`, branches of the ROOT tree `tree`):
  npho[4760]           photo-electrons (float32)
  relative_time[4760]  seconds, sensor time minus the earliest time among the
                       valid (neither dead nor NaN) entries with npho >
                       time_reference_min_npho (so that minimum is exactly 0;
                       if none passes, the earliest valid entry is the reference)
  energyTruth          GeV
  timeTruth            seconds, time of the first interaction on the same clock
                       as relative_time (negative: before the reference hit)
  uvwTruth[3]          cm, first interaction point in MEG's inner-face frame
                       (lib.geometry.coordinates): u = z; v = -(phi - pi) * R_in,
                       phi = atan2(y, x) in [0, 2 pi) (arc on the inner face, v > 0
                       for y > 0); w = sqrt(x^2 + y^2) - R_in; R_in = 64.97
  xyzTruth[3]          cm, first interaction point
  emiAng[2]            degrees, MEG emission angles of emiVec: theta from +z in
                       [0, 180], phi = atan2(y, -x) in (-180, 180]
  emiVec[3]            unit emission direction (vertex to first interaction)
  xyzVTX[3]            cm, vertex
  run (int32), event (int64, unique within a run across the shards of one call)
Sensors sit at the nominal places of lib.geometry, or at those of an as-built
table (`sensor_table`, see lib.geometry.sensor_table). Units and conventions of
every branch: docs/conventions.md.
Detector effects: a fixed set of dead sensors per run (fraction dead_fraction)
reads DEAD_VALUE (1e10) in npho and relative_time; a random fraction
nan_fraction of the other entries reads NaN in both.
Opt-in realism (off by default; config/sim/realistic.yaml turns it on): pile-up, a
second gamma in a fraction pileup_fraction of the events whose light adds to the
first's (the truth branches stay those of the first), and a light yield that
changes linearly with z (light_yield_gradient).
"""
from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import uproot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from threadpoolctl import threadpool_limits

from lib import geometry
from lib.config.load import ConfigError, yaml_error
from lib.io.atomic import atomic_write
from lib.geometry.coordinates import unit_vectors_to_angles, uvw_from_xyz
from lib.geometry.light import PMT_AREA_CM2, SIPM_AREA_CM2
from lib.geometry.sensor_table import SensorGeometry, sensor_geometry
from lib.sim import physics

log = logging.getLogger(__name__)

DEAD_VALUE = 1e10
TREE_NAME = "tree"
_NS = 1e-9  # seconds per ns
_PHYSICS_BLOCK_EVENTS = 128  # events per vectorised block: bounds the (events x deposits x sensors) work arrays
_COMPRESSION = {"lz4": uproot.LZ4, "zlib": uproot.ZLIB, "lzma": uproot.LZMA, "zstd": uproot.ZSTD}


class EnergyConfig(BaseModel):
    """Gamma energy spectrum (config section `energy`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spectrum: Literal["uniform", "line"] = "uniform"
    min_mev: float = Field(15.0, gt=0)
    max_mev: float = Field(60.0, gt=0)
    line_mev: float = Field(52.8, gt=0)

    @model_validator(mode="after")
    def _ordered_range(self) -> EnergyConfig:
        if self.min_mev >= self.max_mev:
            raise ValueError(f"energy.min_mev ({self.min_mev}) must be below energy.max_mev ({self.max_mev})")
        return self


class SimConfig(BaseModel):
    """Toy simulation settings (a config/sim/*.yaml file); the physics is described in lib.sim.physics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: int = Field(10000, gt=0, description="events in total, split evenly over the shards")
    shards: int = Field(10, gt=0)
    seed: int = Field(0, ge=0)
    run_number: int = Field(1, ge=0, description="run branch; also seeds the dead-channel map")
    format: Literal["root", "npz"] = "root"
    compression: Literal["lz4", "zlib", "lzma", "zstd", "none"] = Field("lz4", description="ROOT only; npz is stored")
    compression_level: int = Field(1, ge=1, le=9)
    chunk_events: int = Field(1000, gt=0, description="events simulated and appended to the tree at a time "
                              "(part of the random stream: changing it changes the events)")
    energy: EnergyConfig = EnergyConfig()
    vertex_sigma_cm: tuple[float, float, float] = (0.5, 0.5, 0.5)
    acceptance_margin_cm: float = Field(4.0, ge=0, description="shrinks the inner-face acceptance on every side")
    depth_mean_cm: float = Field(4.0, gt=0, description="mean conversion path behind the inner face")
    depth_max_cm: float = Field(20.0, gt=0, description="conversion path truncation")
    n_deposits: int = Field(6, ge=1)
    radiation_length_cm: float = Field(2.87, gt=0)
    critical_energy_mev: float = Field(11.0, gt=0)
    light_yield_per_mev: float = Field(6.0e5, gt=0, description="photons per MeV deposited, into 4 pi")
    sipm_area_cm2: float = Field(SIPM_AREA_CM2, gt=0)
    sipm_efficiency: float = Field(0.15, gt=0, le=1)
    pmt_area_cm2: float = Field(PMT_AREA_CM2, gt=0)
    pmt_efficiency: float = Field(0.3, gt=0, le=1)
    light_speed_cm_per_ns: float = Field(10.0, gt=0, description="effective speed of scintillation light")
    time_jitter_ns: float = Field(2.0, ge=0, description="time sigma of a single photo-electron")
    gaussian_above_npho: float = Field(100.0, gt=0, description="expected pe above which counts are Gaussian")
    time_reference_min_npho: float = Field(50.0, ge=0)
    sensor_table: str | None = Field(None, description="as-built sensor table (id x y z [nx ny nz], cm) replacing "
                                     "the nominal positions and normals; see lib.geometry.sensor_table")
    dead_fraction: float = Field(0.01, ge=0, lt=0.5)
    nan_fraction: float = Field(1e-4, ge=0, lt=0.01)
    pileup_fraction: float = Field(0.0, ge=0, le=1, description="fraction of events with a second gamma (pile-up) "
                                   "of its own vertex, direction and energy; the truth stays that of the first")
    pileup_window_ns: float = Field(20.0, ge=0, description="the second gamma comes uniformly within +- this time")
    light_yield_gradient: float = Field(0.0, gt=-1, lt=1, description="position-dependent light yield: photons "
                                        "per MeV x (1 + gradient x z / half the inner-face height), e.g. 0.2")

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if min(self.vertex_sigma_cm) < 0:
            raise ValueError(f"vertex_sigma_cm must be >= 0 on every axis, got {self.vertex_sigma_cm}")
        half_height = (physics.INNER_Z_RANGE[1] - physics.INNER_Z_RANGE[0]) / 2
        if self.acceptance_margin_cm >= half_height:
            raise ValueError(f"acceptance_margin_cm ({self.acceptance_margin_cm}) must be below half the inner-face "
                             f"height ({half_height:.2f} cm)")
        if self.events < self.shards:
            raise ValueError(f"events ({self.events}) must be at least shards ({self.shards}); lower shards")
        return self


def _describe(error: Mapping[str, Any]) -> str:
    """One line for one pydantic error: the dotted key, the value and what to change."""
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] != "extra_forbidden":
        return f"{key} = {error['input']!r}: {error['msg']}"
    model: type[BaseModel] = SimConfig
    for part in error["loc"][:-1]:
        model = model.model_fields[part].annotation
    close = difflib.get_close_matches(str(error["loc"][-1]), list(model.model_fields), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(model.model_fields)}"
    return f"{key}: unknown key; {hint}"


def validate_sim_config(data: Mapping[str, Any], origin: str) -> SimConfig:
    """SimConfig from plain data; raises ConfigError listing every bad key of `origin`."""
    try:
        return SimConfig.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(f"  - {_describe(error)}" for error in err.errors())
        raise ConfigError(f"invalid simulation config ({origin}):\n{problems}") from None


def load_sim_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """SimConfig from a YAML file (None: defaults) with top-level `overrides` applied; raises ConfigError."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"simulation config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise yaml_error(path, err) from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings, got {type(data).__name__}")
    return validate_sim_config({**data, **(overrides or {})}, str(path) if path is not None else "defaults")


def _sample_gamma(cfg: SimConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kinematics and point deposits (float64; times in ns) of one gamma per event."""
    energy = physics.sample_energies(cfg, n, rng)
    vertex = rng.normal(0.0, cfg.vertex_sigma_cm, (n, 3))
    direction = physics.sample_directions(cfg, n, rng)
    flight = physics.entry_distance(vertex, direction) + physics.sample_conversion_paths(cfg, n, rng)
    first = vertex + flight[:, None] * direction
    offsets = physics.sample_shower_offsets(cfg, energy, rng)
    deposits = first[:, None, :] + offsets[:, :, None] * direction[:, None, :]
    return {
        "energy": energy, "vertex": vertex, "direction": direction, "first": first,
        "first_time": flight / physics.SPEED_OF_LIGHT_CM_PER_NS,
        "deposit_xyz": deposits,
        "deposit_mev": np.where(physics.inside_volume(deposits), energy[:, None] / cfg.n_deposits, 0.0),
        "deposit_time": (flight[:, None] + offsets) / physics.SPEED_OF_LIGHT_CM_PER_NS,
    }


def _add_pileup(cfg: SimConfig, truth: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """In place: the deposits of a second gamma, shifted in time by up to pileup_window_ns, appended to those of
    the events drawn with probability pileup_fraction (zero energy elsewhere)."""
    n = len(truth["energy"])
    second = _sample_gamma(cfg, n, rng)
    piled = rng.random(n) < cfg.pileup_fraction
    shift = rng.uniform(-cfg.pileup_window_ns, cfg.pileup_window_ns, n)
    truth["deposit_xyz"] = np.concatenate([truth["deposit_xyz"], second["deposit_xyz"]], axis=1)
    truth["deposit_mev"] = np.concatenate([truth["deposit_mev"], second["deposit_mev"] * piled[:, None]], axis=1)
    truth["deposit_time"] = np.concatenate([truth["deposit_time"], second["deposit_time"] + shift[:, None]], axis=1)


def _sample_truth(cfg: SimConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-event kinematics of the (first) gamma and every deposit (float64; times in ns). deposit_mev is the
    light-equivalent energy: scaled by the position-dependent light yield (light_yield_gradient)."""
    truth = _sample_gamma(cfg, n, rng)
    if cfg.pileup_fraction > 0:  # no extra random numbers otherwise: the default data set stays as it was
        _add_pileup(cfg, truth, rng)
    if cfg.light_yield_gradient != 0:
        half_height = (physics.INNER_Z_RANGE[1] - physics.INNER_Z_RANGE[0]) / 2
        truth["deposit_mev"] = truth["deposit_mev"] * (1 + cfg.light_yield_gradient
                                                       * np.clip(truth["deposit_xyz"][..., 2] / half_height, -1, 1))
    return truth


def _earliest_reference(npho: np.ndarray, time_ns: np.ndarray, live: np.ndarray, min_npho: float) -> np.ndarray:
    """Per event, the earliest time among live sensors (n, S) with npho > min_npho (else among live sensors)."""
    candidates = live & (npho > min_npho)
    none = ~candidates.any(axis=1)
    candidates[none] = live[none]
    reference = np.where(candidates, time_ns, np.inf).min(axis=1)
    return np.where(np.isfinite(reference), reference, 0.0)


def _sensor_signals(cfg: SimConfig, sensors: SensorGeometry, truth: dict[str, np.ndarray], live: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """npho (n, S), relative time in s (n, S) and the per-event reference time in ns, block by block.

    The time reference is taken among the `live` (n, S) entries only, so no defect can remove it.
    """
    n = len(truth["energy"])
    response = physics.SensorResponse(cfg, sensors)
    npho = np.empty((n, geometry.N_SENSORS), dtype=np.float32)
    relative_time = np.empty_like(npho)
    reference = np.empty(n)
    for start in range(0, n, _PHYSICS_BLOCK_EVENTS):
        block = slice(start, min(start + _PHYSICS_BLOCK_EVENTS, n))
        expected, time_ns = response.expected(
            truth["deposit_xyz"][block], truth["deposit_mev"][block], truth["deposit_time"][block])
        counts = physics.sample_counts(expected, cfg.gaussian_above_npho, rng)
        jitter = rng.standard_normal(counts.shape, dtype=np.float32)
        jitter *= np.float32(cfg.time_jitter_ns) / np.sqrt(np.maximum(counts, 1.0))
        time_ns += jitter
        reference[block] = _earliest_reference(counts, time_ns, live[block], cfg.time_reference_min_npho)
        time_ns -= reference[block, None].astype(np.float32)
        npho[block] = counts
        np.multiply(time_ns, np.float32(_NS), out=relative_time[block])
    return npho, relative_time, reference


def _nan_entries(n: int, dead: np.ndarray, nan_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n, S) bool: a random nan_fraction of the entries of the sensors that are not dead."""
    alive = np.flatnonzero(~dead)
    n_nan = rng.binomial(n * len(alive), nan_fraction)
    nan = np.zeros((n, geometry.N_SENSORS), dtype=bool)
    nan[rng.integers(0, n, n_nan), rng.choice(alive, n_nan)] = True
    return nan


def _mark_defects(npho: np.ndarray, relative_time: np.ndarray, dead: np.ndarray, nan: np.ndarray) -> None:
    """In place: DEAD_VALUE on dead sensors (S,), NaN on the `nan` (n, S) entries."""
    for values in (npho, relative_time):
        values[:, dead] = DEAD_VALUE
        values[nan] = np.nan


def simulate_events(cfg: SimConfig, n: int, rng: np.random.Generator, *, first_event: int = 0,
                    sensors: SensorGeometry | None = None) -> dict[str, np.ndarray]:
    """Simulate n events; returns the output arrays keyed by branch name (see the module docstring).

    `sensors` defaults to the geometry of cfg.sensor_table (the nominal layout when it is None).
    """
    sensors = sensor_geometry(cfg.sensor_table) if sensors is None else sensors
    truth = _sample_truth(cfg, n, rng)
    dead = physics.dead_channel_mask(cfg.run_number, cfg.dead_fraction)
    nan = _nan_entries(n, dead, cfg.nan_fraction, rng)
    # The products inside are (deposits x 3) @ (3 x sensors): memory-bound, so BLAS threads only add contention.
    with threadpool_limits(limits=1, user_api="blas"):
        npho, relative_time, reference_ns = _sensor_signals(cfg, sensors, truth, ~dead & ~nan, rng)
    _mark_defects(npho, relative_time, dead, nan)
    direction = truth["direction"]
    return {
        "npho": npho,
        "relative_time": relative_time,
        "energyTruth": (truth["energy"] * 1e-3).astype(np.float32),
        "timeTruth": ((truth["first_time"] - reference_ns) * _NS).astype(np.float32),
        "uvwTruth": uvw_from_xyz(truth["first"]).astype(np.float32),
        "xyzTruth": truth["first"].astype(np.float32),
        "emiAng": np.stack(unit_vectors_to_angles(direction), axis=-1).astype(np.float32),
        "emiVec": direction.astype(np.float32),
        "xyzVTX": truth["vertex"].astype(np.float32),
        "run": np.full(n, cfg.run_number, dtype=np.int32),
        "event": np.arange(first_event, first_event + n, dtype=np.int64),
    }


def _branch_types() -> dict[str, np.dtype]:
    """uproot branch types of the output tree (fixed-size arrays as sub-array dtypes)."""
    vector = {"npho": geometry.N_SENSORS, "relative_time": geometry.N_SENSORS,
              "uvwTruth": 3, "xyzTruth": 3, "emiAng": 2, "emiVec": 3, "xyzVTX": 3}
    types = {name: np.dtype((np.float32, (size,))) for name, size in vector.items()}
    types |= {"energyTruth": np.dtype(np.float32), "timeTruth": np.dtype(np.float32),
              "run": np.dtype(np.int32), "event": np.dtype(np.int64)}
    return types


def _shard_sizes(n_events: int, n_shards: int) -> list[int]:
    return [n_events // n_shards + (k < n_events % n_shards) for k in range(n_shards)]


def _event_chunks(cfg: SimConfig, sensors: SensorGeometry, n: int, rng: np.random.Generator, first_event: int):
    for start in range(0, n, cfg.chunk_events):
        yield simulate_events(cfg, min(cfg.chunk_events, n - start), rng, first_event=first_event + start,
                              sensors=sensors)


def _write_root(path: Path, cfg: SimConfig, sensors: SensorGeometry, n: int, rng: np.random.Generator,
                first_event: int) -> None:
    compression = None if cfg.compression == "none" else _COMPRESSION[cfg.compression](cfg.compression_level)
    with uproot.recreate(path, compression=compression) as file:
        tree = file.mktree(TREE_NAME, _branch_types())
        for chunk in _event_chunks(cfg, sensors, n, rng, first_event):
            tree.extend(chunk)


def _write_npz(path: Path, cfg: SimConfig, sensors: SensorGeometry, n: int, rng: np.random.Generator,
               first_event: int) -> None:
    chunks = list(_event_chunks(cfg, sensors, n, rng, first_event))
    arrays = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def shard_rng(seed: int, shard: int) -> np.random.Generator:
    """Generator of shard `shard`: independent of the other shards and of the number of shards."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(shard,)))


def write_shards(cfg: SimConfig, out_dir: str | Path, n_events: int | None = None, n_shards: int | None = None,
                 fmt: Literal["root", "npz"] | None = None, seed: int | None = None) -> list[Path]:
    """Simulate and write DIR/shard_0000.<fmt> ...; arguments left None come from cfg.

    Refuses (FileExistsError) before simulating anything if any target shard exists, and a bad
    cfg.sensor_table (SensorTableError, a ConfigError) before creating anything.
    Each file is written under a temporary name and renamed when complete.
    """
    overrides = {"events": n_events, "shards": n_shards, "format": fmt, "seed": seed}
    cfg = validate_sim_config({**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}},
                              "write_shards arguments")
    sensors = sensor_geometry(cfg.sensor_table)
    out_dir = Path(out_dir)
    paths = [out_dir / f"shard_{k:04d}.{cfg.format}" for k in range(cfg.shards)]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing shard files: {', '.join(existing)}; "
                              "choose another --out directory or delete them first")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _write_root if cfg.format == "root" else _write_npz
    first_event = 0
    for k, (path, size) in enumerate(zip(paths, _shard_sizes(cfg.events, cfg.shards))):
        started = time.perf_counter()
        atomic_write(path, lambda tmp: writer(tmp, cfg, sensors, size, shard_rng(cfg.seed, k), first_event))
        seconds = time.perf_counter() - started
        log.info("%s: %d events (%d..%d) in %.1f s, %.0f events/s, %.1f MB", path, size, first_event,
                 first_event + size - 1, seconds, size / seconds, path.stat().st_size / 1e6)
        first_event += size
    return paths
