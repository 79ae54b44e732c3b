"""Typed config schema: the sections of a run config and their defaults.

Defaults live here (and in the section classes imported from lib.normalization
and lib.config.model_schema), nowhere else. Every section forbids unknown keys.
A root config (`MAEConfig`, `RegressorConfig`, lib.config.inpainter_schema's
`InpainterConfig`) is a set of sections; lib.config.roots `ROOTS` maps a run kind to its root class.
"""
from __future__ import annotations

import os
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from lib.config.evaluation_schema import BaselineConfig, EvaluationConfig
from lib.config.geometry_schema import GeometryConfig
from lib.config.model_schema import ModelConfig, RegressorModelConfig
from lib.config.normalization_schema import NormalizationConfig
from lib.config.section import Section
from lib.config.task_schema import TasksConfig, parse_tasks

SCHEMA_VERSION = 1
REFERENCE_BATCH_SIZE = 256  # the base lr is quoted for this effective batch size
MAX_LR = 10.0

# Legacy keys -> their current place (dotted keys). Applied with a deprecation warning, in this
# order: where two legacy keys name one current key, the earlier one wins over the later.
LEGACY_KEYS: dict[str, str] = {
    "training.time_weight": "training.time.weight",  # the research code's own legacy keys
    "model.time_mask_ratio_scale": "training.time.mask_ratio_scale",
    "training.time_mask_ratio_scale": "training.time.mask_ratio_scale",
    "training.time.npho_threshold": "normalization.npho_threshold",
    "training.npho_threshold": "normalization.npho_threshold",
    "training.use_npho_time_weight": "training.time.use_npho_weight",
}
# Legacy keys that were a setting of their own (the loss's time threshold, beside the loader's)
# and now share their current key: given next to it, they must have its value (else a ConfigError).
MERGED_KEYS = frozenset({"training.time.npho_threshold", "training.npho_threshold"})

# Names people commonly type for a key -> the key's real name; used only to suggest a fix.
KEY_SYNONYMS: dict[str, str] = {
    "learning_rate": "lr",
    "base_lr": "lr",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "max_epochs": "epochs",
    "bs": "batch_size",
    "workers": "num_workers",
    "mask_prob": "mask_ratio",
    "gradient_clip": "grad_clip",
    "clip_grad_norm": "grad_clip",
    "accumulation_steps": "grad_accum_steps",
    "precision": "amp",
    "output_dir": "save_dir",
    "out_dir": "save_dir",
    "experiment_name": "experiment",
    "resume": "resume_from",
}

_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_SLURM_MEM = re.compile(r"^\d+[KMGT]?$")


PathSpec = str | list[str] | None


class DataConfig(Section):
    """Input files and loading (config section `data`)."""

    train_path: PathSpec = None
    """Training files: a path, glob or directory, or a list of them."""
    val_path: PathSpec = None
    """Validation files: a path, glob or directory, or a list of them."""
    tree_name: str = "tree"
    """Name of the TTree inside the ROOT files."""
    npho_branch: str = "npho"
    time_branch: str = "relative_time"
    truth_branches: list[str] | None = None
    """Truth branches to read (None: those the task needs)."""
    batch_size: int = Field(256, gt=0)
    """Events per batch on one rank."""
    num_workers: int = Field(2, ge=0)
    """DataLoader worker processes per rank."""
    shuffle_buffer: int = Field(8192, ge=0)
    """Events held for streaming shuffle (0: no shuffle)."""
    in_memory: bool = False
    """Load all events into memory instead of streaming."""
    steps_per_epoch: int | None = Field(None, gt=0)
    """Fixed number of steps per epoch (None: one pass over the data)."""
    max_events: int | None = Field(None, gt=0)
    """Use at most this many training events."""
    max_val_events: int | None = Field(None, gt=0)
    """Use at most this many validation events."""


class EMAConfig(Section):
    """Exponential moving average of the model weights."""

    enabled: bool = False
    decay: float = Field(0.999, gt=0.0, lt=1.0)


class EarlyStoppingConfig(Section):
    """Stop when the validation loss stops improving."""

    enabled: bool = False
    patience: int = Field(10, gt=0)
    """Epochs without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0.0)
    """Smallest decrease of the validation loss that counts as improvement."""
    start_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of the epochs that must pass before early stopping may trigger."""


class TimeLossConfig(Section):
    """Treatment of the time channel in the MAE loss."""

    mask_ratio_scale: float = Field(1.0, gt=0.0)
    """Time-channel mask ratio relative to training.mask_ratio."""
    use_npho_weight: bool = False
    """Weight the time loss per sensor by sqrt(raw npho) (the loader computes it). Time is learned
    only on time-valid sensors: raw npho >= normalization.npho_threshold."""
    weight: float = Field(1.0, ge=0.0)
    """Weight of the time loss relative to the npho loss."""


