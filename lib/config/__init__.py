"""Typed run config: schema, YAML loader with overrides, and the command-line front end."""
from __future__ import annotations

from lib.config.cli import COMMON_FLAGS, build_arg_parser, cli_values, parse_args
from lib.config.geometry_schema import GeometryConfig
from lib.config.load import ConfigError, load_config, migrate_legacy, read_yaml, validate_data
from lib.config.inpainter_schema import InpainterConfig, InpainterDataConfig, InpainterTrainingConfig
from lib.config.model_schema import InpainterModelConfig, ModelConfig, PretrainedEncoderConfig, RegressorModelConfig
from lib.config.normalization_schema import NormalizationConfig
from lib.config.task_schema import TASK_SPECS, TaskConfig, TasksConfig, parse_tasks
from lib.config.resolved import (
    diff_from_defaults,
    dump_yaml,
    flatten_config,
    load_resolved,
    to_dict,
    write_resolved,
)
from lib.config.roots import ROOTS
from lib.config.schema import (
    LEGACY_KEYS,
    SCHEMA_VERSION,
    BaselineConfig,
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    EarlyStoppingConfig,
    EMAConfig,
    MAEConfig,
    RegressorConfig,
    MLflowConfig,
    RunConfig,
    SlurmConfig,
    TimeLossConfig,
    TrainingConfig,
)

__all__ = [
    "COMMON_FLAGS",
    "LEGACY_KEYS",
    "ROOTS",
    "SCHEMA_VERSION",
    "TASK_SPECS",
    "BaselineConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DistributedConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "GeometryConfig",
    "InpainterConfig",
    "InpainterDataConfig",
    "InpainterModelConfig",
    "InpainterTrainingConfig",
    "MAEConfig",
    "RegressorConfig",
    "MLflowConfig",
    "ModelConfig",
    "NormalizationConfig",
    "PretrainedEncoderConfig",
    "RegressorModelConfig",
    "RunConfig",
    "SlurmConfig",
    "TaskConfig",
    "TasksConfig",
    "TimeLossConfig",
    "TrainingConfig",
    "build_arg_parser",
    "cli_values",
    "diff_from_defaults",
    "flatten_config",
    "dump_yaml",
    "load_config",
    "load_resolved",
    "migrate_legacy",
    "parse_args",
    "parse_tasks",
    "read_yaml",
    "to_dict",
    "validate_data",
    "write_resolved",
]
