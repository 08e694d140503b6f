"""Distributed training: this process's place in a run, the process group, and one process per listed GPU.

A run is one process (CPU, one GPU), one process per GPU started here (``--gpu 0,1``), one process per rank started
by torchrun, or one SLURM task per GPU started by ``srun``, on one or several nodes. Ranks and the rendezvous come
from the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; `spawn_workers` sets the
same ones) or, without them, from SLURM's (`slurm_environment`).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from utils import LOGGER_NAME, parse_gpu_list, select_device

__all__ = ["DistContext", "is_main_process", "distributed_context", "init_distributed", "cleanup_distributed",
           "spawn_workers", "launch", "slurm_environment", "SyncBatchNorm2d", "convert_sync_batchnorm"]

SLURM_PORT_BASE = 29500  # MASTER_PORT of a SLURM job without one: this + job id mod 1000, the same on every node


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) training run and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    rendezvous: str = "env://"  # init_method of the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'node[03-05,9],gpu1' -> 'node03'."""
    first = re.match(r"[^,\[]*(\[[^\]]*\])?", nodelist).group(0)
    prefix, _, ranges = first.partition("[")
    return prefix + re.split(r"[-,\]]", ranges)[0] if ranges else prefix


def slurm_environment(env: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for a task of a SLURM job started with ``srun`` (one task per GPU), from SLURM_PROCID,
    SLURM_LOCALID, SLURM_NTASKS and the job's node list (the first node is the rendezvous; MASTER_PORT if set,
    else `SLURM_PORT_BASE` + job id mod 1000). Empty when torchrun's variables are set or the job has one task."""
    if "WORLD_SIZE" in env or "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    port = env.get("MASTER_PORT") or str(SLURM_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % 1000)
    return {"RANK": env["SLURM_PROCID"], "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "WORLD_SIZE": env["SLURM_NTASKS"], "MASTER_ADDR": env.get("MASTER_ADDR") or _first_host(nodelist),
            "MASTER_PORT": port}


