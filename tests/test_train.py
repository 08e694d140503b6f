"""End-to-end training on a tiny synthetic data set: the loss falls, resume after a SIGKILL is bitwise exact, DDP
with 2 Gloo processes equals one process, bad input fails cleanly, and the README training commands start.

Every run is tiny (64 px, 16 training images, one or a few steps per pass) and uses one thread per process, so
runs in separate processes are comparable bit for bit and the file stays within its time budget on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import bounds
import pytest
import torch
from reference import REFERENCE

import train_sod
import train_vsod
import utils
from data.atomic import FAULT_VARIABLE, WRITE_LOG_VARIABLE
from data.synthetic import SyntheticSizes, generate
from engine import hardware
from engine.training import checkpoints, loop
from engine.training import step as train_step
from models import build_model
from models.losses import image_training_loss, video_training_loss

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CHECKPOINTS = REFERENCE / "checkpoints"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, sizes=SyntheticSizes(sod_train=16, sod_test=4, video_train=1, video_test=1,
                                                min_frames=8, max_frames=10))
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def _image_flags(root: Path, savedir: Path, *extra: str) -> list[str]:
    return ["--datadir", str(root), "--train-data", "SYN-TR", "--val-data", "SYN-TE", "--size", "64",
            "--savedir", str(savedir), "-j", "0", *extra]


def _latest(savedir: Path) -> dict:
    return torch.load(savedir / "save_models" / "checkpoint_latest.pth", weights_only=True)


def _log(savedir: Path) -> list[dict]:
    return [json.loads(line) for line in (savedir / "log.jsonl").read_text().splitlines()]


def test_sdnet_loss_falls_on_synthetic_data(synthetic_root, tmp_path, one_thread):
    savedir = tmp_path / "run"
    train_sod.main(_image_flags(synthetic_root, savedir, "--epochs", "4", "--batch-size", "4", "--lr", "3e-3",
                                "--warmup", "1", "--pass-scales", "1.0", "--seed", "1"))
    log = _log(savedir)
    assert [line["epoch"] for line in log] == [0, 1, 2, 3]
    assert set(log[0]) == {"epoch", "lr", "loss", "val_mae", "images_per_s", "seconds", "train_form", "precision",
                           "channels_last", "compile"}
    assert (log[0]["train_form"], log[0]["precision"], log[0]["channels_last"]) == ("fused", "fp32", True)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [line["loss"] for line in log]
    assert log[-1]["val_mae"]["SYN-TE"] < log[0]["val_mae"]["SYN-TE"]
    checkpoint = _latest(savedir)
    assert checkpoint["epoch"] == 3 and checkpoint["args"]["seed"] == 1
    assert json.loads((savedir / "args.json").read_text())["lr"] == 3e-3
    # the branch logits were frozen in epoch 0 only: Adam moved them afterwards
    assert not torch.equal(checkpoint["state_dict"]["block1_1.scales"], torch.tensor([0.0, 1.0, 1.0]))


RESUME_FLAGS = ("--epochs", "3", "--batch-size", "4", "--pass-scales", "1.25", "1.0", "--seed", "5",
                "--max-steps", "3", "--lr", "3e-3", "--warmup", "1", "--resume")


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train_sod.py"), *args], env=env or _env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted_run(synthetic_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """The reference run and the targets of its writes, in order (data/atomic.py's write log)."""
    reference = tmp_path_factory.mktemp("uninterrupted") / "run"
    log = reference.parent / "writes.log"
    result = _run(_image_flags(synthetic_root, reference, *RESUME_FLAGS), env={**_env(), WRITE_LOG_VARIABLE: str(log)})
    assert result.returncode == 0, result.stderr
    return reference, [line.split("\t", 1)[1] for line in log.read_text().splitlines()]


@pytest.mark.slow  # two trainings and a killed one (14 s): .ci/run runs it
@pytest.mark.parametrize("workers", ["2"])  # -j 0: tests/test_faults.py, at every write point
def test_resume_after_sigkill_is_bitwise_identical(synthetic_root, uninterrupted_run, tmp_path, workers):
    """SIGKILLed right after epoch 1's checkpoint is in place (data/atomic.py's fault injection), its data workers
    with it, and resumed with -j 2; the reference ran uninterrupted with -j 0."""
    reference, targets = uninterrupted_run
    resumed = tmp_path / "resumed"
    flags = [*_image_flags(synthetic_root, resumed, *RESUME_FLAGS), "-j", workers]
    point = [i for i, target in enumerate(targets, 1) if target.endswith("checkpoint_latest.pth")][1]
    process = subprocess.Popen([sys.executable, str(REPO / "train_sod.py"), *flags], cwd=REPO,
                               env={**_env(), FAULT_VARIABLE: f"{point}:after"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    assert process.wait(timeout=300) == -signal.SIGKILL
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its data workers, if any are left
    except ProcessLookupError:
        pass
    assert _latest(resumed)["epoch"] == 1
    result = _run(flags)
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1" in result.stderr
    expected, actual = _latest(reference), _latest(resumed)
    assert actual["epoch"] == expected["epoch"] == 2
    for key, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], value), key
    assert [line["epoch"] for line in _log(resumed)] == [0, 1, 2]
    assert [line["loss"] for line in _log(resumed)] == [line["loss"] for line in _log(reference)]


def assert_same_step(one: dict, two: dict, seed: int, name: str = "sdnet", bn: bool = False) -> None:
    """Two runs' checkpoints after the same single Adam step from the initialisation of ``seed`` took the same
    gradient (and, with BN, the same batch statistics), and every weight tensor moved.

    The gradient is read from Adam's state: after one step ``exp_avg`` is (1 - beta1) * (g + wd * w0), one rounding
    from the gradient. The weights themselves are not compared: Adam's first step moves a weight by
    lr * g / (|g| + eps) whatever g's size, so an entry whose exact gradient is 0 (a cd branch's centre tap) or below
    float32 noise moves by anything in [-lr, lr] depending on how the CPU summed it; no float bound holds there.

    The runs sum the same float32 terms in another order: `bounds.GRADIENT_FLOAT32` of the model's largest
    gradient."""
    utils.seed_everything(seed)  # the initialisation both runs started from
    model = build_model(name, bn=bn)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    ids = {id(parameter): key for key, parameter in model.named_parameters()}
    names = [ids[id(p)] for group in loop.image_param_groups(model, 0.0) for p in group["params"]]
    gradients = [[state["exp_avg"] for _, state in sorted(run["optimizer"]["state"].items())] for run in (one, two)]
    assert len(gradients[0]) == len(gradients[1]) == len(names)
    scale = max(g.abs().max().item() for g in gradients[0])
    for key, first, second in zip(names, *gradients, strict=True):
        assert (second.double() - first.double()).abs().max().item() <= bounds.GRADIENT_FLOAT32 * scale, key
    for key, value in one["state_dict"].items():
        if key.endswith(("running_mean", "running_var")):  # sums of the same terms: the same bound
            difference = (two["state_dict"][key].double() - value.double()).abs().max().item()
            assert difference <= bounds.GRADIENT_FLOAT32 * value.abs().max().item(), key
        assert key.endswith("num_batches_tracked") or not torch.equal(value, initial[key]), f"{key} took no step"


@pytest.mark.slow  # a training under torchrun beside one without (10 s): .ci/run runs it
def test_ddp_two_gloo_processes_equal_one_process(synthetic_root, tmp_path):
    flags = ("--epochs", "1", "--batch-size", "8", "--max-steps", "1", "--pass-scales", "1.0", "--seed", "9",
             "--warmup", "0", "--val-data", "")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    result = _run(_image_flags(synthetic_root, single, *flags))
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(REPO / "train_sod.py"), *_image_flags(synthetic_root, ddp, *flags)],
                            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 process(es)" in (ddp / "log.txt").read_text()
    assert_same_step(_latest(single), _latest(ddp), seed=9)
    assert _log(ddp)[0]["loss"] == pytest.approx(_log(single)[0]["loss"], rel=bounds.LOSS_FLOAT32)