class TrainingConfig(Section):
    """Optimisation and loss (config section `training`)."""

    epochs: int = Field(100, gt=0)
    lr: float = Field(1.5e-4, gt=0.0, le=MAX_LR)
    """Base learning rate, quoted for an effective batch of 256 events (at most 10: larger values overflow
    the optimizer's float32 arithmetic, and anything near it diverges)."""
    lr_scaling: bool = True
    """Scale lr by effective_batch / 256 (effective_batch = batch_size * world_size * grad_accum_steps)."""
    min_lr: float = Field(1e-6, ge=0.0, le=MAX_LR)
    """Learning rate at the end of the cosine schedule."""
    weight_decay: float = Field(0.05, ge=0.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (beta1, beta2), with 0 <= beta1 < beta2 < 1."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """SGD momentum."""
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0.0)
    """Linear warm-up length in epochs (fractions allowed)."""
    grad_clip: float | None = Field(1.0, gt=0.0)
    """Max gradient norm (None: no clipping)."""
    grad_accum_steps: int = Field(1, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Mixed precision: none, bf16 or fp16 (fp16 uses a gradient scaler)."""
    tf32: bool = True
    """Allow TF32 matmuls on Ampere+ GPUs."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    ema: EMAConfig = EMAConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    seed: int = 42
    log_every: int = Field(50, ge=1)
    """Log training metrics every N steps."""
    val_every: int = Field(1, ge=1)
    """Validate every N epochs."""
    mask_ratio: float = Field(0.6, gt=0.0, lt=1.0)
    """Fraction of valid sensors masked per event."""
    loss_fn: Literal["smooth_l1", "mse", "l1", "huber"] = "smooth_l1"
    loss_beta: float = Field(1.0, gt=0.0)
    """beta of smooth_l1 / delta of huber."""
    npho_weight: float = Field(1.0, ge=0.0)
    """Weight of the npho loss."""
    auto_channel_weight: bool = False
    """Learn the npho/time loss balance (uncertainty weighting)."""
    track_mae_rmse: bool = False
    """Also log MAE and RMSE of the reconstruction per channel."""
    time: TimeLossConfig = TimeLossConfig()
    num_val_predictions: int = Field(1000, ge=0)
    """Validation events whose predictions are saved at the end."""

    @field_validator("betas")
    @classmethod
    def _ordered_betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        beta1, beta2 = betas
        if not 0.0 <= beta1 < beta2 < 1.0:
            raise ValueError(f"need 0 <= beta1 < beta2 < 1, got beta1={beta1}, beta2={beta2}")
        return betas

    def effective_lr(self, batch_size: int, world_size: int) -> float:
        """Peak learning rate for `batch_size` events per rank on `world_size` ranks."""
        if not self.lr_scaling:
            return self.lr
        effective_batch = batch_size * world_size * self.grad_accum_steps
        return self.lr * effective_batch / REFERENCE_BATCH_SIZE


class CheckpointConfig(Section):
    """Where outputs go and how checkpoints are kept (config section `checkpoint`)."""

    save_dir: str = "artifacts"
    """Parent folder of the run folder."""
    run_name: str | None = None
    """Run folder name under save_dir (None: <kind>_<UTC timestamp>)."""
    save_every_steps: int | None = Field(None, gt=0)
    """Also save a checkpoint every N optimizer steps."""
    save_interval: int = Field(1, ge=1)
    """Save a checkpoint every N epochs."""
    keep_last_n: int = Field(3, ge=1)
    """Periodic checkpoints kept on disk (best and last are always kept)."""
    resume_from: str | None = None
    """Checkpoint file to resume from."""
    auto_resume: bool = False
    """Resume from the newest checkpoint of this run if there is one."""
    reset_epoch: bool = False
    """With resume_from (a checkpoint of another run directory, the seed): keep its weights, EMA and optimizer
    moments, but start at epoch 0 with a new schedule, early stopping and best metric (e.g. to train longer).
    Applied once, when the run starts from the seed; a requeue continues its own last.pt exactly."""
    refresh_lr: bool = False
    """With resume_from: keep the seed's weights, EMA, optimizer moments and epoch count, but run a new
    learning-rate schedule from this config (lr, scheduler, warmup_epochs, min_lr, weight_decay, betas) from the
    seed's step to the end of training.epochs. Applied once, like reset_epoch."""
    new_mlflow_run: bool = True
    """A run seeded from resume_from logs into a new MLflow run tagged with its parent (parent_run_id,
    parent_checkpoint); false: it continues the seed's MLflow run (not with reset_epoch, which restarts the
    step count)."""

    @field_validator("run_name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is not None and (not name or name in {".", ".."} or re.search(r"[\s/\\]", name)):
            raise ValueError(f"run_name must be a plain folder name (no slash, no spaces), got {name!r}")
        return name


class MLflowConfig(Section):
    """Experiment tracking (config section `mlflow`)."""

    enabled: bool = True
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI, else sqlite:///<save_dir>/mlflow.db."""
    experiment: str = "xecmae"
    tags: dict[str, str] = {}
    """Tags given to the MLflow run when it is created, e.g. {sweep: lr_scan}; `jobs.submit sweep` sets `sweep`
    (the sweep's name), `python -m lib.study labels` also `study`, `study_mode`, `study_events`, `study_seed`."""
    timeout_s: int = Field(5, ge=1, le=600)
    """Seconds one request to the tracking server may take (connect and read; MLflow's own retries are off).
    Tracking runs beside training and never holds it up, except at the end of a run for about this long when
    the server stops answering; unsent metrics wait in <run dir>/mlflow_spool.jsonl and are sent later."""

    def resolve_tracking_uri(self, save_dir: str | os.PathLike[str]) -> str:
        """The tracking URI to use: the configured one, else the environment, else a local sqlite file."""
        if self.tracking_uri:
            return self.tracking_uri
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(save_dir)}/mlflow.db"


class DistributedConfig(Section):
    """torch.distributed settings (config section `distributed`)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """auto: nccl on GPU, gloo on CPU."""
    timeout_minutes: int = Field(30, gt=0)


class SlurmConfig(Section):
    """Batch-job knobs read by jobs/ (config section `slurm`)."""

    partition: str | None = None
    """None: the cluster's default partition."""
    time: str = "24:00:00"
    """Wall-time limit in a SLURM format (HH:MM:SS, D-HH:MM:SS, minutes)."""
    num_gpus: int = Field(1, ge=0)
    """GPUs per node."""
    nodes: int = Field(1, ge=1)
    cpus_per_gpu: int = Field(8, ge=1)
    mem: str | None = None
    """Memory per node, e.g. 128G (None: the cluster's default)."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = []
    """Shell lines run before python, e.g. module loads and venv activation."""
    signal_delay_s: int = Field(300, ge=0)
    """Seconds before the time limit at which the job is signalled to checkpoint and requeue."""

    @field_validator("time")
    @classmethod
    def _slurm_time(cls, value: str) -> str:
        if not _SLURM_TIME.match(value):
            raise ValueError(f"time must be a SLURM time such as 24:00:00 or 2-00:00:00, got {value!r}")
        return value

    @field_validator("mem")
    @classmethod
    def _slurm_mem(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_MEM.match(value):
            raise ValueError(f"mem must be a number with an optional K/M/G/T suffix such as 128G, got {value!r}")
        return value


class RunConfig(Section):
    """Sections shared by every root config; a root adds its task-specific sections."""

    kind: ClassVar[str]
    """Run kind: prefix of generated run names and key of lib.config.roots.ROOTS."""

    schema_version: int = SCHEMA_VERSION
    data: DataConfig = DataConfig()
    geometry: GeometryConfig = GeometryConfig()
    normalization: NormalizationConfig = NormalizationConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    mlflow: MLflowConfig = MLflowConfig()
    distributed: DistributedConfig = DistributedConfig()
    slurm: SlurmConfig = SlurmConfig()

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(f"schema_version must be between 1 and {SCHEMA_VERSION} (this code), got {version}")
        return version


class MAEConfig(RunConfig):
    """Root config of MAE pretraining (`python -m lib.train_mae`)."""

    kind: ClassVar[str] = "mae"


class RegressorTrainingConfig(TrainingConfig):
    """Optimisation of the regressor: the shared knobs plus multi-task balancing."""

    betas: tuple[float, float] = (0.9, 0.999)
    task_balance: Literal["manual", "learned"] = "manual"
    """Combine task losses with their manual weights or learn log-variance weights."""
    fiducial_only: bool = False
    """Learn only from events whose uvwTruth lies inside evaluation.fiducial (the others are skipped
    and counted like events with invalid truth)."""
    allow_real_data: bool = False
    """Train on files without MC truth (no energyTruth, uvwTruth or timeTruth): real data, whose
    emiAng / emiVec / xyzVTX are reconstructed, not true. Refused unless set."""


class RegressorConfig(RunConfig):
    """Root config of regressor fine-tuning (`python -m lib.train_regressor`)."""

    kind: ClassVar[str] = "reg"

    model: RegressorModelConfig = RegressorModelConfig()
    training: RegressorTrainingConfig = RegressorTrainingConfig()
    tasks: TasksConfig = Field(default_factory=lambda: parse_tasks(["energy"]))
    """Tasks to fit: a list of names or a mapping name -> settings (see lib/tasks/config.py)."""
    baseline: BaselineConfig = BaselineConfig()
    """Classical estimator reported beside the regressor (see lib/baselines.py)."""
    evaluation: EvaluationConfig = EvaluationConfig()

