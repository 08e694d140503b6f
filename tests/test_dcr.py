"""DCR: converted blocks and whole models equal their training form (float64, random BN statistics and logits)."""

import copy

import bounds
import pytest
import torch
import torch.nn as nn

from models import build_model, convert_model, is_converted, load_weights, skip_zero_pre_biases
from models.layers import DiffBlock, InitialBlock, PDCConv

OPS3 = ("cv", "cd", "ad")
OPS4 = ("cv", "cd", "ad", "rd")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN/GroupNorm statistics and affines (BN gammas of both signs, never 0) and random branch logits."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(rand(c) - 0.5)
                m.running_var.copy_(rand(c) + 0.5)
                sign = torch.where(rand(c) < 0.2, -1.0, 1.0)
                m.weight.copy_(sign * (rand(c) + 0.5))
                m.bias.copy_(rand(c) - 0.5)
            elif isinstance(m, nn.GroupNorm):
                m.weight.copy_(rand(m.num_channels) + 0.5)
                m.bias.copy_(rand(m.num_channels) - 0.5)
            if isinstance(getattr(m, "scales", None), nn.Parameter):
                m.scales.copy_(torch.randn(m.scales.shape, generator=g, dtype=torch.float64))
    return model


@pytest.mark.parametrize("ops", [OPS3, OPS4, ("cv",), ("rd", "cd")])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("stride,in_ch,out_ch", [(1, 6, 6), (2, 6, 10)])
def test_diffblock_reparameterize_is_exact(ops, bn, stride, in_ch, out_ch):
    torch.manual_seed(1)
    block = randomize(DiffBlock(in_ch, out_ch, ops, stride=stride, bn=bn).double().eval(), seed=2)
    x = torch.randn(2, in_ch, 13, 18, dtype=torch.float64)
    before = copy.deepcopy(block.state_dict())
    converted = copy.deepcopy(block)
    converted.reparameterize()
    with torch.no_grad():
        diff = (block(x) - converted(x)).abs().max().item()
    assert diff < bounds.FLOAT64
    assert converted.merged.kernel_size == ((5, 5) if "rd" in ops else (3, 3))
    assert not any(isinstance(m, (PDCConv, nn.BatchNorm2d)) for m in converted.modules())
    for key, value in block.state_dict().items():
        assert torch.equal(value, before[key]), f"conversion mutated {key}"
    kernel, bias, pre_bias = converted.equivalent_kernel_bias()
    converted.reparameterize()  # no-op on a converted block
    assert converted.merged.weight is kernel and converted.merged.bias is bias and converted.pre_bias is pre_bias


@pytest.mark.parametrize("ops", [OPS3, OPS4])
def test_initial_block_reparameterize_is_exact(ops):
    torch.manual_seed(3)
    block = randomize(InitialBlock(3, 8, ops).double(), seed=4)
    converted = copy.deepcopy(block)
    converted.reparameterize()
    x = torch.randn(2, 3, 11, 14, dtype=torch.float64)
    with torch.no_grad():
        assert (block(x) - converted(x)).abs().max().item() < bounds.FLOAT64
    assert list(converted.state_dict()) == ["weight"]


def test_bn0_shift_goes_to_pre_bias_not_output_bias():
    # A BN0 shift folded into the output bias would be wrong near the zero-padded border; the pre-bias is exact.
    block = DiffBlock(2, 2, OPS3, bn=True).double().eval()
    with torch.no_grad():
        block.bn0.bias.fill_(3.0)
    converted = copy.deepcopy(block)
    converted.reparameterize()
    assert torch.allclose(converted.pre_bias, torch.full((1, 2, 1, 1), 3.0, dtype=torch.float64))
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert (block(x) - converted(x)).abs().max().item() < bounds.FLOAT64_LAYER


def test_zero_bn0_weight_cannot_be_folded():
    block = DiffBlock(2, 2, OPS3, bn=True)
    with torch.no_grad():
        block.bn0.weight[0] = 0.0
    with pytest.raises(ValueError, match="bn0"):
        block.reparameterize()


def _spread_output(model: nn.Module) -> nn.Module:
    """Rescale the last fusion conv so the logits have std 3 and mean 0 on a small random input: the sigmoid maps
    then spread over (0, 1) instead of sitting at 0.5 or saturating, so the output comparison can fail."""
    final = model.conv_reduces[0].conv
    captured = []
    handle = final.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64, dtype=final.weight.dtype))
        handle.remove()
        logits = captured[0]
        final.weight.mul_(3 / logits.std())
        final.bias.sub_(logits.mean() * 3 / logits.std())
    return model