def _error_lines(text: str) -> list[str]:
    assert "Traceback" not in text
    return [line for line in text.splitlines() if line.strip()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def previous_run(synthetic_root, tmp_path_factory) -> Path:
    """A finished one-step run whose folder bad invocations must leave untouched."""
    savedir = tmp_path_factory.mktemp("previous") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_sod.main(_image_flags(synthetic_root, savedir, "--epochs", "1", "--batch-size", "2", "--max-steps",
                                    "1", "--pass-scales", "1.0", "--seed", "2"))
    finally:
        torch.set_num_threads(threads)
    return savedir


def _other_model_files(folder: Path) -> tuple[Path, Path]:
    """An SDNet-A training checkpoint of ours and an SDNet-A raw DataParallel state dict."""
    model = build_model("sdneta", bn=True)
    args = Namespace(model="sdneta", config="sdnet-a", bn=True, lr_type="multistep", lr=1e-3,
                     lr_steps=(90, 150), epochs=180, seed=0, savedir=str(folder), save_freq=0)
    optimizer = torch.optim.Adam(loop.image_param_groups(model, 1e-4))
    ours, raw = folder / "save_models" / "checkpoint_latest.pth", folder / "sdneta_raw.pth"
    checkpoints.save_training_checkpoint(model, args, 3, optimizer, {})
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, raw)
    return ours, raw


