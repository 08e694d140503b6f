"""Checkpoint loading: released files load one-to-one, wrappers are accepted, bad or unsafe files are refused."""

import os
import pickle

import bounds
import pytest
import torch
from reference import reference_file as _reference

from models import (
    CheckpointError,
    ModelDescription,
    SDNetBackbone,
    build_model,
    convert_model,
    describe_state_dict,
    load_checkpoint,
    load_state_dict_file,
    load_weights,
)


def _split_elements(state_dict):
    """(elements excluding BN running statistics and counters, elements of BN running means and variances)."""
    stats = ("running_mean", "running_var")
    learnable = sum(v.numel() for k, v in state_dict.items() if not k.endswith(stats + ("num_batches_tracked",)))
    return learnable, sum(v.numel() for k, v in state_dict.items() if k.endswith(stats))


@pytest.mark.parametrize("file,make_model,keys,elements", [
    ("sdnet_from_scratch.pth", lambda: build_model("sdnet"), 143, (745_197, 0)),
    ("sdneta_from_pretrained.pth", lambda: build_model("sdneta", bn=True), 361, (851_502, 9_720)),
    ("sdnet_stage1_backbone.pth", lambda: SDNetBackbone("sdnet", bn=True), 426, (689_812, 20_520)),
    ("sdneta_imagenet_pretrained_backbone.pth", lambda: SDNetBackbone("sdnet-a", bn=True), 324, (775_597, 9_720)),
])
def test_released_checkpoints_load_one_to_one(file, make_model, keys, elements):
    state_dict = load_state_dict_file(_reference(f"checkpoints/{file}"))
    assert len(state_dict) == keys
    assert not any(k.startswith("module.") for k in state_dict)
    assert _split_elements(state_dict) == elements
    model = make_model()
    assert len(model.state_dict()) == keys
    load_weights(model, _reference(f"checkpoints/{file}"))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_backbone_file_matches_full_model_backbone_keys():
    state_dict = load_state_dict_file(_reference("checkpoints/sdnet_stage1_backbone.pth"))
    full = build_model("sdnet", bn=True).state_dict()
    backbone_keys = {k for k in full if k.split(".")[0] == "init_block" or k.startswith("block")}
    assert set(state_dict) == backbone_keys
    assert all(state_dict[k].shape == full[k].shape for k in backbone_keys)


def _small_state_dict():
    return {k: torch.randn(v.shape) if v.is_floating_point() else v
            for k, v in build_model("sdnet").state_dict().items()}


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {"model": "sdnet", "config": "sdnet", "bn": False, "deploy": False, "epoch": 3,
                "args": {"lr": 1e-3, "size": 320}, "best": 0.1, "state_dict": sd},
])
def test_accepted_layouts(tmp_path, wrap):
    state_dict = _small_state_dict()
    path = tmp_path / "weights.pth"
    torch.save(wrap(state_dict), path)
    for source in (path, str(path), torch.load(path, weights_only=True)):
        model = load_weights(build_model("sdnet"), source)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state_dict.items())
    assert set(load_state_dict_file(path)) == set(state_dict)


def test_mismatch_names_missing_and_unexpected_keys():
    state_dict = _small_state_dict()
    del state_dict["block2_2.conv2.bias"]
    state_dict["block9_9.weight"] = torch.zeros(1)
    state_dict["block1_1.conv2.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model("sdnet"), state_dict)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys: block2_2.conv2.bias" in message
    assert "unexpected keys: block9_9.weight" in message
    assert "block1_1.conv2.weight (3, 3, 1, 1) vs (60, 60, 1, 1)" in message
    assert isinstance(info.value, ValueError)


def test_mismatch_hints_at_bn_and_deploy_flags(tmp_path):
    path = tmp_path / "ours.pth"
    torch.save({"deploy": True, "state_dict": build_model("sdnet", deploy=True).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"ours\.pth: .*deploy=True"):
        load_weights(build_model("sdnet"), path)
    with pytest.raises(CheckpointError, match="check the bn flag"):
        load_weights(build_model("sdnet"), build_model("sdnet", bn=True).state_dict())


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_code_running_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(1)}, "hook": _RunsCode(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    for load in (load_state_dict_file, lambda p: load_weights(build_model("sdnet"), p)):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert str(info.value).startswith(f"{path}: ")
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_refused_message_names_the_offending_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"hook": _RunsCode(tmp_path / "x")}, path)
    with pytest.raises(CheckpointError, match=r"refused to load: not a plain tensor checkpoint \((posix|nt)\.system"):
        load_state_dict_file(path)


