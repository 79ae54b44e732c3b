"""Job knobs: environment variables and flags that override the config's `slurm` section.

Precedence: schema default < config file < environment variable < command-line flag.
Knobs that set a config key (PARTITION -> slurm.partition, RUN_NAME -> checkpoint.run_name,
...) are validated by the config schema itself; the others (EXECUTOR, DRY_RUN, CPU_PROCS,
FORCE, WAIT) by `JobOptions`. Either way an error names the variable or flag it came from.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lib.config import ConfigError, RunConfig, validate_data


class JobError(ValueError):
    """A submission cannot go ahead; the message says what to change."""


class JobOptions(BaseModel):
    """Knobs of the job suite that are not part of the run config."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    executor: Literal["auto", "slurm", "local"] = "auto"
    """slurm: sbatch via submitit; local: a process on this machine; auto: slurm where sbatch is on PATH
    and `sinfo` reaches a controller."""
    dry_run: bool = False
    """Validate and print what would be submitted; submit nothing, create nothing."""
    cpu_procs: int | None = Field(None, ge=1)
    """Run CPU-only with this many processes (gloo) instead of slurm.num_gpus GPUs per node."""
    force: bool = False
    """Submit into an existing run directory (a finished one is run again from its last.pt)."""
    wait: bool = False
    """Wait for the jobs to end, then print the artifacts and headline numbers (always on for local)."""


class PredictOptions(JobOptions):
    """Knobs of a prediction array (`jobs.submit predict`) besides the shared ones."""

    files_per_task: int = Field(8, ge=1)
    """Input files per task of the job array."""
    tag: str | None = None
    """Folder of the predictions under the model's run: <run>/predictions/<TAG> (None: named after the input)."""
    out_dir: str | None = None
    """Folder of the predictions instead of <run>/predictions/<TAG> (needed for a model outside a run directory)."""

    @field_validator("tag")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is not None and (not name or name in {".", ".."} or re.search(r"[\s/\\]", name)):
            raise ValueError(f"TAG must be a plain folder name (no slash, no spaces), got {name!r}")
        return name


@dataclass(frozen=True)
class Knob:
    """One knob: its environment variable and what it sets (a config key or a field of `options`)."""

    env: str
    target: str
    """Dotted config key (contains a dot) or field name of `options`."""
    options: type[JobOptions] = JobOptions

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.env.lower()

    @property
    def is_config_key(self) -> bool:
        return "." in self.target

    def default_text(self) -> str:
        """The default as shown in the wrappers' headers: the schema's or JobOptions' default."""
        if self.is_config_key:
            section, name = self.target.split(".")
            default = RunConfig.model_fields[section].annotation.model_fields[name].default
        else:
            default = self.options.model_fields[self.target].default
        if isinstance(default, bool):
            return str(int(default))
        return "unset" if default is None else str(default)

    def description(self) -> str:
        """One line of help: the config key or the option's docstring."""
        if self.is_config_key:
            section, name = self.target.split(".")
            field = RunConfig.model_fields[section].annotation.model_fields[name]
            return f"{self.target}: {(field.description or '').rstrip('.')}".rstrip(": ")
        return (self.options.model_fields[self.target].description or "").rstrip(".")


KNOBS: tuple[Knob, ...] = (
    Knob("PARTITION", "slurm.partition"),
    Knob("TIME", "slurm.time"),
    Knob("NUM_GPUS", "slurm.num_gpus"),
    Knob("NODES", "slurm.nodes"),
    Knob("CPUS_PER_GPU", "slurm.cpus_per_gpu"),
    Knob("MEM", "slurm.mem"),
    Knob("ACCOUNT", "slurm.account"),
    Knob("QOS", "slurm.qos"),
    Knob("CONSTRAINT", "slurm.constraint"),
    Knob("RUN_NAME", "checkpoint.run_name"),
    Knob("RESUME_FROM", "checkpoint.resume_from"),
    Knob("EXECUTOR", "executor"),
    Knob("DRY_RUN", "dry_run"),
    Knob("CPU_PROCS", "cpu_procs"),
    Knob("FORCE", "force"),
    Knob("WAIT", "wait"),
)
_SWITCHES = {"DRY_RUN", "FORCE", "WAIT"}
PREDICT_KNOBS: tuple[Knob, ...] = (
    *(knob for knob in KNOBS if knob.env not in ("NUM_GPUS", "NODES", "RUN_NAME", "RESUME_FROM")),
    Knob("FILES_PER_TASK", "files_per_task", PredictOptions),
    Knob("TAG", "tag", PredictOptions),
    Knob("OUT_DIR", "out_dir", PredictOptions),
)
"""The knobs of `jobs.submit predict`: one GPU per task (or CPU_PROCS CPUs), one node, no run name."""