@pytest.mark.parametrize("case", ["no-datadir", "empty-train-set", "no-preload-file", "resume-from-other-model",
                                  "finetune-other-model", "fp16-on-the-cpu", "bf16-without-native-bf16",
                                  "amp-and-precision"])
def test_bad_input_one_line_exit_2_and_savedir_untouched(case, synthetic_root, previous_run, tmp_path, capsys,
                                                         monkeypatch):
    before = _snapshot(previous_run)
    (tmp_path / "sod" / "EMPTY" / "images").mkdir(parents=True)
    (tmp_path / "sod" / "EMPTY" / "GT").mkdir()
    base = _image_flags(synthetic_root, previous_run, "--epochs", "1")
    if case == "no-datadir":
        argv, named = ["--savedir", str(previous_run)], "--datadir"
    elif case == "empty-train-set":
        argv, named = [*base, "--datadir", str(tmp_path), "--train-data", "EMPTY"], "--train-data EMPTY"
    elif case == "no-preload-file":
        argv, named = [*base, "--preload", str(tmp_path / "absent.pth")], f"--preload {tmp_path / 'absent.pth'}"
    elif case == "fp16-on-the-cpu":
        argv, named = [*base, "--precision", "fp16"], "--precision fp16 trains on CUDA only"
    elif case == "bf16-without-native-bf16":
        from engine.training import step as train_step

        monkeypatch.setattr(train_step, "cpu_has_native_bf16", lambda: False)
        argv, named = [*base, "--precision", "bf16"], "--precision bf16 needs a CPU with native bf16"
    elif case == "amp-and-precision":
        argv, named = [*base, "--amp", "--precision", "bf16"], "--amp is the release's name for --precision fp16"
    else:
        ours, raw = _other_model_files(tmp_path)
        if case == "resume-from-other-model":
            argv, named = [*base, "--resume-from", str(ours)], f"--resume-from: --model sdnet contradicts {ours}"
        else:
            argv, named = [*base, "--finetune", str(raw)], f"--finetune: --model sdnet contradicts {raw}"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train_sod.main(argv)
    assert exit_info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "ERROR" in lines[0] and named in lines[0], lines
    assert _snapshot(previous_run) == before


def test_the_step_settings_run_and_are_recorded(synthetic_root, tmp_path, capsys):
    """--train-form separate / --amp on the CPU / --no-channels-last: what ran is in the log line, log.jsonl and
    args.json; one step of each form from one seed reaches the same weights (tests/test_train_form.py checks the
    forms exactly in float64)."""
    flags = ("--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--pass-scales", "1.0", "--seed", "8",
             "--warmup", "0", "--val-data", "")
    train_sod.main(_image_flags(synthetic_root, tmp_path / "fused", *flags, "--amp"))
    logged = capsys.readouterr().err
    assert "--amp needs CUDA: training in float32" in logged
    assert "step: fused form, fp32, channels_last; " in logged
    train_sod.main(_image_flags(synthetic_root, tmp_path / "separate", *flags, "--train-form", "separate",
                                "--no-channels-last"))
    assert "step: separate form, fp32, NCHW; " in capsys.readouterr().err
    for run_, expected in (("fused", ("fused", "fp32", True)), ("separate", ("separate", "fp32", False))):
        line = _log(tmp_path / run_)[0]
        assert (line["train_form"], line["precision"], line["channels_last"], line["compile"]) == (*expected, False)
        recorded = json.loads((tmp_path / run_ / "args.json").read_text())
        assert (recorded["train_form"], recorded["precision"], recorded["channels_last"]) == expected
    # The forms compute the same function in another order (a mixed kernel, or the branches summed): the same
    # gradient within float32 rounding (the bound of assert_same_step), and every weight moved.
    assert_same_step(_latest(tmp_path / "fused"), _latest(tmp_path / "separate"), seed=8)


