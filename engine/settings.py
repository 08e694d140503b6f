"""What a training run is asked to do, as data: the flags resolved once into a frozen `TrainSettings`, and the
task (its model, data, loss, parameter groups, validation sets) as a frozen `TrainingTask` of callables into
``models``, ``data`` and ``engine.train``, which the engine calls; nothing calls back into a script.

``train_sod.py`` / ``train_vsod.py`` parse their flags, make the settings with `settings_from_flags` and their
task from the settings, and hand both to `engine.startup.run`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

import configs
from data.guard import max_pixels_of
from engine.train_step import StepSettings
from utils import fail

__all__ = ["TrainSettings", "TrainingTask", "settings_from_flags"]


@dataclass(frozen=True)
class TrainSettings:
    """The flags of a training run, resolved (``config`` filled in, ``amp`` folded into ``step.precision``). Fields
    the engine reads are typed; ``task_flags`` keeps the task's own flags (data, loss, schedule of the branch
    logits) for the record: `as_flags` gives every flag by name for args.json and the checkpoints."""

    model: str
    config: str
    bn: bool
    datadir: str | None
    savedir: str
    size: int
    workers: int
    epochs: int
    batch_size: int
    lr: float
    wd: float
    lr_type: str
    lr_steps: tuple[int, ...]
    seed: int | None
    amp: bool
    iter_size: int
    max_steps: int
    print_freq: int
    preload: str | None
    finetune: str | None
    resume: bool
    resume_from: str | None
    save_freq: int
    evaluate: str | None
    checkinfo: bool
    gpu: str
    sync_bn: bool
    threads: int | None
    step: StepSettings = field(default_factory=StepSettings)
    max_megapixels: float = configs.DEFAULT_MAX_MEGAPIXELS
    skip_bad_pairs: bool = False
    # video models only (None for images): STDC ops, their initial logits, clip length, STDC pairs per module
    tid: tuple[str, ...] | None = None
    scales: tuple[float, ...] | None = None
    nframes: int | None = None
    nstdc: int | None = None
    task_flags: tuple[tuple[str, Any], ...] = ()

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    @property
    def max_pixels(self) -> int:
        """The pixel cap of every image read (`data.guard`)."""
        return max_pixels_of(self.max_megapixels)

    def task_flag(self, name: str) -> Any:
        return dict(self.task_flags)[name]

    def as_flags(self) -> dict[str, Any]:
        """Every flag by its argparse name, the step settings and the task's flags included."""
        flags = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("step", "task_flags")}
        return {**flags, **self.step.describe(), **dict(self.task_flags)}


def settings_from_flags(args: argparse.Namespace, kind: str, task_flag_names: tuple[str, ...],
                        **changes: Any) -> TrainSettings:
    """`TrainSettings` of parsed training flags (`utils.add_training_args` plus the script's ``task_flag_names``),
    ``changes`` applied (a script's own resolution, e.g. a rounded size). Nothing is checked here that needs the
    device; `engine.startup` checks the rest before anything is written."""
    values = {**vars(args), **changes}
    if values["amp"] and values["precision"] != "fp32":
        fail(f"--amp is the release's name for --precision fp16: give one, not --amp with --precision "
             f"{values['precision']}")
    video = kind == "video"
    return TrainSettings(
        model=values["model"], config=values["config"] or configs.MODELS[values["model"]]["config"],
        bn=bool(values["bn"]), datadir=values["datadir"], savedir=values["savedir"], size=values["size"],
        workers=values["workers"], epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
        wd=values["wd"], lr_type=values["lr_type"], lr_steps=tuple(values["lr_steps"]), seed=values["seed"],
        amp=values["amp"], iter_size=values["iter_size"], max_steps=values["max_steps"],
        print_freq=values["print_freq"], preload=values["preload"], finetune=values["finetune"],
        resume=values["resume"], resume_from=values["resume_from"], save_freq=values["save_freq"],
        evaluate=values["evaluate"], checkinfo=values["checkinfo"], gpu=values["gpu"], sync_bn=values["sync_bn"],
        threads=values["threads"], max_megapixels=values["max_megapixels"], skip_bad_pairs=values["skip_bad_pairs"],
        step=StepSettings(values["train_form"], "fp16" if values["amp"] else values["precision"],
                          values["channels_last"], values["compile"]),
        tid=tuple(values["tid"]) if video else None, scales=tuple(values["scales"]) if video else None,
        nframes=values["nframes"] if video else None, nstdc=values["nstdc"] if video else None,
        task_flags=tuple((name, _frozen(values[name])) for name in task_flag_names))


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class TrainingTask:
    """What differs between image and video training, as data: callables into ``models`` / ``data`` /
    ``engine.train`` (module-level functions and classes, or ``functools.partial`` of them, so that the task
    pickles into the processes of a multi-GPU run) and plain values.

    ``build_model(deploy=False)``: the model; ``train_set(seed=...)``: the train-mode dataset (a `data.DataError`
    is reported as one line naming ``train_flag``); ``val_sets()``: the test-mode validation datasets by name
    (errors named by ``val_flag``); ``loss(batch)``: the loss of a batch of ``batch`` samples per process;
    ``param_groups(model)``: Adam's parameter groups; ``pass_sizes``: the input size of each pass of an epoch;
    ``best_file``: the best checkpoint's file name, ``{}`` standing for the validation set's name."""

    kind: str
    build_model: Callable[..., nn.Module]
    train_set: Callable[..., Dataset]
    val_sets: Callable[[], Mapping[str, Dataset]]
    loss: Callable[[int], Callable]
    param_groups: Callable[[nn.Module], list[dict]]
    train_flag: str
    val_flag: str
    pass_sizes: tuple[int, ...]
    best_file: str = "checkpoint_best.pth"
    warmup: int = 0
    frames_per_sample: int = 1
    drop_last: bool = False
    summary: str = ""
    loss_meaning: str = ""  # what the logged loss is, said once at the start

    def best_file_of(self, val_set: str) -> str:
        return self.best_file.format(val_set)
