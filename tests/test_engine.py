"""The training machinery of engine/: schedule, parameter groups, RNG state, checkpoints, process spawning."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
from pathlib import Path

import bounds
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import configs
import utils
from data import atomic
from engine import checkpoints, distributed, settings, train
from models import CheckpointError, ModelDescription, build_model, load_checkpoint, load_weights


def test_parse_lr_steps():
    assert settings.parse_lr_steps("90-150") == (90, 150)
    assert settings.parse_lr_steps("30,50") == (30, 50)
    assert settings.parse_lr_steps("") == ()
    with pytest.raises(argparse.ArgumentTypeError):
        settings.parse_lr_steps("90-x")


def test_lr_schedule_multistep_and_cosine():
    steps = {"lr": 1e-3, "lr_type": "multistep", "lr_steps": (90, 150), "epochs": 180}
    values = {epoch: train.lr_at_epoch(epoch, **steps) for epoch in (0, 89, 90, 149, 150, 179)}
    assert values == pytest.approx({0: 1e-3, 89: 1e-3, 90: 1e-4, 149: 1e-4, 150: 1e-5, 179: 1e-5}, rel=1e-12)
    cosine = {"lr": 1e-3, "lr_type": "cosine", "lr_steps": (), "epochs": 60}
    assert train.lr_at_epoch(0, **cosine) == pytest.approx(1e-3)
    assert train.lr_at_epoch(30, **cosine) == pytest.approx(0.5e-3)
    assert train.lr_at_epoch(45, **cosine) == pytest.approx(0.5e-3 * (1 + np.cos(np.pi * 0.75)))


def _group_of(groups: list[dict]) -> dict[int, dict]:
    owner = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in owner, "a parameter is in two groups"
            owner[id(param)] = group
    return owner


def test_image_param_groups_by_name_and_alpha_freeze():
    model = build_model("sdnet", bn=True)
    groups = train.image_param_groups(model, wd=1e-4)
    owner = _group_of(groups)
    assert len(owner) == sum(1 for _ in model.parameters())
    for name, param in model.named_parameters():
        expected = ("scales", 5e-5) if "scales" in name else ("bn", 1e-5) if "bn" in name else ("other", 1e-4)
        assert (owner[id(param)]["name"], owner[id(param)]["weight_decay"]) == pytest.approx(expected), name
    # init block + 15 DiffBlocks carry branch logits
    assert len(next(g for g in groups if g["name"] == "scales")["params"]) == 16
    optimizer = torch.optim.Adam(groups, lr=1.0)
    train.set_epoch_lr(optimizer, 1e-3, freeze_scales=True)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"scales": 0.0, "bn": 1e-3, "other": 1e-3}
    train.set_epoch_lr(optimizer, 1e-4, freeze_scales=False)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"scales": 1e-4, "bn": 1e-4, "other": 1e-4}


class _VideoLike(nn.Module):
    """Names as in STDNet: backbone 'init_block'/'blockX_Y' (with bn and scales), decoder norms and STDC logits."""

    def __init__(self) -> None:
        super().__init__()
        self.init_block = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3)})
        self.block1_1 = nn.ModuleDict({"conv2": nn.Conv2d(4, 4, 1), "bn0": nn.BatchNorm2d(4)})
        self.block1_1.scales = nn.Parameter(torch.zeros(3))
        self.project1 = nn.ModuleDict({"conv": nn.Conv2d(4, 4, 1), "norm": nn.BatchNorm2d(4)})
        self.global_temporal = nn.ModuleDict({"norms": nn.ModuleList([nn.BatchNorm2d(4)]),
                                              "bn_like": nn.BatchNorm2d(4)})
        self.global_temporal.scales = nn.Parameter(torch.zeros(3))


def test_video_param_groups_preloaded_and_from_scratch():
    model = _VideoLike()
    owner = _group_of(train.video_param_groups(model, wd=1e-4, lr_reduce=0.05, preloaded=True))
    for name, param in model.named_parameters():
        group = owner[id(param)]
        if "block" in name:
            expected = ("backbone", 5e-5, 0.05)
        elif "norm" in name:
            expected = ("norm", 1e-5, 1.0)
        else:  # decoder convs, the STDC logits, and a 'bn' outside the backbone
            expected = ("other", 1e-4, 1.0)
        assert (group["name"], group["weight_decay"], group["lr_scale"]) == pytest.approx(expected), name
    owner = _group_of(train.video_param_groups(model, wd=1e-4, lr_reduce=0.05, preloaded=False))
    for name, param in model.named_parameters():
        expected = ("norm", 1e-5) if ("norm" in name or "bn" in name) else ("other", 1e-4)
        assert (owner[id(param)]["name"], owner[id(param)]["weight_decay"]) == pytest.approx(expected), name
        assert owner[id(param)]["lr_scale"] == 1.0


def test_write_bytes_atomic_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "save_models" / "checkpoint_latest.pth"
    atomic.write_bytes_atomic(target, b"old")

    def crash(*_):
        raise KeyboardInterrupt  # a kill between writing the temporary file and renaming it

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint_latest.pth"]



def test_atomic_path_renames_on_success_and_removes_the_temporary_on_error(tmp_path):
    from data.atomic import atomic_path

    target = tmp_path / "out" / "curves.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".curves.png.")
        temporary.write_bytes(b"first")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".mp4") as temporary:
        assert temporary.suffix == ".mp4"
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["curves.png"]

def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_threads_writing_one_file_at_once_never_mix(tmp_path):
    """Temporary names are unique per thread: eight threads writing one target at once each finish, and the target
    is one of their complete payloads."""
    import threading

    target = tmp_path / "shared.bin"
    payloads = [bytes([index]) * 200_000 for index in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors = []

    def write(payload: bytes) -> None:
        barrier.wait()
        try:
            atomic.write_bytes_atomic(target, payload)
        except Exception as err:  # any failure is the test's to report
            errors.append(err)

    threads = [threading.Thread(target=write, args=(payload,)) for payload in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_a_killed_writers_temporary_is_removed_a_live_ones_kept(tmp_path):
    """The first write of a process into a folder removes the temporary files of dead writers of this host, not
    those of live ones (another process writing there now) nor other files."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "maps"
    folder.mkdir()
    host = atomic._HOST
    names = {"stale": f".a.png.{host}.{dead.pid}.1.tmp", "live": f".b.png.{host}.{os.getpid()}.1.tmp",
             "video": f".c.mp4.{host}.{dead.pid}.7.tmp.mp4", "other host": f".d.png.elsewhere.{dead.pid}.1.tmp",
             "not ours": ".e.png.tmp"}
    for name in names.values():
        (folder / name).write_bytes(b"x")
    atomic.write_bytes_atomic(folder / "new.png", b"y")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["new.png", names["live"], names["other host"], names["not ours"]])