@pytest.mark.skipif(not train_step.cpu_has_native_bf16(), reason="this CPU has no native bf16: bf16 is refused")
def test_bf16_trains_several_steps(synthetic_root, tmp_path, capsys, monkeypatch):
    """train_sod.py --precision bf16 at 128 px trains 4 steps with finite losses: in channels_last where this CPU's
    bf16 channels_last convolutions pass their start-up check (engine.hardware), in NCHW (warned) where they fail
    (AMD Zen 4: NaN weights after one step, or a crash). There, --channels-last is refused in one line before the
    first step; the refusal is also checked here with the check made to fail."""
    flags = ("--epochs", "1", "--batch-size", "4", "--max-steps", "4", "--pass-scales", "1.0", "--seed", "3",
             "--warmup", "0", "--val-data", "", "--precision", "bf16", "--size", "128", "--print-freq", "1")
    why = hardware.bf16_channels_last_gradients()
    train_sod.main(_image_flags(synthetic_root, tmp_path / "bf16", *flags))
    logged = capsys.readouterr().err
    assert f"step: fused form, bf16, {'NCHW' if why else 'channels_last'}; " in logged
    assert ("trains in NCHW here" in logged) == bool(why)
    [line] = _log(tmp_path / "bf16")
    assert math.isfinite(line["loss"]) and line["channels_last"] == (why is None)
    assert "step 4/4" in (tmp_path / "bf16" / "log.txt").read_text()
    monkeypatch.setattr(train_step, "bf16_channels_last_gradients", lambda: "bf16 convolutions give wrong weight "
                        "gradients (NaN)")
    with pytest.raises(SystemExit) as exit_info:
        train_sod.main(_image_flags(synthetic_root, tmp_path / "refused", *flags, "--channels-last"))
    assert exit_info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "ERROR" in lines[0] and lines[0].endswith(
        "--precision bf16 --channels-last: on this CPU bf16 convolutions give wrong weight gradients (NaN) in "
        "channels_last (a check at start-up); train with --no-channels-last"), lines
    assert not (tmp_path / "refused").exists()


