"""STDNet / STDNet-A: DCR exactness, converted parameter counts, golden outputs and backbone preloading."""

import bounds
import numpy as np
import pytest
import torch
from reference import reference_file as _reference

from models import CheckpointError, build_model, convert_model, is_converted, load_weights, preload_backbone
from models.stdc import STDC


def _randomise(model, generator):
    """Random branch logits and BN statistics/affines; output conv rescaled so the maps spread; eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scales"):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n, dtype = m.num_features, m.weight.dtype
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator, dtype=dtype))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator, dtype=dtype))
                m.weight.copy_(0.5 + torch.rand(n, generator=generator, dtype=dtype))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator, dtype=dtype))
    model.eval()
    # Calibrate the output conv on a small clip so that the logits are centred with a spread of about 2: the
    # default-initialised decoder gives nearly constant maps, where a comparison would prove little.
    clip = torch.randn(1, 24, 32, 48, generator=generator, dtype=model.project_final.conv.weight.dtype)
    logits = _run_with_taps(model, clip)[1]["logits"]
    with torch.no_grad():
        conv = model.project_final.conv
        gain = 2 / logits.std()
        conv.weight.mul_(gain)
        conv.bias.copy_((conv.bias - logits.mean()) * gain)
    return model


def _run_with_taps(model, x):
    """Output maps plus the pre-sigmoid logits and every STDM output, captured with forward hooks."""
    taps = {}
    modules = {"logits": model.project_final, **{f"stdm{i}": m for i, m in enumerate(model.global_temporal)}}
    handles = [m.register_forward_hook(lambda _m, _i, out, key=key: taps.__setitem__(key, out))
               for key, m in modules.items()]
    with torch.no_grad():
        out = model(x)
    for handle in handles:
        handle.remove()
    return out, taps


# The full 256 x 256 clip (14 s) is slow-marked: 48 x 80 checks the same conversion, and the golden tests compare
# both forms at 256 x 256 with the reference outputs.
@pytest.mark.parametrize("name,height,width", [pytest.param("stdnet", 256, 256, marks=pytest.mark.slow),
                                               ("stdnet", 48, 80), ("stdneta", 48, 80)])
def test_converted_equals_training_form(name, height, width):
    g = torch.Generator().manual_seed(height + width)
    model = _randomise(build_model(name, bn=True).double(), g)
    x = torch.randn(1, 3 * 8, height, width, generator=g, dtype=torch.float64)
    training, training_taps = _run_with_taps(model, x)
    converted = build_model(name, deploy=True).double().eval()
    load_weights(converted, convert_model(model).state_dict())
    deployed, deployed_taps = _run_with_taps(converted, x)
    assert training.shape == (8, 1, height, width)
    assert training.std().item() > 0.1  # maps spread over (0, 1)
    assert (deployed - training).abs().max().item() < bounds.FLOAT64
    assert sorted(deployed_taps) == sorted(training_taps) == ["logits", "stdm0", "stdm1", "stdm2", "stdm3"]
    for key, value in training_taps.items():
        assert (deployed_taps[key] - value).abs().max().item() < bounds.FLOAT64, key


@pytest.mark.parametrize("name,expected", [("stdnet", 874_469), ("stdneta", 987_275)])
def test_converted_parameter_counts(name, expected):
    deployed = build_model(name, deploy=True)
    assert sum(p.numel() for p in deployed.parameters()) == expected
    assert deployed.kind == "video" and deployed.nframes == 8 and is_converted(deployed)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for n, m in deployed.named_modules() if "block" in n)
    training = build_model(name, bn=True)
    assert not is_converted(training)
    converted = convert_model(training)
    assert sum(p.numel() for p in converted.parameters()) == expected
    keys = converted.state_dict()
    assert {f"global_temporal.{i}.tdc{j}.convs.{p}" for i in range(4) for j in (1, 2) for p in ("weight", "bias")} \
        <= set(keys)
    assert not any("scales" in k or "norms" in k or ".bn0." in k or ".bn1." in k for k in keys)


@pytest.mark.parametrize("name", ["stdnet", "stdneta"])
def test_golden_outputs(name):
    """The authors' outputs on the golden clip, for the training form and the converted model (float32)."""
    weights = _reference(f"golden/{name}_golden_weights.pth")
    golden = np.load(_reference(f"golden/{name}_golden_io.npz"))
    model = load_weights(build_model(name, bn=True, tid=("cv", "cd", "ad"), nframes=8), weights).eval()
    x = torch.from_numpy(golden["input"])
    with torch.no_grad():
        training = model(x)
        converted = load_weights(build_model(name, deploy=True), convert_model(model).state_dict()).eval()(x)
    assert (training - torch.from_numpy(golden["output_training_form"])).abs().max().item() < bounds.MAP_FLOAT32
    assert (converted - torch.from_numpy(golden["output_converted"])).abs().max().item() < bounds.MAP_FLOAT32


def test_clip_layout_and_single_frame():
    """Frames of a clip are mixed only through the STDMs, clips of a batch never; T = 1 skips the STDMs."""
    g = torch.Generator().manual_seed(1)
    model = _randomise(build_model("stdnet", bn=True, nframes=3), g)
    clips = torch.randn(2, 9, 32, 48, generator=g)
    with torch.no_grad():
        both = model(clips)
        first = model(clips[:1])
        moved = clips.clone()
        moved[0, :3] += 1  # frame 0 of clip 0
        changed = (model(moved) - both).flatten(1).abs().amax(dim=1)
    assert both.shape == (6, 1, 32, 48)
    assert torch.allclose(both[:3], first, atol=bounds.MAP_FLOAT32)  # batch 2 and 1: other kernels
    assert changed[1].item() > 0 and changed[2].item() > 0  # later frames of clip 0 see frame 0
    assert changed[3:].max().item() == 0  # clip 1 does not
    single = clips[:, :3]
    with torch.no_grad():
        reference = model(single)
        for stdm in model.global_temporal:
            for p in stdm.parameters():
                p.add_(1.0)
        assert torch.equal(model(single), reference)


def test_rd_in_tid_is_refused():
    with pytest.raises(ValueError, match="rd"):
        build_model("stdnet", tid=("cv", "rd"), scales=(0, 1))
    assert isinstance(build_model("stdnet", tid=("cd", "ad"), scales=(1, 1)).global_temporal[0].tdc1, STDC)


def test_preload_backbone():
    path = _reference("checkpoints/sdnet_stage1_backbone.pth")
    model = build_model("stdnet", bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied, skipped = preload_backbone(model, path)
    assert (copied, skipped) == (426, [])
    checkpoint = torch.load(path, weights_only=True)
    after = model.state_dict()
    for key, value in after.items():
        if "block" in key:
            assert torch.equal(value, checkpoint[f"module.{key}"]), key
        else:
            assert torch.equal(value, before[key]), key
    with pytest.raises(CheckpointError, match="backbone does not fit"):
        preload_backbone(build_model("stdnet", deploy=True), path)


def test_preload_sdneta_backbone_into_image_and_video_models():
    path = _reference("checkpoints/sdneta_imagenet_pretrained_backbone.pth")
    assert preload_backbone(build_model("stdneta", bn=True), path) == (324, [])
    assert preload_backbone(build_model("sdneta", bn=True), path) == (324, [])
    with pytest.raises(CheckpointError, match="missing backbone keys"):
        preload_backbone(build_model("stdnet", bn=True), path)
