"""convert.py: the saved converted weights load into the deploy build and reproduce the authors' outputs."""

import bounds
import numpy as np
import pytest
import torch

import convert
from models import build_model, load_state_dict_file, load_weights


def _max_diff(a, b):
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


@pytest.mark.parametrize("name,weights,golden,flags", [
    ("sdnet", "checkpoints/sdnet_from_scratch.pth", "golden/sdnet_golden_io.npz", []),
    ("stdnet", "golden/stdnet_golden_weights.pth", "golden/stdnet_golden_io.npz", ["--bn", "--tid", "cv", "cd", "ad"]),
])
def test_converted_checkpoint_matches_golden(tmp_path, reference, name, weights, golden, flags):
    out = tmp_path / f"{name}_converted.pth"
    convert.main(["--model", name, "--checkpoint", str(reference(weights)), "--out", str(out), *flags])
    saved = torch.load(out, weights_only=True)
    assert saved["deploy"] is True and saved["model"] == name
    model = load_weights(build_model(name, deploy=True), out).eval()
    io = np.load(reference(golden))
    with torch.inference_mode():
        output = model(torch.from_numpy(io["input"]))
    assert _max_diff(output, io["output_converted"]) < bounds.MAP_FLOAT32
    # converting the converted file again changes nothing
    again = tmp_path / "again.pth"
    convert.main(["--model", name, "--checkpoint", str(out), "--out", str(again), *flags])
    first, second = load_state_dict_file(out), load_state_dict_file(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path / "out.pth")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "none.pth" in lines[0]
    assert not (tmp_path / "out.pth").exists()


def test_speed_script_times_a_converted_checkpoint(tmp_path, reference):
    import speed_sod

    out = tmp_path / "sdnet_converted.pth"
    convert.main(["--checkpoint", str(reference("checkpoints/sdnet_from_scratch.pth")), "--out", str(out)])
    result = speed_sod.main(["--size", "64", "--evaluate", str(out), "-n", "1", "--warmup", "0", "--eager",
                             "--json", str(tmp_path / "speed.json")])
    assert result["weights"] == str(out) and result["params"] == 705_725
    with pytest.raises(SystemExit) as exit_info:
        speed_sod.main(["--size", "64", "--evaluate", str(tmp_path / "missing.pth"), "-n", "1"])
    assert exit_info.value.code == 2
