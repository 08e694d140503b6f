"""What a training run is asked to do, as data: the flags resolved once into a frozen `TrainSettings`, and the
task (its model, data, loss, parameter groups, validation sets) as a frozen `TrainingTask` of callables into
``models``, ``data`` and ``engine.training.loop``, which the engine calls; nothing calls back into a script.

``train_sod.py`` / ``train_vsod.py`` parse their flags, make the settings with `settings_from_flags` and their
task from the settings, and hand both to `engine.training.startup.run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

import configs
import utils
from data.guard import max_pixels_of
from engine.training.step import QAT_PRECISION, TRAIN_PRECISIONS, StepSettings
from utils import fail

__all__ = ["TrainSettings", "TrainingTask", "add_training_args", "parse_lr_steps", "settings_from_flags"]


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
    def quantization_aware(self) -> bool:
        """``--precision int8``: the converted model fine-tuned with 8-bit fake quantization (`engine.training.qat`);
        its checkpoints are converted ones."""
        return self.step.precision == QAT_PRECISION

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
    """`TrainSettings` of parsed training flags (`add_training_args` plus the script's ``task_flag_names``),
    ``changes`` applied (a script's own resolution, e.g. a rounded size). Nothing is checked here that needs the
    device; `engine.training.startup` checks the rest before anything is written."""
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
    ``engine.training.loop`` (module-level functions and classes, or ``functools.partial`` of them, so that the task
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


# --- the training flags, which `settings_from_flags` resolves ------------------------------------------------------


def parse_lr_steps(text: str) -> tuple[int, ...]:
    """``--lr-steps`` value: epochs joined by '-' as in the released scripts ('90-150'), or by ','."""
    epochs = tuple(int(value) for value in re.split(r"[-,]", text)) if re.fullmatch(r"\d+([-,]\d+)*", text) else ()
    if epochs and not 1 <= min(epochs) <= max(epochs) <= utils.MAX_EPOCHS or not epochs and text.strip():
        raise argparse.ArgumentTypeError(f"expected epochs (1 to {utils.MAX_EPOCHS}) joined by '-', e.g. 90-150, got "
                                         f"{text!r}")
    return epochs


def add_training_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """Flags shared by train_sod.py (``kind='image'``) and train_vsod.py (``'video'``), defaults from
    ``configs.TRAIN_DEFAULTS[kind]``; ``--model`` only offers the ``configs.MODELS`` entries of that kind."""
    defaults = configs.TRAIN_DEFAULTS[kind]
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=defaults["model"], choices=utils.model_names(kind), help="model to train")
    group.add_argument("--config", default=None, choices=sorted(configs.OP_TABLES),
                       help="training op table of the backbone (docs/design.md §4.2; default: the model's own)")
    group = parser.add_argument_group("data and output")
    group.add_argument("--datadir", default=None, help="data root (required), laid out as docs/data.md says")
    group.add_argument("--savedir", default="results/savedir",
                       help="output folder: args.json, log.jsonl, log.txt and save_models/checkpoint_*.pth")
    group.add_argument("--size", type=utils.input_size, default=defaults["size"],
                       help=f"square training input size in pixels ({configs.MIN_INPUT_SIZE} to "
                            f"{configs.MAX_INPUT_SIZE})")
    group.add_argument("-j", "--workers", type=utils.data_processes, default=4,
                       help="data loading processes per training process (0: in the training process)")
    group.add_argument("--skip-bad-pairs", action="store_true",
                       help="train without the training pairs the check before the first step refuses (default: "
                            "list them and stop, exit 2)")
    utils.add_max_megapixels_arg(group)
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=utils.int_between(1, utils.MAX_EPOCHS), default=defaults["epochs"],
                       help="training epochs")
    group.add_argument("--batch-size", type=utils.int_between(1, 4096), default=defaults["batch_size"],
                       help="global batch size in samples (images or clips), split evenly over the training processes")
    group.add_argument("--lr", type=utils.float_between(0.0, 1.0, low_open=True), default=defaults["lr"],
                       help="base learning rate of Adam (> 0)")
    group.add_argument("--wd", type=utils.float_between(0.0, 1.0), default=defaults["wd"],
                       help="weight decay (L2 in Adam) of conv weights and biases; other groups get a fraction")
    group.add_argument("--lr-type", default=defaults["lr_type"], choices=["multistep", "cosine"])
    group.add_argument("--lr-steps", type=parse_lr_steps, default=defaults["lr_steps"],
                       help="multistep: epochs at which the lr is multiplied by 0.1, joined by '-' (default "
                       f"{'-'.join(map(str, defaults['lr_steps']))})")
    group.add_argument("--seed", type=utils.seed_number, default=None,
                       help="seed of initialisation, shuffling and augmentation (default: the time; a resumed run "
                       "keeps its checkpoint's seed)")
    group.add_argument("--iter-size", type=utils.int_between(1, 1024), default=1,
                       help="batches accumulated into one optimizer step (the loss is divided by iter-size x "
                       "batch-size, as in the release)")
    group.add_argument("--max-steps", type=utils.int_between(0, utils.MAX_COUNT), default=0,
                       help="stop each pass after this many steps (0: full passes; for smoke tests and benchmarks)")
    group.add_argument("--print-freq", type=utils.int_between(0, utils.MAX_COUNT), default=10,
                       help="log the running loss and images/s every this many steps of a pass (0: never)")
    group = parser.add_argument_group("how a step runs (docs/training.md)")
    group.add_argument("--train-form", default="fused", choices=configs.TRAIN_FORMS,
                       help="fused (default): each linear multi-branch block as one convolution with its mixed "
                            "kernel, the same function of the same parameters; separate: the authors' arithmetic")
    image = kind == "image"
    group.add_argument("--precision", default="fp32",
                       choices=TRAIN_PRECISIONS if image else tuple(p for p in TRAIN_PRECISIONS if p != QAT_PRECISION),
                       help="autocast of the forward pass (the loss stays fp32): fp32, bf16 (CPUs with AVX512-BF16 "
                            "or AMX, GPUs with bf16), fp16 (CUDA, loss scaling)" + (
                                "; int8: quantization-aware fine-tuning of the converted model for --precision int8 "
                                "inference (needs --finetune; docs/training.md)" if image else ""))
    group.add_argument("--amp", action="store_true", help="the release's flag: --precision fp16 (no CUDA: fp32)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC parameters and inputs (default: on, faster on the CPUs measured; off for bf16 on a "
                            "CPU whose bf16 channels_last convolutions fail a check at start-up, e.g. AMD Zen 4)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model (failure: one line, exit 1)")
    group.add_argument("--threads", type=utils.thread_count, default=None,
                       help="torch CPU threads per process (default: OMP_NUM_THREADS, else usable cores / processes)")
    group = parser.add_argument_group("initialisation and resuming")
    group.add_argument("--preload", default=None,
                       help="backbone weights to start from (every entry whose name contains 'block')")
    group.add_argument("--finetune", default=None,
                       help="full model weights to start from (our checkpoint or a released state dict); fresh "
                       "optimizer, epoch 0")
    group.add_argument("--resume", action="store_true",
                       help="continue from <savedir>/save_models/checkpoint_latest.pth if it exists")
    group.add_argument("--resume-from", default=None, help="continue from this training checkpoint")
    group.add_argument("--save-freq", type=utils.epoch_count, default=10,
                       help="also keep save_models/checkpoint_%%03d.pth every this many epochs (0: never)")
    group.add_argument("--evaluate", default=None, metavar="CHECKPOINT",
                       help="validate these weights ('best': <savedir>/save_models/checkpoint_best.pth) on the "
                       "validation sets and exit; nothing is written")
    group.add_argument("--checkinfo", action="store_true", help="log the model's parameter count and exit")
    group = parser.add_argument_group("devices")
    group.add_argument("--gpu", default="",
                       help="CUDA devices, e.g. 0 or 0,1 (one DDP process per device); '' = CPU. Under torchrun or "
                       "srun each process takes the device of its local rank")
    group.add_argument("--sync-bn", action="store_true",
                       help="BatchNorm statistics over the batch of all processes (default: per process)")
