"""Quantization-aware fine-tuning (`engine.training.qat`, ``train_sod.py --finetune ... --precision int8``): the
fake-quantized model keeps the converted model's state dict, its weights and inputs lie on the 8-bit grids the
module docstring states, gradients pass the rounding unchanged, and a run writes converted checkpoints that the
inference scripts load. What it recovers at the accuracy gate: bench/bench_qat.py (BENCHMARKS.md)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import train_sod
import train_vsod
from data.synthetic import SyntheticSizes, generate
from engine.training.qat import QAT_AVERAGING, fake_quantized_layers, prepare_qat
from models import build_model, convert_model, load_checkpoint, load_model

# A float32 product k * s (|k| <= 127) and its quotient by s are each rounded once (relative 2^-24): k is recovered
# within 127 * 2 * 2^-24 of an integer.
GRID_BOUND = 127 * 2 * 2.0**-24


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, sizes=SyntheticSizes(sod_train=8, sod_test=2, video_train=1, video_test=1,
                                                min_frames=8, max_frames=10))
    return root


@pytest.mark.parametrize("name", ["sdnet", "sdneta"])
def test_the_state_dict_is_the_converted_models(name):
    torch.manual_seed(0)
    converted = convert_model(build_model(name)).state_dict()
    plain = build_model(name, deploy=True)
    model = prepare_qat(build_model(name, deploy=True))
    model.load_state_dict(converted)
    saved = model.state_dict()
    assert list(saved) == list(plain.state_dict())  # the keys, in the converted model's order
    assert all(torch.equal(saved[key], converted[key]) for key in converted)
    assert list(copy.deepcopy(model).state_dict()) == list(saved)
    # every convolution but the one-channel ones, and the initial block's
    layers = dict(fake_quantized_layers(model))
    assert "init_block" in layers
    assert all(module.out_channels > 1 for module in layers.values() if isinstance(module, nn.Conv2d))
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in layers] == \
        [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1]


def _small_network() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.Conv2d(8, 1, 1))


def test_weights_lie_on_the_per_channel_grid():
    network = prepare_qat(_small_network())
    for _, layer in fake_quantized_layers(network):
        float_weight = layer.parametrizations.weight.original.detach()
        scale = float_weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        steps = layer.weight.detach() / scale
        assert (steps - steps.round()).abs().max() <= GRID_BOUND
        assert steps.round().abs().max() <= 127
        assert torch.equal(steps.round().abs().amax(dim=(1, 2, 3)), torch.full((layer.out_channels,), 127.0))
        # round to nearest: within half a step (and the float rounding of the products)
        assert ((layer.weight.detach() - float_weight).abs() <= scale * (0.5 + GRID_BOUND)).all()
    assert not hasattr(network[3], "parametrizations")  # the one-channel head stays float


def test_input_ranges_follow_the_moving_average_and_inputs_lie_on_their_grid():
    network = prepare_qat(_small_network())
    first, second = torch.randn(2, 3, 12, 12), 3 * torch.randn(2, 3, 12, 12)
    network.train()
    network(first)
    layer = network[0]
    assert (float(layer.qat_low), float(layer.qat_high)) == (float(first.min()), float(first.max()))
    network(second)
    expected_low = torch.tensor(float(first.min())).lerp(second.min(), QAT_AVERAGING)
    expected_high = torch.tensor(float(first.max())).lerp(second.max(), QAT_AVERAGING)
    assert torch.equal(layer.qat_low, expected_low) and torch.equal(layer.qat_high, expected_high)
    seen = []
    layer.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    network.eval()
    network(second)  # eval: the range stays
    assert torch.equal(layer.qat_low, expected_low)
    scale = (expected_high - expected_low) / 255
    zero_point = torch.round(-expected_low / scale)
    steps = seen[0] / scale + zero_point
    assert (steps - steps.round()).abs().max() <= 2 * 256 * 2.0**-24  # as GRID_BOUND, over 256 steps
    assert steps.round().min() >= 0 and steps.round().max() <= 255
    assert len(torch.unique(seen[0])) <= 256


def test_gradients_pass_the_rounding_unchanged():
    """Straight-through: the float weight's gradient is the convolution's gradient at the quantized weight and
    input, exactly (every weight is inside its range)."""
    network = prepare_qat(nn.Sequential(_small_network()[0]))
    x = torch.randn(2, 3, 10, 10)
    network.train()
    network(x)  # the input range, from this batch
    layer = network[0]
    quantized_input = layer._forward_pre_hooks[next(iter(layer._forward_pre_hooks))](layer, (x,))[0].detach()
    weight = layer.weight.detach().requires_grad_()
    F.conv2d(quantized_input, weight, layer.bias.detach(), padding=layer.padding).square().sum().backward()
    network(x).square().sum().backward()
    assert torch.equal(layer.parametrizations.weight.original.grad, weight.grad)


def _flags(root, savedir, *extra):
    return ["--model", "sdnet", "--datadir", str(root), "--train-data", "SYN-TR", "--val-data", "SYN-TE",
            "--size", "64", "--savedir", str(savedir), "-j", "0", "--batch-size", "4", "--max-steps", "1",
            "--pass-scales", "1.0", "--seed", "3", "--lr", "1e-4", *extra]


def test_train_sod_int8_fine_tunes_the_converted_model(synthetic_root, tmp_path, capsys):
    torch.manual_seed(2)
    trained = build_model("sdnet")
    release = tmp_path / "release.pth"
    torch.save(trained.state_dict(), release)  # the authors' form: a bare training-form state dict
    savedir = tmp_path / "qat"
    train_sod.main(_flags(synthetic_root, savedir, "--finetune", str(release), "--precision", "int8", "--epochs",
                          "1"))
    logged = capsys.readouterr().err
    assert "step: fused form, int8, " in logged
    assert "quantization-aware: the converted model, 56 convolutions" in logged
    checkpoint = load_checkpoint(savedir / "save_models" / "checkpoint_latest.pth")
    assert checkpoint.description.deploy
    start = convert_model(trained).state_dict()
    assert list(checkpoint.state_dict) == list(build_model("sdnet", deploy=True).state_dict())
    assert all(not torch.equal(checkpoint.state_dict[k], start[k]) for k in start if k.endswith("conv2.weight"))
    model, _ = load_model(savedir / "save_models" / "checkpoint_latest.pth")
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # a second epoch resumes from the converted checkpoint into the fake-quantized model
    train_sod.main(_flags(synthetic_root, savedir, "--finetune", str(release), "--precision", "int8", "--epochs",
                          "2", "--resume"))
    assert "resuming after epoch 0" in capsys.readouterr().err
    assert load_checkpoint(savedir / "save_models" / "checkpoint_latest.pth").contents["epoch"] == 1


def test_int8_needs_a_trained_model_and_an_image_model(synthetic_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_sod.main(_flags(synthetic_root, tmp_path / "run", "--precision", "int8"))
    assert exit_info.value.code == 2
    assert "--precision int8 fine-tunes a trained model quantization-aware: give --finetune" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:
        train_vsod.main(["--precision", "int8"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err
