"""Process-group setup (torchrun, SLURM or single process) and the collectives the engine needs."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

import torch
import torch.distributed as torch_dist
from torch import nn

log = logging.getLogger(__name__)


class DistributedSetupError(RuntimeError):
    """The launch environment or the ranks' configs are inconsistent."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the rank that does all file and MLflow I/O."""
        return self.rank == 0


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as 'gpu[003-005,009],cpu01' -> 'gpu003'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise DistributedSetupError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}; set MASTER_ADDR explicitly")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _launch_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun or SLURM variables; (0, 1, 0) otherwise.

    Under SLURM with several tasks, MASTER_ADDR / MASTER_PORT are derived from the node
    list and job id when not set, and RANK / WORLD_SIZE are exported for env:// init.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local_rank = int(env.get("SLURM_LOCALID", "0"))
        if "MASTER_ADDR" not in env:
            if "SLURM_JOB_NODELIST" not in env:
                raise DistributedSetupError("SLURM multi-task run without MASTER_ADDR or SLURM_JOB_NODELIST")
            env["MASTER_ADDR"] = _first_slurm_host(env["SLURM_JOB_NODELIST"])
        if "MASTER_PORT" not in env:
            env["MASTER_PORT"] = str(10000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
        return rank, world, local_rank
    return 0, 1, 0


def init_distributed(cfg: Any) -> DistInfo:
    """Join the process group described by the environment (`cfg` is the `distributed` config section).

    backend "auto" picks nccl when CUDA is available and gloo otherwise. A single process
    creates no process group.
    """
    rank, world_size, local_rank = _launch_env()
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise DistributedSetupError("distributed.backend is 'nccl' but no CUDA device is visible; use 'gloo' or 'auto'")
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size,
            timeout=timedelta(minutes=cfg.timeout_minutes),
        )
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wait_for_all_ranks() -> None:
    """Barrier before a successful exit: a rank that destroys the process group while another still
    works (rank 0 writing predictions) can abort in gloo ("terminate called without an active exception")."""
    if is_distributed():
        torch_dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was created."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group with more than one rank is active."""
    return torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def _collective_device() -> torch.device:
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_metrics(sums: Mapping[str, torch.Tensor | float], n: int | float) -> dict[str, float]:
    """Sample-weighted means over all ranks: sum over ranks of `sums[k]` divided by the summed `n`.

    `sums[k]` is this rank's sum of (batch mean x batch size); a key a rank lacks (e.g. a rank
    that saw no validation batch) counts as 0 there.
    """
    keys = sorted(set().union(*gather_objects(sorted(sums)))) if is_distributed() else sorted(sums)
    values = [torch.as_tensor(sums.get(k, 0.0), dtype=torch.float64).reshape(()).cpu() for k in keys]
    packed = torch.stack(values + [torch.tensor(float(n), dtype=torch.float64)])
    if is_distributed():
        packed = packed.to(_collective_device())
        torch_dist.all_reduce(packed, op=torch_dist.ReduceOp.SUM)
        packed = packed.cpu()
    total = packed[-1].item()
    if total <= 0:
        raise ValueError("reduce_metrics: no samples were seen on any rank (total n = 0)")
    return {k: packed[i].item() / total for i, k in enumerate(keys)}


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every rank."""
    if not is_distributed():
        return flag
    value = torch.tensor(1.0 if flag else 0.0, device=_collective_device())
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
    return bool(value.item())


def gather_objects(obj: Any) -> list[Any]:
    """Picklable `obj` from every rank, indexed by rank (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (e.g. a run name generated from a timestamp)."""
    if not is_distributed():
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable hash of a resolved config dict."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_config(config: Mapping[str, Any]) -> None:
    """Fail fast when the ranks resolved different configs."""
    hashes = gather_objects(config_hash(config))
    if len(set(hashes)) > 1:
        listing = ", ".join(f"rank {r}: {h}" for r, h in enumerate(hashes))
        raise DistributedSetupError(
            f"ranks resolved different configs ({listing}); make every rank see the same config "
            "file, overrides and environment (e.g. set checkpoint.run_name explicitly)"
        )


def wrap_model(model: nn.Module, dist: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` when world_size > 1, else `model` itself."""
    if dist.world_size == 1:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