def test_a_failed_compile_is_one_line_and_no_eager_run(synthetic_root, tmp_path, capsys, monkeypatch):
    from torch._dynamo.exc import Unsupported

    class FailingCompile(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            raise Unsupported("a graph break we cannot take")

    monkeypatch.setattr(torch, "compile", FailingCompile)
    with pytest.raises(SystemExit) as exit_info:
        train_sod.main(_image_flags(synthetic_root, tmp_path / "run", "--epochs", "1", "--batch-size", "4",
                                    "--max-steps", "1", "--pass-scales", "1.0", "--val-data", "", "--compile"))
    assert exit_info.value.code == 1
    errors = [line for line in _error_lines(capsys.readouterr().err) if "ERROR" in line]
    assert len(errors) == 1 and "--compile: torch.compile failed: a graph break we cannot take" in errors[0], errors
    assert not (tmp_path / "run" / "log.jsonl").exists()


def _backbone(name: str) -> str:
    path = REFERENCE_CHECKPOINTS / name
    if not path.is_file():
        pytest.skip(f"reference checkpoint {path} not available")
    return str(path)


README_OVERRIDES = ["--size", "64", "--epochs", "1", "--max-steps", "1", "-j", "0", "--seed", "0"]


def test_readme_image_commands_start(synthetic_root, tmp_path, one_thread, capsys):
    extra = ["--train-data", "SYN-TR", "--val-data", "SYN-TE", "--batch-size", "2", "--pass-scales", "1.0",
             *README_OVERRIDES]
    commands = [
        ("exp1", "--model sdnet --config sdnet --resume --gpu 0,1 --datadir {root}/sod --savedir {out}/exp1", None),
        ("exp2", "--model sdneta --config sdnet-a --resume --gpu 0,1 --datadir {root}/sod --preload {preload} "
                 "--savedir {out}/exp2", "sdneta_imagenet_pretrained_backbone.pth"),
    ]
    for name, command, backbone in commands:
        preload = _backbone(backbone) if backbone else ""
        argv = command.format(root=synthetic_root, out=tmp_path, preload=preload).split() + extra
        capsys.readouterr()
        train_sod.main(argv)
        if not torch.cuda.is_available():  # --gpu 0,1 without CUDA: one warning, one process on the CPU
            assert capsys.readouterr().err.count("CUDA is not available") == 1
        checkpoint = _latest(tmp_path / name)
        assert (checkpoint["model"], checkpoint["epoch"]) == (argv[argv.index("--model") + 1], 0)
    # SDNet-A from the ImageNet backbone: no frozen logits, the full net at lr 1e-3
    assert {g["name"]: g["lr"] for g in _latest(tmp_path / "exp2")["optimizer"]["param_groups"]} == {
        "scales": 1e-3, "other": 1e-3}


def test_readme_video_commands_start(synthetic_root, tmp_path, one_thread):
    lists = synthetic_root / "lists"
    extra = ["--train-lst", str(lists / "train_video_lst.txt"), "--val-lst", str(lists / "val_video_lst.txt"),
             "--batch-size", "1", *README_OVERRIDES]
    commands = [
        ("exp3", "--model stdneta --config sdnet-a --resume --gpu 0,1 --datadir {root} --lr-reduce 0.01 "
                 "--preload {preload} --savedir {out}/exp3", "sdneta_imagenet_pretrained_backbone.pth", 0.01),
        ("exp5", "--model stdnet --config sdnet --resume --gpu 0,1 --datadir {root} --lr-reduce 0.1 "
                 "--preload {preload} --savedir {out}/exp5", "sdnet_stage1_backbone.pth", 0.1),
    ]
    for name, command, backbone, lr_reduce in commands:
        argv = command.format(root=synthetic_root, out=tmp_path, preload=_backbone(backbone)).split() + extra
        # the two forms of the video --beta (off in the README's commands)
        argv += ["--beta", "2.0"] if name == "exp3" else ["--beta", "SYN-V-train", "2.0"]
        train_vsod.main(argv)
        checkpoint = _latest(tmp_path / name)
        assert (checkpoint["epoch"], checkpoint["bn"], checkpoint["tid"], checkpoint["nframes"]) == (
            0, True, ["cv", "cd", "ad"], 8)
        groups = {g["name"]: g["lr"] for g in checkpoint["optimizer"]["param_groups"]}
        assert groups == pytest.approx({"backbone": 1e-3 * lr_reduce, "norm": 1e-3, "other": 1e-3})
        assert (tmp_path / name / "save_models" / "checkpoint_best_SYN-V-test.pth").is_file()
        assert set(_log(tmp_path / name)[0]["val_mae"]) == {"SYN-V-test"}
        assert checkpoint["args"]["beta"] == (["2.0"] if name == "exp3" else ["SYN-V-train", "2.0"])


def test_iter_size_accumulates_like_a_bigger_batch(synthetic_root, tmp_path, one_thread):
    """--batch-size 8 and --batch-size 4 --iter-size 2 (the loss divided by 8 in both) reach the same weights."""
    flags = ("--epochs", "1", "--max-steps", "1", "--pass-scales", "1.0", "--seed", "4", "--warmup", "0",
             "--val-data", "", "--print-freq", "1")
    train_sod.main(_image_flags(synthetic_root, tmp_path / "eight", "--batch-size", "8", *flags))
    train_sod.main(_image_flags(synthetic_root, tmp_path / "accumulated", "--batch-size", "4", "--iter-size", "2",
                                *flags))
    assert_same_step(_latest(tmp_path / "eight"), _latest(tmp_path / "accumulated"), seed=4)
    assert _log(tmp_path / "accumulated")[0]["loss"] == pytest.approx(_log(tmp_path / "eight")[0]["loss"],
                                                                                   rel=bounds.LOSS_FLOAT32)
    # --print-freq 1: one line per optimizer step, in log.txt (the progress bar shows the same)
    assert "epoch 0 @64: step 1/1, loss" in (tmp_path / "accumulated" / "log.txt").read_text()


@pytest.mark.parametrize("video", [False, True])
def test_iter_size_gives_the_gradient_of_a_bigger_batch(video: bool, one_thread) -> None:
    """One optimizer step of SGD (lr 1: the step is the gradient) on a batch of 8 and on two batches of 4 with
    --iter-size 2, with each script's loss: the same step, images and clips alike. BatchNorm layers run in eval mode,
    so that no statistic depends on how the batch is split.

    In float64, where the two splits sum the same terms in another order: `bounds.FLOAT64` of the tensor's largest
    step (at least `bounds.GRADIENT_FLOOR` of the model's largest, for a tensor whose exact gradient is 0 and which
    holds noise only); a split done wrong moves steps by 50 % or more."""
    import copy

    torch.manual_seed(0)
    model = build_model("stdnet" if video else "sdnet", bn=video, nframes=2).double()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module  # stays in eval mode
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(8, 6 if video else 3, 32, 32, generator=generator, dtype=torch.float64)
    # The loop computes the loss in float32 (pred.float()): its per-pixel gradient is the same element-wise
    # arithmetic for both splits, so the float64 backward below it is where they differ.
    target = (torch.rand((8, 2, 1, 32, 32) if video else (8, 1, 32, 32), generator=generator) > 0.5).float()
    steps = []
    for iter_size, batch in ((1, 8), (2, 4)):
        loss = (video_training_loss(batch, nframes=2, beta=None, iter_size=iter_size) if video
                else image_training_loss(batch, beta=1.1, iter_size=iter_size))
        network = copy.deepcopy(model)
        before = {name: p.detach().clone() for name, p in network.named_parameters()}
        optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
        loader = [(inputs[i:i + batch], target[i:i + batch]) for i in range(0, 8, batch)]
        cfg = loop.LoopConfig(device=torch.device("cpu"), iter_size=iter_size, frames_per_sample=2 if video else 1)
        assert loop.train_one_pass(network, loader, optimizer, loss, cfg)["steps"] == 1
        steps.append({name: before[name] - p.detach() for name, p in network.named_parameters()})
    moved, floor = 0, bounds.GRADIENT_FLOOR * max(step.abs().max().item() for step in steps[0].values())
    for name, step in steps[0].items():
        scale = max(step.abs().max().item(), floor)
        assert (steps[1][name] - step).abs().max().item() <= bounds.FLOAT64 * scale, name
        moved += bool(step.abs().max() > 0)
    assert moved > len(steps[0]) // 2


def test_ddp_reduces_gradients_once_per_optimizer_step() -> None:
    """With --iter-size 3, the micro-batches before the last of each step run (forward and backward) under DDP's
    no_sync, so gradients are all-reduced once per step; a pass ending mid-step reduces at its last batch."""
    import contextlib

    class Recording(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.syncing, self.seen = build_model("sdnet"), True, []

        @contextlib.contextmanager
        def no_sync(self):
            self.syncing = False
            yield
            self.syncing = True

        def forward(self, x):
            self.seen.append(self.syncing)
            return self.inner(x)

    model = Recording()
    loader = [(torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()) for _ in range(7)]
    loss = image_training_loss(1, beta=1.1, iter_size=3)
    cfg = loop.LoopConfig(device=torch.device("cpu"), iter_size=3)
    assert loop.train_one_pass(model, loader, torch.optim.SGD(model.parameters(), lr=0.0), loss, cfg)["steps"] == 3
    assert model.seen == [False, False, True, False, False, True, True]


@pytest.mark.slow  # two trainings, one of them under torchrun (12 s)
def test_ddp_with_iter_size_equals_one_process(synthetic_root, tmp_path):
    """2 Gloo processes x 2 micro-batches of 2 (--iter-size 2, gradients reduced once per step) take the step of
    one process on a batch of 8."""
    flags = ("--epochs", "1", "--max-steps", "1", "--pass-scales", "1.0", "--seed", "5", "--warmup", "0",
             "--val-data", "")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    result = _run(_image_flags(synthetic_root, single, "--batch-size", "8", *flags))
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(REPO / "train_sod.py"), *_image_flags(synthetic_root, ddp, "--batch-size", "4",
                                                                       "--iter-size", "2", *flags)],
                            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_step(_latest(single), _latest(ddp), seed=5)


def test_checkinfo_and_evaluate_write_nothing(synthetic_root, previous_run, tmp_path, capsys):
    before = _snapshot(previous_run)
    train_sod.main(_image_flags(synthetic_root, tmp_path / "info", "--checkinfo"))
    assert "sdnet (config sdnet, bn False): 745197 parameters (0.745 M)" in capsys.readouterr().err
    counts = []
    for nstdc in ("1", "2"):  # no data needed; video --warmup is accepted (and has no effect, as in the release)
        train_vsod.main(["--savedir", str(tmp_path / "info"), "--checkinfo", "--nstdc", nstdc, "--warmup", "3"])
        counts.append(int(capsys.readouterr().err.split(f"nstdc {nstdc}): ")[1].split()[0]))
    # each extra STDC pair: 2 STDCs per level x 4 levels, each 3 branches of 48x48x3x3 + 3 logits + 3 BNs of 48
    assert counts[1] - counts[0] == 8 * (3 * 48 * 48 * 9 + 3 + 3 * 2 * 48)
    assert not (tmp_path / "info").exists()
    latest = str(previous_run / "save_models" / "checkpoint_latest.pth")
    for weights in (latest, "best"):
        train_sod.main(_image_flags(synthetic_root, previous_run, "--evaluate", weights))
        logged = capsys.readouterr().err
        expected = previous_run / "save_models" / "checkpoint_best.pth" if weights == "best" else latest
        assert f"{expected} on SYN-TE: MAE {_log(previous_run)[0]['val_mae']['SYN-TE']:.4f} over 4 items" in logged
    assert _snapshot(previous_run) == before


def test_a_slurm_job_runs_without_torchrun(synthetic_root, tmp_path):
    """Two tasks as srun starts them (SLURM_PROCID 0 and 1 of SLURM_NTASKS 2 on one node): one process group."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = str(probe.getsockname()[1])
    savedir = tmp_path / "slurm"
    argv = [sys.executable, str(REPO / "train_sod.py"), *_image_flags(synthetic_root, savedir, "--epochs", "1",
            "--batch-size", "4", "--max-steps", "1", "--pass-scales", "1.0", "--seed", "1", "--val-data", "")]
    tasks = [subprocess.Popen(argv, cwd=REPO, env={**_env(), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                                                   "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost",
                                                   "MASTER_PORT": port}, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for task in tasks:
        assert task.wait(timeout=300) == 0, task.stderr.read()[-2000:]
    assert "2 process(es)" in (savedir / "log.txt").read_text()
    assert _latest(savedir)["epoch"] == 0


@pytest.mark.slow  # three trainings (24 s); SyncBatchNorm2d itself: tests/test_distributed.py, exact in float64
def test_sync_bn_two_gloo_processes_equal_one_process(synthetic_root, tmp_path):
    """--sync-bn: SDNet-A with BN, 2 Gloo processes of 4 images each equal 1 process of 8 (weights and BN
    statistics); without it each process normalises by its own 4 images."""
    flags = ("--model", "sdneta", "--config", "sdnet-a", "--bn", "--epochs", "1", "--batch-size", "8",
             "--max-steps", "1", "--pass-scales", "1.0", "--seed", "6", "--warmup", "0", "--val-data", "")
    single, synced, plain = tmp_path / "single", tmp_path / "synced", tmp_path / "plain"
    result = _run(_image_flags(synthetic_root, single, *flags))
    assert result.returncode == 0, result.stderr
    for savedir, extra in ((synced, ["--sync-bn"]), (plain, [])):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", str(REPO / "train_sod.py"), *_image_flags(synthetic_root, savedir, *flags),
                                 *extra], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    one, two, unsynced = (_latest(run) for run in (single, synced, plain))
    statistics = [key for key in one["state_dict"] if key.endswith(("running_mean", "running_var"))]
    norms = sum(type(module) is torch.nn.BatchNorm2d for module in build_model("sdneta", bn=True).modules())
    assert len(statistics) == 2 * norms
    # The same batch statistics and gradients within float32 rounding (SyncBatchNorm2d itself: exactly, in float64,
    # tests/test_distributed.py); without --sync-bn each process normalises by its own 4 images, far outside it.
    assert_same_step(one, two, seed=6, name="sdneta", bn=True)
    apart = max(((unsynced["state_dict"][key] - one["state_dict"][key]).abs().max()
                 / one["state_dict"][key].abs().max()).item() for key in statistics)
    assert apart > 100 * bounds.GRADIENT_FLOAT32, apart
