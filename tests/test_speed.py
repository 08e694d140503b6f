"""Speed scripts: the spec's parameter and MAC counts (§5, §13), the timing protocol's flags, bf16 as a command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import speed_sod
import speed_vsod
from engine.inference.backends.openvino import native_bf16
from models import count_macs

# (script, model, size, params, MACs per frame in G as design §5 / §13 writes them)
DESIGN_COUNTS = [
    (speed_sod, "sdnet", 320, 705_725, "1.835"),
    (speed_sod, "sdneta", 320, 818_531, "2.001"),
    (speed_vsod, "stdnet", 256, 874_469, "2.219"),
    (speed_vsod, "stdneta", 256, 987_275, "2.325"),
]


@pytest.mark.parametrize(("script", "name", "size", "params", "gmacs"), DESIGN_COUNTS)
def test_speed_script_reports_the_spec_counts(script, name: str, size: int, params: int, gmacs: str,
                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "speed.json"
    result = script.main(["--model", name, "--config", "baseline", "-j", "1", "--size", str(size), "-n", "1",
                          "--warmup", "0", "--json", str(out)])
    log = capsys.readouterr().err
    assert json.loads(out.read_text()) == result
    assert result["params"] == params and f"params {params:,}" in log
    assert f"{result['macs_per_frame'] / 1e9:.3f}" == gmacs
    video = script is speed_vsod
    assert (f"= {gmacs} G per frame" if video else f"MACs {gmacs} G per image") in log
    assert result["input_shape"] == [1, 24 if video else 3, size, size]
    assert result["frames_per_pass"] == (8 if video else 1)
    assert result["macs_per_pass"] == result["macs_per_frame"] * result["frames_per_pass"]
    assert result["fps"] == pytest.approx(result["frames_per_pass"] / result["ms_median"] * 1e3)
    assert result["form"] == "converted" and result["path"] == "openvino+fp32"  # the CPU default


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_bf16_is_reported_as_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = speed_sod.main(["--model", "sdnet", "--size", "64", "-n", "2", "--warmup", "1", "--precision", "bf16"])
    assert result["path"] == "openvino+bf16" and result["precision"] == "bf16"
    assert 0 < result["max_abs_diff_vs_fp32"] < 0.02
    log = capsys.readouterr().err
    assert "path openvino+bf16" in log and "bf16 vs fp32 maps: max abs difference" in log


def test_bf16_without_native_bf16_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import engine.inference.backends.openvino as openvino_backend

    monkeypatch.setattr(openvino_backend, "native_bf16", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        speed_sod.main(["--model", "sdnet", "--size", "32", "-n", "1", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or "
                                                 "AMX), which this one has not; --precision fp32 runs here")


def test_the_script_sets_the_process_up_visibly() -> None:
    """In a process of its own (process-wide settings stay there): --threads and malloc's setting, logged."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "speed_sod.py", "--model", "sdnet", "--size", "32", "-n", "1",
                           "--warmup", "0", "--threads", "2", "--eager"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "process settings: 2 CPU threads, freed memory kept for reuse" in done.stderr
    assert "path eager+fp32, 2 threads" in done.stderr


def test_training_form_and_eager_are_selectable(tmp_path: Path) -> None:
    result = speed_sod.main(["--model", "sdnet", "--config", "sdnet", "--size", "64", "-n", "2", "--warmup", "1",
                             "--eager"])
    assert result["form"] == "training" and result["path"] == "eager+fp32"
    # The training form is charged for its branches: 745,197 parameters (design §5, §13).
    assert result["params"] == 745_197 and result["passes"] == 2 and result["warmup"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_flag_without_cuda_warns_once_and_uses_the_cpu(capsys: pytest.CaptureFixture) -> None:
    result = speed_sod.main(["--model", "sdnet", "--gpu", "0", "--size", "32", "-n", "1", "--warmup", "0"])
    assert result["device"] == "cpu"
    assert capsys.readouterr().err.count("CUDA is not available") == 1


@pytest.mark.parametrize(("argv", "named"), [
    (["--model", "sdnet", "--size", "0"], "argument --size: must be at least 16 pixels"),
    (["--model", "sdnet", "--size", "32", "-n", "0"], "argument -n/--passes: must be at least 1, got 0"),
    (["--model", "sdnet"], "the following arguments are required: --size"),  # required, as in the release
    (["--model", "stdnet", "--size", "32"], "argument --model: invalid choice: 'stdnet'"),  # a video model
])
def test_bad_flags_exit_with_status_2(argv: list[str], named: str, capsys: pytest.CaptureFixture) -> None:
    """Each bad flag: exit status 2 and one line on stderr naming the flag and what is wrong, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        speed_sod.main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("usage")]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in lines[0], lines


def test_count_macs_counts_convolution_multiply_accumulates() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 4, 1, groups=2))
    # 8*3*9 per output pixel of the 8x8 conv output, then 4*(8/2) per pixel of the 4x4 pooled map.
    assert count_macs(model, torch.randn(2, 3, 10, 10)) == 2 * (8 * 3 * 9 * 8 * 8 + 4 * 4 * 4 * 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_check_says_no_cuda_device() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "bench" / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "gpu-check: no CUDA device"


def test_gpu_check_runs_its_set_up_under_a_plain_python3_and_says_what_it_would_skip(capsys, monkeypatch) -> None:
    """The GPU machine brings its own python3 (no venv, no openvino or pysodmetrics): the check starts from any
    Python, says in one line when that Python lacks torch, and lists each part that a missing package skips."""
    import importlib.util
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(repo / "bench"))
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system_python and subprocess.run([system_python, "-c", "import torch"], capture_output=True).returncode:
        done = subprocess.run([system_python, str(repo / "bench" / "gpu_check.py")], capture_output=True, text=True,
                              cwd=repo, env={"PATH": "/usr/bin:/bin"})
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().startswith(f"gpu-check: {system_python} has no torch"), done.stderr
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("py_sod_metrics", "pytest") else real_find_spec(name, *a))
    gpu_check.main(["--plan"])
    plan = capsys.readouterr().out.splitlines()
    assert "evaluation throughput vs PySODMetrics: skipped: needs py_sod_metrics" in plan
    assert "CUDA-only tests: skipped: needs pytest" in plan
    assert "training steps: runs (about 60 s)" in plan
    report = gpu_check.Report(budget=5.0)
    report.part("slow part", (), 60.0, lambda: ["never run"])
    report.part("broken part", (), 1.0, lambda: 1 / 0)
    assert report.lines[0].startswith("- slow part: skipped: about 60 s needed, ")
    assert report.lines[1].startswith("- broken part (0 s): FAILED: ZeroDivisionError")


def test_the_video_speed_script_takes_the_releases_height_and_width() -> None:
    """speed_vsod.py --size H W, as the release's script takes it (one value: a square frame)."""
    result = speed_vsod.main(["--model", "stdnet", "--size", "32", "48", "--nframes", "2", "-n", "1", "--warmup", "0"])
    assert result["input_shape"] == [1, 6, 32, 48]
    with pytest.raises(SystemExit):
        speed_vsod.main(["--size", "32", "48", "64", "-n", "1"])