def is_main_process(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is rank 0 of its run (torchrun's RANK or SLURM's task id; a lone process is), for
    what a script logs once per run before its distributed context exists."""
    return int(slurm_environment(env).get("RANK", env.get("RANK", "0"))) == 0


def distributed_context(gpu: str | None, env: Mapping[str, str] = os.environ) -> DistContext:
    """Rank, world size and device of this process from the torchrun / spawn variables (WORLD_SIZE, RANK,
    LOCAL_RANK) or SLURM's (`slurm_environment`) and ``--gpu``: with CUDA, process LOCAL_RANK uses the
    LOCAL_RANK-th listed device (or cuda:LOCAL_RANK when the list is shorter); without CUDA every process runs on
    the CPU (one warning)."""
    slurm = slurm_environment(env)
    env = {**env, **slurm}
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, 0, select_device(gpu))
    rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    rendezvous = f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}" if slurm else "env://"
    gpus = parse_gpu_list(gpu)
    if gpus and torch.cuda.is_available():
        device = torch.device("cuda", gpus[local_rank] if local_rank < len(gpus) else local_rank)
    else:
        if gpus and rank == 0:
            logging.getLogger(LOGGER_NAME).warning("--gpu %s given but CUDA is not available: running on CPU", gpu)
        device = torch.device("cpu")
    return DistContext(rank, world_size, local_rank, device, rendezvous)


def init_distributed(ctx: DistContext) -> None:
    """Join the process group of a multi-process run (NCCL on CUDA, Gloo on CPU; rendezvous from MASTER_ADDR /
    MASTER_PORT as set by torchrun or `spawn_workers`). No-op for a single process."""
    if ctx.world_size <= 1 or dist.is_initialized():
        return
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    # the other ranks wait in a barrier while rank 0 validates on the (large) video validation sets
    dist.init_process_group(backend, init_method=ctx.rendezvous, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(hours=2))


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_entry(index: int, nprocs: int, port: int, worker: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), LOCAL_RANK=str(index),
                      WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs))
    worker(*args)


def spawn_workers(worker: Callable, nprocs: int, *args: object) -> None:
    """Run ``worker(*args)`` in ``nprocs`` new processes on this machine, each with the variables torchrun would
    set (RANK = LOCAL_RANK = index, WORLD_SIZE, MASTER_ADDR/PORT). A worker that exits with a status (e.g. 2 for
    bad input) makes this raise SystemExit with that status."""
    try:
        torch.multiprocessing.spawn(_spawned_entry, args=(nprocs, _free_port(), worker, args), nprocs=nprocs)
    except torch.multiprocessing.ProcessExitedException as err:
        raise SystemExit(err.exit_code if err.exit_code and err.exit_code > 0 else 1) from None


def _run_and_leave_group(worker: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> None:
    try:
        worker(args)
    finally:
        cleanup_distributed()


def launch(worker: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> None:
    """Run a training ``worker(args)``: once per listed GPU with DDP when ``--gpu`` lists several CUDA devices,
    otherwise once in this process (also under torchrun or srun, which have already started one process per rank).
    Each process leaves the process group the worker joined, whether it returns or raises."""
    gpus = parse_gpu_list(args.gpu)
    started = "WORLD_SIZE" in os.environ or slurm_environment(os.environ)
    if started or len(gpus) < 2 or not torch.cuda.is_available():
        _run_and_leave_group(worker, args)
    else:
        spawn_workers(_run_and_leave_group, len(gpus), worker, args)


class _SyncNormalise(torch.autograd.Function):
    """y = (x - mean) invstd weight + bias with the batch statistics of all processes; the backward pass sums the
    gradient terms of all processes, so every input gets the gradient of the whole batch's statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, total):
        shape = (1, -1, 1, 1)
        normalised = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(normalised, weight, invstd, total)
        return normalised * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, grad):
        normalised, weight, invstd, total = ctx.saved_tensors
        local = torch.cat([grad.sum((0, 2, 3)), (grad * normalised).sum((0, 2, 3))])
        sums = local.clone()
        dist.all_reduce(sums)
        mean_grad, mean_grad_normalised = (sums / total).chunk(2)
        shape = (1, -1, 1, 1)
        grad_input = (weight * invstd).view(shape) * (grad - mean_grad.view(shape) - normalised
                                                      * mean_grad_normalised.view(shape))
        grad_bias, grad_weight = local.chunk(2)  # this process's share; DDP averages parameter gradients
        return grad_input, grad_weight, grad_bias, None, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch of all processes of the group (`--sync-bn`),
    on any device and backend (Gloo on the CPU too, which torch's SyncBatchNorm does not serve). Same parameters,
    buffers and state-dict keys as BatchNorm2d; eval mode and single processes are plain BatchNorm2d. (N, C, H, W)
    -> (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if x.dtype in (torch.float16, torch.bfloat16):  # float16 autocast: statistics in float32, as BatchNorm2d
            x = x.float()
        with torch.no_grad():
            stats = torch.cat([x.sum((0, 2, 3)), x.new_tensor([x.numel() // x.shape[1]])])
            dist.all_reduce(stats)
            total, mean = stats[-1], stats[:-1] / stats[-1]
            squares = ((x - mean.view(1, -1, 1, 1)) ** 2).sum((0, 2, 3))
            dist.all_reduce(squares)
            variance = squares / total
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * variance * total / (total - 1))
        invstd = torch.rsqrt(variance + self.eps)
        return _SyncNormalise.apply(x, self.weight, self.bias, mean, invstd, total)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace, in place, every BatchNorm2d of ``model`` by a `SyncBatchNorm2d` holding the same parameter and
    buffer tensors (so an optimizer built before or after sees the same parameters); returns ``model``."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
                synced.weight, synced.bias = child.weight, child.bias
                synced.running_mean, synced.running_var = child.running_mean, child.running_var
                synced.num_batches_tracked = child.num_batches_tracked
                setattr(module, child_name, synced)
    return model
