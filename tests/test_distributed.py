"""Distributed runs on the CPU: spawned Gloo process groups, Slurm's variables, SyncBatchNorm2d exact in float64."""

from __future__ import annotations

import os
from pathlib import Path

import bounds
import torch
import torch.distributed as dist
from torch import nn

from engine import distributed


def _all_reduce_worker(out_dir: str) -> None:
    ctx = distributed.distributed_context("")
    distributed.init_distributed(ctx)
    value = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(value)
    Path(out_dir, f"rank{ctx.rank}.txt").write_text(f"{ctx.world_size} {ctx.device} {value.item()}")
    distributed.cleanup_distributed()


def test_spawn_workers_runs_a_gloo_process_group_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    distributed.spawn_workers(_all_reduce_worker, 2, str(tmp_path))
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["2 cpu 3.0"] * 2
    assert "WORLD_SIZE" not in os.environ


def test_slurm_variables_map_to_torchrun_s():
    env = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "gpu-node[07-10,12],login1"}
    assert distributed.slurm_environment(env) == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8",
                                                  "MASTER_ADDR": "gpu-node07", "MASTER_PORT": "29742"}
    assert distributed.slurm_environment({**env, "MASTER_PORT": "1234", "SLURM_JOB_NODELIST": "a,b"})[
        "MASTER_ADDR"] == "a"
    assert distributed.slurm_environment({**env, "WORLD_SIZE": "8"}) == {}  # torchrun's variables win
    assert distributed.slurm_environment({**env, "SLURM_NTASKS": "1"}) == {}  # one task: a single process
    ctx = distributed.distributed_context("", {**env, "MASTER_PORT": "1234"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.rendezvous) == (5, 8, 1, "tcp://gpu-node07:1234")


def _sync_bn_worker(out_dir: str) -> None:
    """Half of a float64 batch through conv -> SyncBatchNorm2d -> a loss; saves the output and the gradients (the
    parameter gradients averaged over the processes, as DDP does)."""
    ctx = distributed.distributed_context("")
    distributed.init_distributed(ctx)
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 5, 3, padding=1).double(), nn.BatchNorm2d(5).double()
    model = distributed.convert_sync_batchnorm(nn.Sequential(conv, norm))
    norm = model[1]
    assert isinstance(norm, distributed.SyncBatchNorm2d)
    x = torch.randn(8, 3, 6, 7, dtype=torch.float64)[4 * ctx.rank: 4 * ctx.rank + 4].requires_grad_()
    out = model(x)
    (out**3).sum().backward()
    grads = [conv.weight.grad, norm.weight.grad, norm.bias.grad]
    for grad in grads:
        dist.all_reduce(grad)
        grad /= ctx.world_size
    torch.save({"out": out.detach(), "x_grad": x.grad, "grads": grads, "mean": norm.running_mean,
                "var": norm.running_var}, Path(out_dir, f"rank{ctx.rank}.pt"))
    distributed.cleanup_distributed()


def test_sync_batchnorm_is_exact_in_float64(tmp_path, monkeypatch):
    """2 Gloo processes with SyncBatchNorm2d equal one process with BatchNorm2d on the whole batch: outputs, input
    and parameter gradients, running statistics (float64, 1e-12)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    distributed.spawn_workers(_sync_bn_worker, 2, str(tmp_path))
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 5, 3, padding=1).double(), nn.BatchNorm2d(5).double()
    x = torch.randn(8, 3, 6, 7, dtype=torch.float64).requires_grad_()
    out = norm(conv(x))
    (out**3).sum().backward()
    # the loss of the whole batch is the sum of the two halves' losses; DDP's average halves parameter gradients
    expected = [conv.weight.grad / 2, norm.weight.grad / 2, norm.bias.grad / 2]
    parts = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), out.detach(), atol=bounds.FLOAT64_LAYER, rtol=0)
    torch.testing.assert_close(torch.cat([p["x_grad"] for p in parts]), x.grad, atol=bounds.FLOAT64_LAYER, rtol=0)
    for part in parts:
        for grad, reference in zip(part["grads"], expected, strict=True):
            torch.testing.assert_close(grad, reference, atol=bounds.FLOAT64_LAYER, rtol=0)
        torch.testing.assert_close(part["mean"], norm.running_mean, atol=bounds.FLOAT64_LAYER, rtol=0)
        torch.testing.assert_close(part["var"], norm.running_var, atol=bounds.FLOAT64_LAYER, rtol=0)
