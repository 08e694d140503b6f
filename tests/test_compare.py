"""``python -m Evaluation compare``: tables per protocol with the best and second best marked, curves of all methods,
evaluation where metrics are missing, and a one-line error naming a results folder without metrics."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from Evaluation.__main__ import main


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """GT of DS1 and DS2; maps of three methods of decreasing quality (noise 20, 60, 120)."""
    rng = np.random.default_rng(3)
    for dataset in ("DS1", "DS2"):
        for index in range(4):
            gt = np.zeros((30, 40), np.uint8)
            cv2.circle(gt, (int(rng.integers(12, 28)), int(rng.integers(10, 20))), int(rng.integers(5, 9)), 255, -1)
            _write(tmp_path / "gt" / dataset / "GT" / f"{index}.png", gt)
            for method, noise in (("good", 20), ("fair", 60), ("poor", 120)):
                pred = np.clip(cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, noise, gt.shape),
                               0, 255).astype(np.uint8)
                _write(tmp_path / "results" / method / dataset / f"{index}.png", pred)
    return tmp_path


def test_compare_marks_the_best_and_evaluates_where_needed(tree: Path, capsys) -> None:
    results = tree / "results"
    main(["sod", "DS1+DS2", "good", str(tree / "gt"), "--results-dir", str(results), "--workers", "0"])
    assert not (results / "fair" / "metrics_sod.json").exists()
    capsys.readouterr()
    main(["compare", "good", "fair", "poor", "--testdata", "DS1+DS2", "--datadir", str(tree / "gt"),
          "--results-dir", str(results), "--workers", "0"])
    printed = capsys.readouterr().out
    out = results / "compare"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["compare_sod.md", "compare_sod_DS1.png", "compare_sod_DS2.png"]
        + [f"compare_sod_{protocol}.{suffix}" for protocol in ("pysodmetrics", "paper") for suffix in ("csv", "tex")])
    metrics = {m: json.loads((results / m / "metrics_sod.json").read_text()) for m in ("good", "fair", "poor")}
    for protocol, pick in (("pysodmetrics", lambda entry: entry), ("paper", lambda entry: entry["release"])):
        csv = (out / f"compare_sod_{protocol}.csv").read_text().splitlines()
        header = csv[0].split(",")
        best, second = csv[-2].split(","), csv[-1].split(",")
        assert best[0] == "best" and second[0] == "second"
        for column, name in enumerate(header[1:], start=1):
            dataset, key = name.split(" ")
            values = {m: pick(metrics[m][dataset])[key] for m in metrics}
            ordered = sorted(values, key=values.get, reverse=key != "MAE")
            assert (best[column], second[column]) == (ordered[0], ordered[1]), name
        # the noisier the maps, the worse every figure: "good" is best, "fair" second in each column
        assert set(best[1:]) == {"good"} and set(second[1:]) == {"fair"}
        tex = (out / f"compare_sod_{protocol}.tex").read_text()
        assert tex.count("\\textbf{") == tex.count("\\underline{") == len(header) - 1
        poor = next(line for line in tex.splitlines() if line.startswith("poor"))
        assert "\\textbf" not in poor and "\\underline" not in poor
    good_row = next(line for line in printed.splitlines() if line.startswith("| good |"))
    assert good_row.count("**") == 2 * (good_row.count("|") - 2)  # every figure of "good" in bold
    for name in ("DS1", "DS2"):
        assert (out / f"compare_sod_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_names_the_results_folder_without_metrics(tree: Path, capsys) -> None:
    results = tree / "results"
    main(["sod", "DS1", "good", str(tree / "gt"), "--results-dir", str(results), "--workers", "0"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "good", "fair", "--testdata", "DS1", "--results-dir", str(results)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{results / 'fair'}: no sod metrics of fair for DS1" in error[0]
    assert not (results / "compare").exists()
