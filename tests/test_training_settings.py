"""The training flags and the optimizer: lr steps, the learning-rate schedule, the parameter groups by name and
the model choices of each kind."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from torch import nn

import configs
from engine.training import loop, settings
from models import build_model


def test_parse_lr_steps():
    assert settings.parse_lr_steps("90-150") == (90, 150)
    assert settings.parse_lr_steps("30,50") == (30, 50)
    assert settings.parse_lr_steps("") == ()
    with pytest.raises(argparse.ArgumentTypeError):
        settings.parse_lr_steps("90-x")


def test_lr_schedule_multistep_and_cosine():
    steps = {"lr": 1e-3, "lr_type": "multistep", "lr_steps": (90, 150), "epochs": 180}
    values = {epoch: loop.lr_at_epoch(epoch, **steps) for epoch in (0, 89, 90, 149, 150, 179)}
    assert values == pytest.approx({0: 1e-3, 89: 1e-3, 90: 1e-4, 149: 1e-4, 150: 1e-5, 179: 1e-5}, rel=1e-12)
    cosine = {"lr": 1e-3, "lr_type": "cosine", "lr_steps": (), "epochs": 60}
    assert loop.lr_at_epoch(0, **cosine) == pytest.approx(1e-3)
    assert loop.lr_at_epoch(30, **cosine) == pytest.approx(0.5e-3)
    assert loop.lr_at_epoch(45, **cosine) == pytest.approx(0.5e-3 * (1 + np.cos(np.pi * 0.75)))


def _group_of(groups: list[dict]) -> dict[int, dict]:
    owner = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in owner, "a parameter is in two groups"
            owner[id(param)] = group
    return owner


def test_image_param_groups_by_name_and_alpha_freeze():
    model = build_model("sdnet", bn=True)
    groups = loop.image_param_groups(model, wd=1e-4)
    owner = _group_of(groups)
    assert len(owner) == sum(1 for _ in model.parameters())
    for name, param in model.named_parameters():
        expected = ("scales", 5e-5) if "scales" in name else ("bn", 1e-5) if "bn" in name else ("other", 1e-4)
        assert (owner[id(param)]["name"], owner[id(param)]["weight_decay"]) == pytest.approx(expected), name
    # init block + 15 DiffBlocks carry branch logits
    assert len(next(g for g in groups if g["name"] == "scales")["params"]) == 16
    optimizer = torch.optim.Adam(groups, lr=1.0)
    loop.set_epoch_lr(optimizer, 1e-3, freeze_scales=True)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"scales": 0.0, "bn": 1e-3, "other": 1e-3}
    loop.set_epoch_lr(optimizer, 1e-4, freeze_scales=False)
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
    owner = _group_of(loop.video_param_groups(model, wd=1e-4, lr_reduce=0.05, preloaded=True))
    for name, param in model.named_parameters():
        group = owner[id(param)]
        if "block" in name:
            expected = ("backbone", 5e-5, 0.05)
        elif "norm" in name:
            expected = ("norm", 1e-5, 1.0)
        else:  # decoder convs, the STDC logits, and a 'bn' outside the backbone
            expected = ("other", 1e-4, 1.0)
        assert (group["name"], group["weight_decay"], group["lr_scale"]) == pytest.approx(expected), name
    owner = _group_of(loop.video_param_groups(model, wd=1e-4, lr_reduce=0.05, preloaded=False))
    for name, param in model.named_parameters():
        expected = ("norm", 1e-5) if ("norm" in name or "bn" in name) else ("other", 1e-4)
        assert (owner[id(param)]["name"], owner[id(param)]["weight_decay"]) == pytest.approx(expected), name
        assert owner[id(param)]["lr_scale"] == 1.0


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