@dataclass(frozen=True)
class Knobs:
    """Validated knob values: config overrides {dotted key: value} and the job options."""

    config_values: dict[str, Any]
    options: JobOptions
    sources: dict[str, str]
    """{dotted key or option name: where it was given}"""


def add_knob_flags(parser: argparse.ArgumentParser, knobs: tuple[Knob, ...] = KNOBS) -> None:
    """Add one flag per knob (`--partition`, `--num-gpus`, `--dry-run`, ...)."""
    group = parser.add_argument_group("job knobs (each also read from its environment variable)")
    for knob in knobs:
        help_text = f"{knob.description()} [env {knob.env}; default {knob.default_text()}]".replace("%", "%%")
        if knob.env in _SWITCHES:
            group.add_argument(knob.flag, dest=knob.dest, action="store_const", const=True, default=None,
                               help=help_text)
        elif knob.env == "CPU_PROCS":
            group.add_argument(knob.flag, dest=knob.dest, nargs="?", const="1", default=None, metavar="N",
                               help=help_text + " (the flag alone: 1)")
        else:
            group.add_argument(knob.flag, dest=knob.dest, default=None, metavar=knob.env, help=help_text)


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in flat.items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    return data


def resolve_knobs(flags: Mapping[str, Any], env: Mapping[str, str], knobs: tuple[Knob, ...] = KNOBS,
                  options: type[JobOptions] = JobOptions) -> Knobs:
    """Validate the `knobs` given as flags (`{dest: value}`, None = not given) or environment variables;
    the job options as an `options` model.

    Empty environment variables count as unset. Raises ConfigError naming the variable or flag.
    """
    config_given: dict[str, Any] = {}
    options_given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for knob in knobs:
        value, origin = flags.get(knob.dest), f"flag {knob.flag}"
        if value is None:
            value, origin = env.get(knob.env) or None, f"environment variable {knob.env}"
        if value is None:
            continue
        (config_given if knob.is_config_key else options_given)[knob.target] = value
        sources[knob.target] = f"{origin}={value}"
    validated = validate_data(_nested(config_given), RunConfig, sources, origin="job knobs")
    config_values = {key: getattr(getattr(validated, key.split(".")[0]), key.split(".")[1]) for key in config_given}
    if config_values.get("slurm.num_gpus") == 0:
        raise ConfigError(f"{sources['slurm.num_gpus']}: a GPU job needs at least 1 GPU per node; for a CPU-only "
                          "job set CPU_PROCS=N (or --cpu-procs N) instead")
    validated_options = validate_data(options_given, options, sources, origin="job knobs")
    return Knobs(config_values, validated_options, sources)


_TIME_PARTS = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(text: str) -> int:
    """Seconds of a SLURM time: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S (0: no limit)."""
    match = _TIME_PARTS.match(text)
    if match is None:
        raise JobError(f"cannot read SLURM time {text!r}; write it as HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = ((days * 24 + first) * 60 + (second or 0)) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = (first * 60 + second) * 60 + third
    else:  # M or M:S
        seconds = first * 60 + (second or 0)
    return seconds


def slurm_time_minutes(text: str) -> int:
    """Minutes (rounded up) of a SLURM time (0: no limit)."""
    return -(-slurm_time_seconds(text) // 60)
