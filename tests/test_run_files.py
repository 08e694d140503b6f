"""A training run's files and the one checkpoint writer: self-describing checkpoints, RNG state, the checks of a
checkpoint against the flags, the log trimmed on resume."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import utils
from engine import checkpoint_file
from engine.training import checkpoints, loop, settings
from models import CheckpointError, ModelDescription, build_model, check_description, load_checkpoint, load_weights


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


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
    optimizer = torch.optim.Adam(loop.image_param_groups(model, 1e-4), lr=1e-3)
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
    checkpoint_file.save_checkpoint([tmp_path / "a.pth", tmp_path / "b.pth"], weights, description)
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
    check_description(found, "ck.pth", model="sdneta", config="sdnet-a", bn=True, tid=None)
    check_description(found, "ck.pth", model=None, bn=None)  # not given: nothing to contradict
    with pytest.raises(CheckpointError, match=r"^--model sdnet contradicts ck.pth, which has model sdneta$"):
        check_description(found, "ck.pth", model="sdnet")
    with pytest.raises(CheckpointError, match=r"^--nobn contradicts ck.pth, which has bn True$"):
        check_description(found, "ck.pth", bn=False)
    with pytest.raises(CheckpointError, match=r"^--train-config sdnet contradicts ck.pth, which has config sdnet-a$"):
        check_description(found, "ck.pth", flags={"config": "--train-config"}, config="sdnet")
    unknown = ModelDescription("stdnet", None, None, None, None, False)  # a raw file says nothing of these
    check_description(unknown, "raw.pth", config="sdnet", bn=False, tid=("cv",), nframes=4)


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
