"""SDNet / SDNet-A: structure, parameter counts, branch weights and the authors' golden outputs (design §5, §13)."""

import bounds
import numpy as np
import pytest
import torch
import torch.nn as nn
from reference import reference_file as _reference

from configs import MODELS, OP_TABLES
from models import SDNetBackbone, build_model, convert_model, load_weights
from models.layers import DiffBlock, MobileViTv2Block


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_training_form_parameter_count():
    assert _num_params(build_model("sdnet")) == 745_197


@pytest.mark.parametrize("name,total,backbone", [("sdnet", 705_725, 629_820), ("sdneta", 818_531, 742_626)])
def test_converted_parameter_counts(name, total, backbone):
    deploy = build_model(name, deploy=True)
    converted = convert_model(build_model(name, bn=True))
    assert _num_params(deploy) == total
    assert _num_params(converted) == total
    assert _num_params(SDNetBackbone(MODELS[name]["backbone"], deploy=True)) == backbone


def test_branch_weights_at_init():
    model = build_model("sdnet")
    three = torch.softmax(model.block1_1.scales, 0)
    four = torch.softmax(model.block1_3.scales, 0)
    assert torch.allclose(three, torch.tensor([0.155, 0.422, 0.422]), atol=bounds.printed(3))
    assert torch.allclose(four, torch.tensor([0.109, 0.297, 0.297, 0.297]), atol=bounds.printed(3))
    assert torch.equal(model.init_block.scales, torch.tensor([0.0, 1.0, 1.0]))


def test_released_sdnet_branch_weights():
    model = load_weights(build_model("sdnet"), _reference("checkpoints/sdnet_from_scratch.pth"))
    expected = {"init_block": [0.038, 0.318, 0.644], "block1_1": [0.154, 0.348, 0.498],
                "block2_2": [0.066, 0.294, 0.640], "block4_4": [0.163, 0.164, 0.446, 0.228]}
    with torch.no_grad():
        for name, values in expected.items():
            weights = torch.softmax(getattr(model, name).scales, 0)
            assert torch.allclose(weights, torch.tensor(values), atol=bounds.printed(3)), name
        for module in model.modules():
            if isinstance(module, DiffBlock):
                weights = torch.softmax(module.scales, 0)
                assert weights.argmin().item() == 0  # the vanilla branch gets the smallest weight
                if "rd" in module.ops:
                    assert 0.23 <= round(weights[3].item(), 2) <= 0.26  # design §7.4 gives 2 decimals


def test_backbone_layout():
    sdnet, sdneta = build_model("sdnet"), build_model("sdneta")
    assert sdnet.stage_blocks == [("block1_1", "block1_2", "block1_3"),
                                  tuple(f"block2_{j}" for j in range(1, 5)),
                                  tuple(f"block3_{j}" for j in range(1, 5)),
                                  tuple(f"block4_{j}" for j in range(1, 5))]
    for name in ("block2_3", "block3_3", "block4_3"):
        assert isinstance(getattr(sdneta, name), MobileViTv2Block)
    assert [getattr(sdneta, f"block{s}_3").patch_size for s in (2, 3, 4)] == [2, 2, 1]
    rd_blocks = [n for n, m in sdnet.named_children() if isinstance(m, DiffBlock) and "rd" in m.ops]
    assert rd_blocks == ["block1_3", "block2_4", "block3_4", "block4_4"]
    assert [n for n, m in sdneta.named_children() if isinstance(m, DiffBlock) and "rd" in m.ops] == ["block1_3"]
    assert sdnet.kind == sdneta.kind == "image"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for model in (sdnet, sdneta):
            shapes = [tuple(f.shape) for f in model.forward_features(x)]
            assert shapes == [(1, 60, 32, 48), (1, 120, 16, 24), (1, 240, 8, 12), (1, 240, 4, 6)]


@pytest.mark.parametrize("name", ["sdnet", "sdneta"])
def test_output_is_a_map_at_input_size(name):
    model = build_model(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 50, 70))
    assert y.shape == (2, 1, 50, 70)
    assert ((y > 0) & (y < 1)).all()


def test_baseline_config_is_single_branch():
    model = build_model("sdnet", "baseline")
    blocks = [m for m in model.modules() if isinstance(m, DiffBlock)]
    assert len(blocks) == 15 and all(m.ops == ("cv",) and m.kernel_size == 3 for m in blocks)
    assert model.init_block.ops == ("cv",)
    converted = convert_model(model)
    assert all(m.merged.weight.shape[-1] == 3 for m in converted.modules() if isinstance(m, DiffBlock))


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("sdnet-x")
    with pytest.raises(ValueError, match="unknown op config"):
        build_model("sdnet", "nope")
    with pytest.raises(ValueError, match="entries"):
        build_model("sdnet", OP_TABLES["sdnet-a"])
    with pytest.raises(ValueError):
        build_model("sdnet", [("cv", "xx")] * 16)


@pytest.mark.parametrize("name,checkpoint,golden", [
    ("sdnet", "checkpoints/sdnet_from_scratch.pth", "golden/sdnet_golden_io.npz"),
    ("sdneta", "checkpoints/sdneta_from_pretrained.pth", "golden/sdneta_golden_io.npz"),
])
def test_golden_outputs(name, checkpoint, golden):
    data = np.load(_reference(golden))
    model = build_model(name, bn=name == "sdneta")
    load_weights(model, _reference(checkpoint))
    model.eval()
    deploy = load_weights(build_model(name, deploy=True), convert_model(model).state_dict()).eval()
    x = torch.from_numpy(data["input"])
    with torch.no_grad():
        y_train, y_deploy = model(x), deploy(x)
    assert (y_train - torch.from_numpy(data["output_training_form"])).abs().max().item() < bounds.MAP_FLOAT32
    assert (y_deploy - torch.from_numpy(data["output_converted"])).abs().max().item() < bounds.MAP_FLOAT32