def _run_with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the four stage outputs x1..x4, from one forward pass."""
    features = []
    handles = [getattr(model, names[-1]).register_forward_hook(lambda module, args, out: features.append(out))
               for names in model.stage_blocks]
    with torch.no_grad():
        y = model(x)
    for handle in handles:
        handle.remove()
    return y, features


@pytest.mark.parametrize("name,bn", [("sdnet", True), ("sdneta", True), ("sdnet", False)])
def test_converted_model_equals_training_form(name, bn):
    torch.manual_seed(5)
    model = _spread_output(randomize(build_model(name, bn=bn).double().eval(), seed=6))
    converted = convert_model(model)
    sizes = [(320, 320), (256, 352)] if bn else [(96, 160)]
    for height, width in sizes:
        x = torch.randn(1, 3, height, width, dtype=torch.float64)
        (y, features), (y_conv, features_conv) = _run_with_features(model, x), _run_with_features(converted, x)
        assert y.shape == (1, 1, height, width)
        assert y.std().item() > 0.1  # maps spread over (0, 1)
        assert (y - y_conv).abs().max().item() < bounds.FLOAT64
        assert len(features) == 4
        for f, fc in zip(features, features_conv):
            assert (f - fc).abs().max().item() < bounds.FLOAT64 * max(1.0, f.abs().max().item())


@pytest.mark.parametrize("name,bn", [("sdnet", False), ("sdnet", True), ("sdneta", True)])
def test_converted_state_dict_loads_into_deploy_build(name, bn):
    torch.manual_seed(7)
    model = randomize(build_model(name, bn=bn).eval(), seed=8)
    converted = convert_model(model)
    deploy = build_model(name, deploy=True).eval()
    assert {k: v.shape for k, v in converted.state_dict().items()} == {k: v.shape for k, v in
                                                                        deploy.state_dict().items()}
    load_weights(deploy, converted.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(deploy(x), converted(x))


def test_convert_model_leaves_original_and_is_idempotent():
    model = randomize(build_model("sdneta", bn=True).eval())
    before = copy.deepcopy(model.state_dict())
    converted = convert_model(model)
    assert not is_converted(model) and is_converted(converted)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"convert_model mutated {key}"
    twice = convert_model(converted)
    once_sd, twice_sd = converted.state_dict(), twice.state_dict()
    assert list(once_sd) == list(twice_sd)
    assert all(torch.equal(once_sd[k], twice_sd[k]) for k in once_sd)


@pytest.mark.parametrize("name", ["sdnet", "sdneta"])
def test_converted_model_has_no_training_only_parts(name):
    converted = convert_model(build_model(name, bn=True))
    assert not any(isinstance(m, PDCConv) for m in converted.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    keys = list(converted.state_dict())
    assert not any("scales" in k or ".bn0." in k or ".bn1." in k for k in keys)
    assert "init_block.weight" in keys
    for block in ("block1_3", "block2_1"):
        assert {f"{block}.conv1.weight", f"{block}.conv1.bias", f"{block}.bias"} <= set(keys)
    assert converted.block1_3.merged.weight.shape == (60, 1, 5, 5)
    assert converted.block2_1.merged.weight.shape == (60, 1, 3, 3)
    assert converted.block1_1.pre_bias.shape == (1, 60, 1, 1)


def test_zero_pre_biases_are_skipped_bitwise_and_others_kept():
    """Inference copies drop exactly-zero pre-biases (models trained without BN): same output bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 64)
    plain = convert_model(build_model("sdnet")).eval()  # no BN: every pre-bias is 0
    skipped = copy.deepcopy(plain)
    assert skip_zero_pre_biases(skipped) == 15 and skip_zero_pre_biases(skipped) == 0
    assert skipped.block1_1.pre_bias is None and "block1_1.bias" not in skipped.state_dict()
    with torch.no_grad():
        assert torch.equal(skipped(x), plain(x))
    kernel, bias, pre_bias = skipped.block1_1.equivalent_kernel_bias()
    assert torch.equal(pre_bias, torch.zeros(1, 60, 1, 1))

    with_bn = convert_model(randomize(build_model("sdnet", bn=True)).float().eval())
    nonzero = [name for name, m in with_bn.named_modules() if isinstance(m, DiffBlock) and bool(m.pre_bias.any())]
    assert len(nonzero) == 15 and skip_zero_pre_biases(with_bn) == 0
    assert skip_zero_pre_biases(build_model("sdnet", bn=True)) == 0  # training form: nothing to skip


def test_our_attribute_names_are_saved_and_loaded_under_the_release_keys() -> None:
    """DiffBlock.branches / merged / pre_bias and STDC.branches / conv keep the release's state-dict keys (conv1,
    bias, convs), in the release's order, both ways, in copies and pickles too."""
    import copy
    import pickle

    from models.stdc import STDC

    block = DiffBlock(4, 4, ("cv", "cd", "ad"), bn=True)
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(block.state_dict()) == ["scales", *(f"bn0.{k}" for k in bn), "conv1.0.weight", "conv1.1.weight",
                                        "conv1.2.weight", *(f"bn1.{i}.{k}" for i in range(3) for k in bn),
                                        "conv2.weight", "conv2.bias"]
    converted = pickle.loads(pickle.dumps(copy.deepcopy(block)))
    converted.reparameterize()
    fresh = DiffBlock(4, 4, ("cv", "cd", "ad"), deploy=True)
    assert list(fresh.state_dict()) == ["bias", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert sorted(converted.state_dict()) == sorted(fresh.state_dict())
    fresh.load_state_dict(converted.state_dict())
    assert torch.equal(fresh.merged.weight, converted.merged.weight) and torch.equal(fresh.pre_bias,
                                                                                     converted.pre_bias)
    layer = STDC(4, ("cv", "cd"), scales=(0.0, 1.0), bn=False)
    assert list(layer.state_dict()) == ["scales", "convs.0.weight", "convs.1.weight"]
    layer.reparameterize()
    assert list(layer.state_dict()) == ["convs.weight", "convs.bias"]