def test_missing_damaged_and_non_tensor_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_state_dict_file(tmp_path / "absent.pth")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"damaged.pth: not a checkpoint: a text file$"):
        load_state_dict_file(damaged)
    damaged.write_bytes(b"\x80\x02garbage")  # a pickle's first bytes, then nothing torch can read
    with pytest.raises(CheckpointError, match=r"damaged.pth: (refused to load|cannot read checkpoint)"):
        load_state_dict_file(damaged)
    damaged.write_bytes(b"\x00\x01\x02\xff")
    with pytest.raises(CheckpointError, match=r"damaged.pth: not a checkpoint: neither a zip archive nor a pickle "
                                              r"\(starts with 00 01 02 ff\)"):
        load_state_dict_file(damaged)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="truncated.pth: not a checkpoint: a zip archive cut short"):
        load_state_dict_file(truncated)
    with pytest.raises(CheckpointError, match=f"{tmp_path}: not a checkpoint: a folder"):
        load_state_dict_file(tmp_path)
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(1), "epoch": 3}, plain)
    with pytest.raises(CheckpointError, match="entry 'epoch' is a int, not a tensor"):
        load_state_dict_file(plain)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_state_dict_file(listed)


# ------------------------------------------------------------------------------------------- what a checkpoint holds

@pytest.mark.parametrize("file,description", [
    ("checkpoints/sdnet_from_scratch.pth", ModelDescription("sdnet", "sdnet", False, None, None, False)),
    ("checkpoints/sdneta_from_pretrained.pth", ModelDescription("sdneta", "sdnet-a", True, None, None, False)),
    ("checkpoints/sdnet_stage1_backbone.pth", ModelDescription(None, "sdnet", True, None, None, False)),
    ("checkpoints/sdneta_imagenet_pretrained_backbone.pth",
     ModelDescription(None, "sdnet-a", True, None, None, False)),
    ("golden/stdnet_golden_weights.pth",
     ModelDescription("stdnet", "sdnet", True, ("cv", "cd", "ad"), None, False, nstdc=1)),
    ("golden/stdneta_golden_weights.pth",
     ModelDescription("stdneta", "sdnet-a", True, ("cv", "cd", "ad"), None, False, nstdc=1)),
])
def test_released_files_are_described_from_their_keys(file, description):
    assert load_checkpoint(_reference(file)).description == description


@pytest.mark.parametrize("name", ["sdnet", "sdneta", "stdnet", "stdneta"])
@pytest.mark.parametrize("bn", [False, True])
def test_raw_state_dicts_of_every_form_are_described(name, bn):
    """Training form (with and without BN) and converted form of every model, in the authors' raw layout."""
    video = name.startswith("st")
    model = build_model(name, bn=bn)
    config = "sdnet-a" if name.endswith("a") else "sdnet"
    tid, nstdc = (("cv", "cd", "ad"), 1) if video else (None, None)
    assert describe_state_dict(model.state_dict()) == ModelDescription(name, config, bn, tid, None, False, nstdc)
    converted = convert_model(model).state_dict()
    assert describe_state_dict(converted) == ModelDescription(name, config, None, ("cv",) if video else None, None,
                                                              True, nstdc)
    assert describe_state_dict(build_model(name, "baseline").state_dict()).config == "baseline"


def test_video_branch_counts_the_keys_cannot_name_are_left_open():
    two = build_model("stdnet", tid=("cv", "cd"), scales=(0, 1)).state_dict()
    assert describe_state_dict(two).tid is None  # cv cd, cv ad or cd ad: the flag must say
    one = build_model("stdnet", tid=("cd",), scales=(1,), bn=False).state_dict()
    assert describe_state_dict(one).tid is None


@pytest.mark.parametrize("nstdc", [1, 2, 3])
def test_stacked_stdc_is_described_and_converts_exactly(nstdc):
    """--nstdc N: N STDC pairs per temporal module; the count is read off the keys, and DCR stays exact."""
    torch.manual_seed(nstdc)
    model = build_model("stdnet", nstdc=nstdc).double()
    with torch.no_grad():
        for name, tensor in model.named_buffers():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.5)
    model.eval()
    assert describe_state_dict(model.state_dict()).nstdc == nstdc
    assert sum(name.endswith("tdc1") or ".tdc" in name for name, _ in model.named_modules() if
               name.startswith("global_temporal.0.tdc") and name.count(".") == 2) == 2 * nstdc
    deploy = load_weights(build_model("stdnet", deploy=True, nstdc=nstdc).double(),
                          convert_model(model).state_dict()).eval()
    clip = torch.randn(1, 12, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        assert (deploy(clip) - model(clip)).abs().max().item() < bounds.FLOAT64