def test_checkpoints_flush_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """fsync=True (checkpoints, the run log): the file's data before the rename, its folder's entry after it."""
    synced = []
    original = os.fsync

    def spy(handle: int) -> None:
        synced.append("folder" if os.path.isdir(f"/proc/self/fd/{handle}") else "file")
        original(handle)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    atomic.write_bytes_atomic(tmp_path / "checkpoint.pth", b"weights", fsync=True)
    assert synced == ["file", "folder"]
    synced.clear()
    atomic.write_bytes_atomic(tmp_path / "map.png", b"pixels")
    assert synced == []


def test_rng_state_roundtrip_through_weights_only_file():
    utils.seed_everything(123)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    buffer = io.BytesIO()
    torch.save(checkpoints.capture_rng_state(), buffer)
    expected = _draws()
    utils.seed_everything(7)
    buffer.seek(0)
    checkpoints.restore_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected


def _image_args(tmp_path: Path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_training_args(parser, "image")
    args = parser.parse_args(["--savedir", str(tmp_path), "--seed", "3"])
    args.config, args.bn = "sdnet", False
    vars(args).update(overrides)
    return args


CONTRACT_KEYS = {"model", "config", "bn", "tid", "scales", "nframes", "nstdc", "deploy", "epoch", "args", "optimizer",
                 "scheduler", "rng", "best", "state_dict"}


def test_checkpoint_is_self_describing_and_saved_at_the_right_epochs(tmp_path):
    model = build_model("sdnet")
    optimizer = torch.optim.Adam(train.image_param_groups(model, 1e-4), lr=1e-3)
    args = _image_args(tmp_path, save_freq=10)
    for epoch in (8, 9):
        best = ["checkpoint_best.pth"] if epoch == 8 else []
        checkpoints.save_training_checkpoint(model, args, epoch, optimizer, {"SOD": 0.25}, best_files=best)
    names = sorted(p.name for p in (tmp_path / "save_models").iterdir())
    assert names == ["checkpoint_009.pth", "checkpoint_best.pth", "checkpoint_latest.pth"]
    loaded = checkpoints.load_training_checkpoint(tmp_path / "save_models" / "checkpoint_latest.pth")
    assert set(loaded.contents) == CONTRACT_KEYS
    assert loaded.description == ModelDescription("sdnet", "sdnet", False, None, None, False)
    assert loaded.contents["epoch"] == 9
    assert loaded.contents["args"]["seed"] == 3 and loaded.contents["best"] == {"SOD": 0.25}
    assert not any(key.startswith("module.") for key in loaded.state_dict)
    assert torch.load(tmp_path / "save_models" / "checkpoint_best.pth", weights_only=True)["epoch"] == 8
    fresh = build_model("sdnet")
    load_weights(fresh, tmp_path / "save_models" / "checkpoint_latest.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_one_writer_for_training_and_converted_checkpoints(tmp_path):
    """`save_checkpoint` writes the description beside the weights; `load_checkpoint` reads it back as it was."""
    description = ModelDescription("stdnet", "sdnet", True, ("cv", "cd", "ad"), 4, True)
    weights = build_model("stdnet", deploy=True, nframes=4).state_dict()
    checkpoints.save_checkpoint([tmp_path / "a.pth", tmp_path / "b.pth"], weights, description)
    for name in ("a.pth", "b.pth"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.description == description
        assert set(loaded.contents) == {"model", "config", "bn", "tid", "nframes", "deploy", "nstdc", "state_dict"}
        assert all(torch.equal(loaded.state_dict[key], value) for key, value in weights.items())


def test_load_training_checkpoint_rejects_weights_only_files(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"module.x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a training checkpoint.*--finetune"):
        checkpoints.load_training_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoints.load_training_checkpoint(tmp_path / "absent.pth")


def test_check_description_names_the_flag_and_the_file():
    found = ModelDescription("sdneta", "sdnet-a", True, None, None, False)
    checkpoints.check_description(found, "ck.pth", model="sdneta", config="sdnet-a", bn=True, tid=None)
    checkpoints.check_description(found, "ck.pth", model=None, bn=None)  # not given: nothing to contradict
    with pytest.raises(CheckpointError, match=r"^--model sdnet contradicts ck.pth, which has model sdneta$"):
        checkpoints.check_description(found, "ck.pth", model="sdnet")
    with pytest.raises(CheckpointError, match=r"^--nobn contradicts ck.pth, which has bn True$"):
        checkpoints.check_description(found, "ck.pth", bn=False)
    with pytest.raises(CheckpointError, match=r"^--train-config sdnet contradicts ck.pth, which has config sdnet-a$"):
        checkpoints.check_description(found, "ck.pth", flags={"config": "--train-config"}, config="sdnet")
    unknown = ModelDescription("stdnet", None, None, None, None, False)  # a raw file says nothing of these
    checkpoints.check_description(unknown, "raw.pth", config="sdnet", bn=False, tid=("cv",), nframes=4)


def test_trim_log_drops_epochs_to_be_redone(tmp_path):
    for epoch in range(4):
        checkpoints.append_log_line(tmp_path, {"epoch": epoch, "loss": float(epoch)})
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"epoch": 4, "lo')  # a line cut short by a kill
    checkpoints.trim_log(tmp_path, 1)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    checkpoints.trim_log(tmp_path, -1)  # a fresh run in the same folder
    assert (tmp_path / "log.jsonl").read_text() == ""


def test_model_choices_follow_the_kind():
    for kind in ("image", "video"):
        parser = argparse.ArgumentParser()
        settings.add_training_args(parser, kind)
        names = {name for name, spec in configs.MODELS.items() if spec["kind"] == kind}
        assert set(next(a for a in parser._actions if a.dest == "model").choices) == names
        other = next(name for name, spec in configs.MODELS.items() if spec["kind"] != kind)
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--model", other])
        assert exit_info.value.code == 2


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
