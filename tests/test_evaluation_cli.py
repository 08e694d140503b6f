"""eval_sod.sh / eval_vsod.sh and ``python -m Evaluation`` on small generated trees: the commands as written (run
from Evaluation/, predictions from ../results/EXP), numbers equal to PySODMetrics (video metrics averaged over
videos, maxF/maxE from the video-averaged curves, first and last frame skipped), outputs, and bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from Evaluation.__main__ import main

py_sod_metrics = pytest.importorskip("py_sod_metrics")
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure")


def _pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((height, width), np.uint8)
    cv2.ellipse(gt, (int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4))),
                (int(rng.integers(3, width // 3)), int(rng.integers(3, height // 3))), float(rng.uniform(0, 180)),
                0, 360, 255, -1)
    pred = np.clip(cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, 30, gt.shape), 0, 255)
    return pred.astype(np.uint8), gt


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Summary metrics of a list of (pred, gt) with PySODMetrics, plus the raw F/E curves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = {name: getattr(py_sod_metrics, name)() for name in CLASSES}
        for pred, gt in pairs:
            for metric in metrics.values():
                metric.step(pred, gt)
        fm, em = metrics["Fmeasure"].get_results()["fm"], metrics["Emeasure"].get_results()["em"]
    return {"MAE": metrics["MAE"].get_results()["mae"], "maxF": fm["curve"].max(), "meanF": fm["curve"].mean(),
            "adpF": fm["adp"], "wF": metrics["WeightedFmeasure"].get_results()["wfm"],
            "Sm": metrics["Smeasure"].get_results()["sm"], "maxE": em["curve"].max(), "meanE": em["curve"].mean(),
            "adpE": em["adp"], "f_curve": fm["curve"], "e_curve": em["curve"]}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """A repository-like folder (Evaluation/, data/, utils.py, configs.py, .venv linked to the real ones),
    results/exp1 with the predictions, and a data root with two image datasets and one video dataset of three
    videos."""
    base = tmp_path_factory.mktemp("evaltree")
    repo = base / "repo"
    repo.mkdir()
    for name in ("Evaluation", "data", "utils.py", "configs.py", ".venv"):
        if (REPO / name).exists():
            (repo / name).symlink_to(REPO / name)
    rng = np.random.default_rng(7)
    root = base / "root"
    expected_sod, sod_pairs = {}, {}
    for name, sizes in (("DSA", [(30, 40)] * 5 + [(25, 33)] * 2), ("DSB", [(41, 29)] * 4)):
        pairs = []
        for index, (h, w) in enumerate(sizes):
            pred, gt = _pair(rng, h, w)
            _write(root / "sod" / name / "GT" / f"im{index:02d}.png", gt)
            written = pred
            if name == "DSA" and index == 5:  # a prediction of another size: resized bilinearly to the GT size
                written = cv2.resize(pred, (w + 7, h - 4), interpolation=cv2.INTER_LINEAR)
                from Evaluation.inputs import resize_bilinear
                pred = resize_bilinear(written, h, w)
            _write(repo / "results" / "exp1" / name / f"im{index:02d}.png", written)
            pairs.append((pred, gt))
        sod_pairs[name] = pairs
        expected_sod[name] = _reference(pairs)
    lines, videos = [], {}
    for video, frames in (("v1", 4), ("v2", 6), ("v3", 3)):
        clip, anno = f"vsod/SYNV_test/{video}/Imgs", f"vsod/SYNV_test/{video}/GT_object_level"
        lines.append(f"{clip} .png {anno} .png")
        videos[video] = []
        for frame in range(frames):
            pred, gt = _pair(rng, 36, 48)
            stem = f"{video}_{frame:05d}"
            _write(root / clip / f"{stem}.png", np.dstack([gt] * 3))
            _write(root / anno / f"{stem}.png", gt)
            _write(repo / "results" / "exp1" / "SYNV" / video / f"{stem}.png", pred)
            videos[video].append((pred, gt))
    lines.append("vsod/OTHER/x/Imgs .png vsod/OTHER/x/GT_object_level .png")
    list_file = base / "my_list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    return {"repo": repo, "root": root, "list": list_file, "expected_sod": expected_sod, "videos": videos,
            "sod_pairs": sod_pairs}


def _check(entry: dict, expected: dict, images: int, atol: float = 1e-4) -> None:
    for key in ("MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE"):
        assert entry[key] == pytest.approx(float(expected[key]), abs=atol), key
    assert entry["images"] == images


def _video_expected(videos: dict, keep_ends: bool) -> dict:
    per_video = [_reference(frames if keep_ends else frames[1:-1]) for frames in videos.values()]
    f_curve = np.mean([r["f_curve"] for r in per_video], axis=0)
    e_curve = np.mean([r["e_curve"] for r in per_video], axis=0)
    expected = {key: np.mean([r[key] for r in per_video]) for key in ("MAE", "adpF", "wF", "Sm", "adpE")}
    expected.update(maxF=f_curve.max(), meanF=f_curve.mean(), maxE=e_curve.max(), meanE=e_curve.mean())
    return expected


def _run_script(tree: dict, script: str, *args: str) -> subprocess.CompletedProcess:
    """``cd Evaluation && bash <script> <args>`` in the temporary repository (whose Evaluation/ is a link)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PWD")}
    command = f"cd Evaluation && bash {script} {shlex.join(args)}"
    return subprocess.run(["bash", "-c", command], cwd=tree["repo"], env=env, capture_output=True, text=True,
                          timeout=120)


def test_eval_sod_script_as_written(tree):
    done = _run_script(tree, "eval_sod.sh", "DSA+DSB", "exp1", str(tree["root"] / "sod"), "--workers", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "PySODMetrics protocol"
    assert lines[1].split() == ["Dataset", "MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE",
                                "images"]
    assert [line.split()[0] for line in lines[2:4]] == ["DSA", "DSB"] and lines[4] == ""
    assert lines[5].startswith("Paper's protocol") and lines[6].split() == ["Dataset", "MAE", "maxF", "meanF", "AP"]
    assert [line.split()[0] for line in lines[7:]] == ["DSA", "DSB"]
    exp = tree["repo"] / "results" / "exp1"  # ../results/exp1 seen from Evaluation/
    results = json.loads((exp / "metrics_sod.json").read_text())
    _check(results["DSA"], tree["expected_sod"]["DSA"], 7)
    _check(results["DSB"], tree["expected_sod"]["DSB"], 4)
    assert results["DSA"]["resized"] == 1 and results["DSB"]["resized"] == 0
    assert "1 predictions differ in size" in done.stderr
    markdown = (exp / "metrics_sod.md").read_text()
    assert markdown.startswith("**PySODMetrics protocol**\n\n| Dataset | MAE | maxF |") and "| DSB |" in markdown
    assert "scripts, docs/design.md §7.3)**\n\n| Dataset | MAE | maxF | meanF | AP |" in markdown
    assert set(results["DSA"]["release"]) == {"MAE", "maxF", "meanF", "AP"}
    for name in ("DSA", "DSB"):
        assert (exp / f"curves_sod_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_vsod_script_passes_arguments_through(tree):
    done = _run_script(tree, "eval_vsod.sh", "SYNV", "exp1", str(tree["root"]), "--test-lst", str(tree["list"]),
                       "--gpu", "0", "--workers", "0")
    assert done.returncode == 0, done.stderr
    results = json.loads((tree["repo"] / "results" / "exp1" / "metrics_vsod.json").read_text())
    # First and last annotated frames skipped: 2 + 4 + 1 frames of 3 videos.
    _check(results["SYNV"], _video_expected(tree["videos"], keep_ends=False), 7)
    assert results["SYNV"]["videos"] == 3
    assert done.stdout.splitlines()[2].split()[0] == "SYNV"
    assert set(results["SYNV"]["release"]) == {"MAE", "Sm", "maxF"}


def test_vsod_keep_ends_and_float64(tree, capsys):
    main(["vsod", "SYNV", "exp1", str(tree["root"]), "--test-lst", str(tree["list"]), "--keep-ends",
          "--results-dir", str(tree["repo"] / "results"), "--workers", "0", "--float64"])
    results = json.loads((tree["repo"] / "results" / "exp1" / "metrics_vsod.json").read_text())
    _check(results["SYNV"], _video_expected(tree["videos"], keep_ends=True), 13, atol=1e-6)
    assert "SYNV" in capsys.readouterr().out


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "ERROR" in error[0]  # one line, no traceback
    return error[0]


@pytest.fixture
def small(tmp_path) -> dict:
    """A fresh image tree: 6 GT maps, predictions for all."""
    rng = np.random.default_rng(1)
    for index in range(6):
        pred, gt = _pair(rng, 20, 24)
        _write(tmp_path / "sod" / "DS" / "GT" / f"{index}.png", gt)
        _write(tmp_path / "results" / "e" / "DS" / f"{index}.png", pred)
    return {"base": tmp_path, "argv": ["sod", "DS", "e", str(tmp_path / "sod"), "--results-dir",
                                       str(tmp_path / "results"), "--workers", "0"]}


def test_missing_predictions_are_an_error_unless_allowed(small, capsys):
    for index in (1, 4):
        (small["base"] / "results" / "e" / "DS" / f"{index}.png").unlink()
    error = _fails(small["argv"], capsys)
    assert "2 of 6 GT maps have no prediction" in error and "1.png" in error and "--allow-missing" in error
    assert not (small["base"] / "results" / "e" / "metrics_sod.json").exists()
    main(small["argv"] + ["--allow-missing"])
    results = json.loads((small["base"] / "results" / "e" / "metrics_sod.json").read_text())
    assert results["DS"]["images"] == 4 and results["DS"]["missing"] == 2


def test_json_keeps_other_datasets_of_earlier_runs(small, capsys):
    exp = small["base"] / "results" / "e"
    (exp / "metrics_sod.json").write_text(json.dumps({"OLD": {"MAE": 0.5, "images": 3}, "DS": {"MAE": 9}}))
    main(small["argv"])
    results = json.loads((exp / "metrics_sod.json").read_text())
    assert results["OLD"] == {"MAE": 0.5, "images": 3} and results["DS"]["images"] == 6
    assert "| OLD | 0.5000 |" in (exp / "metrics_sod.md").read_text()
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "DS"  # the printed table: this run only


def test_bad_counts_are_usage_errors(small, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(small["argv"] + ["--batch-size", "0"])
    assert exit_info.value.code == 2 and "--batch-size" in capsys.readouterr().err


def test_unreadable_file_is_named(small, capsys):
    (small["base"] / "results" / "e" / "DS" / "3.png").write_bytes(b"not a png")
    assert "3.png" in _fails(small["argv"], capsys)


@pytest.mark.parametrize("case, message", [
    ("unknown", "unknown dataset 'NOPE': no GT folder"),
    ("exp", "experiment folder not found"),
    ("empty_gt", "no GT maps"),
    ("no_preds", "no predictions for DS"),
    ("empty_preds", "no prediction maps"),
    ("datadir", "data folder not found"),
])
def test_bad_input_gives_one_line_error(small, capsys, case, message):
    argv = list(small["argv"])
    base = small["base"]
    if case == "unknown":
        argv[1] = "DS+NOPE"
        message += f" {base / 'sod' / 'NOPE' / 'GT'} (datasets there: DS)"
    elif case == "exp":
        argv[2] = "missing_exp"
    elif case == "empty_gt":
        for path in (base / "sod" / "DS" / "GT").iterdir():
            path.unlink()
    elif case == "no_preds":
        (base / "results" / "e" / "DS").rename(base / "results" / "e" / "other")
    elif case == "empty_preds":
        for path in (base / "results" / "e" / "DS").iterdir():
            path.unlink()
    elif case == "datadir":
        argv[3] = str(base / "nowhere")
    assert message in _fails(argv, capsys)


def test_unknown_video_dataset_and_missing_list(tree, capsys):
    argv = ["vsod", "DAVSOD", "exp1", str(tree["root"]), "--test-lst", str(tree["list"]), "--results-dir",
            str(tree["repo"] / "results")]
    assert "no video line of" in _fails(argv, capsys)
    argv[4] = "--test-lst"
    argv[5] = str(tree["list"]) + ".missing"
    argv[1] = "SYNV"
    assert "list file not found" in _fails(argv, capsys)


def test_figures_do_not_depend_on_the_number_of_workers(tree, monkeypatch, tmp_path):
    """Chunks of 2 maps: in-process (0 workers) and in 1 or 3 processes give the same bytes."""
    import shutil

    from Evaluation import evaluate

    monkeypatch.setattr(evaluate, "CHUNK_MAPS", 2)
    outputs = []
    for workers in ("0", "1", "3"):
        results = tmp_path / f"w{workers}"
        shutil.copytree(tree["repo"] / "results" / "exp1", results / "exp1", ignore=shutil.ignore_patterns("metric*"))
        main(["sod", "DSA+DSB", "exp1", str(tree["root"] / "sod"), "--results-dir", str(results), "--workers",
              workers])
        main(["vsod", "SYNV", "exp1", str(tree["root"]), "--test-lst", str(tree["list"]), "--results-dir",
              str(results), "--workers", workers])
        # the figures, without the record of where the maps and GT are (each run has its own folder)
        outputs.append([{name: {key: value for key, value in entry.items() if key != "source"} for name, entry in
                         json.loads((results / "exp1" / f"metrics_{task}.json").read_text()).items()}
                        for task in ("sod", "vsod")])
    assert outputs[0] == outputs[1] == outputs[2]


def test_two_evaluations_of_one_experiment_at_once_keep_both(tree, tmp_path):
    """Two evaluations (one dataset each, as a SLURM array runs them) writing one experiment folder at the same
    time: each takes the experiment's lock to merge its figures, so neither is lost. The test holds the lock while
    both evaluate, so that both are waiting for it together, then lets them go."""
    import shutil
    import time

    from data.atomic import locked

    exp = tree["repo"] / "results" / "exp_pair"
    for name in ("DSA", "DSB"):
        shutil.copytree(tree["repo"] / "results" / "exp1" / name, exp / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PWD")}
    with locked(exp / "metrics_sod.json"):
        commands = [f"cd Evaluation && bash eval_sod.sh {name} exp_pair {shlex.quote(str(tree['root'] / 'sod'))} "
                    "--workers 0" for name in ("DSA", "DSB")]
        processes = [subprocess.Popen(["bash", "-c", command], cwd=tree["repo"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for command in commands]
        deadline = time.monotonic() + 120
        while not all((exp / f"curves_sod_{name}.png").is_file() for name in ("DSA", "DSB")):  # both at the lock
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
            time.sleep(0.05)
        assert not (exp / "metrics_sod.json").exists()  # nobody merges while the lock is held
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    results = json.loads((exp / "metrics_sod.json").read_text())
    assert sorted(results) == ["DSA", "DSB"]
    _check(results["DSA"], tree["expected_sod"]["DSA"], 7)
    _check(results["DSB"], tree["expected_sod"]["DSB"], 4)
    markdown = (exp / "metrics_sod.md").read_text()
    assert "| DSA |" in markdown and "| DSB |" in markdown


def _oracle_all(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Every --metrics all key computed with PySODMetrics itself from (pred, gt, RGB image) triples."""
    from Evaluation.measures import _HANDLERS

    psm = py_sod_metrics
    gray = dict(with_dynamic=True, with_adaptive=True)
    binary = dict(with_dynamic=False, with_adaptive=False, with_binary=True, sample_based=False)
    handlers = {}
    for name, (cls, options, _) in _HANDLERS.items():
        handlers[name] = getattr(psm, cls.__name__)(**gray, **options)
        handlers[f"bi{name}"] = getattr(psm, cls.__name__)(**binary, **options)
    confusion = psm.FmeasureV2(handlers)
    size_invariant = psm.SizeInvarianceFmeasureV2({f"si{name}": getattr(psm, cls.__name__)(**gray, **options)
                                                   for name, (cls, options, _) in _HANDLERS.items()})
    others = {"msiou": psm.MSIoU(True, True), "simae": psm.SizeInvarianceMAE(),
              "hce": psm.HumanCorrectionEffortMeasure(), "cm": psm.ContextMeasure(),
              "ccm": psm.CamouflageContextMeasure()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pred, gt, image in triples:
            for metric in (confusion, size_invariant, *others.values()):
                if metric is others["ccm"]:
                    metric.step(pred, gt, img=image)
                else:
                    metric.step(pred, gt)
    expected = {}
    for name, result in confusion.get_results().items():
        if "dynamic" in result:
            expected.update({f"max{name}": result["dynamic"].max(), f"mean{name}": result["dynamic"].mean(),
                             f"adp{name}": result["adaptive"]})
        else:
            expected[name] = result["binary"]
    for name, result in size_invariant.get_results().items():
        curve = np.mean([per_map.mean(0) for per_map in result["dynamic"]], axis=0)
        expected.update({f"max{name}": curve.max(), f"mean{name}": curve.mean(), f"adp{name}": result["adaptive"]})
    msiou = others["msiou"].get_results()
    expected.update(maxmsiou=msiou["dynamic"].max(), meanmsiou=msiou["dynamic"].mean(), adpmsiou=msiou["adaptive"],
                    simae=others["simae"].get_results()["si_mae"], hce=others["hce"].get_results()["hce"],
                    cm=others["cm"].get_results()["cm"], ccm=others["ccm"].get_results()["ccm"])
    return expected


def test_every_measure_by_name_equals_pysodmetrics(tmp_path):
    """``--metrics all``: every reported key equals PySODMetrics' own value on the same maps (and the RGB images for
    ccm); the summary five are there too, unchanged; tables and JSON carry them all."""
    rng = np.random.default_rng(21)
    triples = []
    for index, (h, w) in enumerate([(40, 52)] * 4 + [(36, 30)] * 3):
        pred, gt = _pair(rng, h, w)
        image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 1.5)
        _write(tmp_path / "data" / "SET" / "GT" / f"m{index}.png", gt)
        _write(tmp_path / "data" / "SET" / "images" / f"m{index}.jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _write(tmp_path / "results" / "exp" / "SET" / f"m{index}.png", pred)
        decoded = cv2.cvtColor(cv2.imread(str(tmp_path / "data" / "SET" / "images" / f"m{index}.jpg")),
                               cv2.COLOR_BGR2RGB)  # the JPEG as the evaluation reads it
        triples.append((pred, gt, decoded))
    main(["sod", "SET", "exp", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"), "--metrics",
          "all", "--workers", "0", "--float64"])
    entry = json.loads((tmp_path / "results" / "exp" / "metrics_sod.json").read_text())["SET"]
    expected = _oracle_all(triples)
    from Evaluation.measures import MEASURES, summary_keys

    assert set(summary_keys(tuple(MEASURES))) - set(entry) == set()
    for key, value in expected.items():
        assert entry[key] == pytest.approx(float(value), abs=1e-6), key
    _check(entry, _reference([(p, g) for p, g, _ in triples]), 7, atol=1e-6)
    header = (tmp_path / "results" / "exp" / "metrics_sod.md").read_text().splitlines()[2]
    assert header == "| " + " | ".join(["Dataset", *summary_keys(tuple(MEASURES)), "images"]) + " |"


def test_all_on_a_gt_only_dataset_leaves_out_ccm_and_says_so(tmp_path, capsys):
    """``--metrics all`` on a dataset with GT masks only (no images/ folder): every measure but ccm, which needs the
    RGB images, and one warning naming what was left out; ccm asked for by name is a one-line error."""
    rng = np.random.default_rng(5)
    for index in range(3):
        pred, gt = _pair(rng, 30, 40)
        _write(tmp_path / "data" / "GTONLY" / "GT" / f"m{index}.png", gt)
        _write(tmp_path / "results" / "exp" / "GTONLY" / f"m{index}.png", pred)
    argv = ["sod", "GTONLY", "exp", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
            "--workers", "0"]
    main([*argv, "--metrics", "all"])
    err = capsys.readouterr().err
    entry = json.loads((tmp_path / "results" / "exp" / "metrics_sod.json").read_text())["GTONLY"]
    from Evaluation.measures import MEASURES, summary_keys

    assert set(summary_keys(tuple(MEASURES))) - set(entry) == {"ccm"}
    assert "--metrics all: ccm left out" in err and "GTONLY has no images/ folder" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--metrics", "ccm"])
    assert exit_info.value.code == 2


def test_the_default_set_and_bad_names(tree, tmp_path, capsys):
    """Without --metrics the JSON has exactly the summary keys of before; an unknown name is a one-line error."""
    import shutil

    exp = tree["repo"] / "results" / "exp_default"
    shutil.copytree(tree["repo"] / "results" / "exp1" / "DSB", exp / "DSB")
    main(["sod", "DSB", "exp_default", str(tree["root"] / "sod"), "--results-dir", str(tree["repo"] / "results"),
          "--workers", "0"])
    entry = json.loads((exp / "metrics_sod.json").read_text())["DSB"]
    assert list(entry) == ["MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE", "images",
                           "resized", "missing", "sm_nan", "one_pixel", "skipped", "release", "curves", "source"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["sod", "DSB", "exp_default", str(tree["root"] / "sod"), "--results-dir", str(tree["repo"] / "results"),
              "--metrics", "iou,nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--metrics: unknown nope" in err and len(err.strip().splitlines()) == 1


def test_video_measures_are_averaged_over_videos(tree, tmp_path):
    """vsod --metrics: each video's values and curves (PySODMetrics on its frames, ends dropped), averaged over the
    videos; max and mean of the averaged curves, as for F and E; the RGB frames for ccm."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(tree["repo"] / "results" / "exp1" / "SYNV", results / "vexp" / "SYNV")
    main(["vsod", "SYNV", "vexp", str(tree["root"]), "--test-lst", str(tree["list"]), "--results-dir", str(results),
          "--workers", "0", "--metrics", "iou,biiou,msiou,hce,simae,ccm"])
    entry = json.loads((results / "vexp" / "metrics_vsod.json").read_text())["SYNV"]
    per_video = []
    for video, frames in tree["videos"].items():
        iou = py_sod_metrics.FmeasureV2({"iou": py_sod_metrics.IOUHandler(True, True)})
        msiou, hce = py_sod_metrics.MSIoU(True, True), py_sod_metrics.HumanCorrectionEffortMeasure()
        simae, ccm = py_sod_metrics.SizeInvarianceMAE(), py_sod_metrics.CamouflageContextMeasure()
        clip = tree["root"] / "vsod" / "SYNV_test" / video / "Imgs"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, (pred, gt) in enumerate(frames[1:-1], 1):
                for metric in (iou, msiou, hce, simae):
                    metric.step(pred, gt)
                image = cv2.cvtColor(cv2.imread(str(clip / f"{video}_{index:05d}.png")), cv2.COLOR_BGR2RGB)
                ccm.step(pred, gt, img=image)
        per_video.append({"iou": iou.get_results()["iou"], "msiou": msiou.get_results(),
                          "hce": hce.get_results()["hce"], "simae": simae.get_results()["si_mae"],
                          "ccm": ccm.get_results()["ccm"]})
    iou_curve = np.mean([r["iou"]["dynamic"] for r in per_video], axis=0)
    msiou_curve = np.mean([r["msiou"]["dynamic"] for r in per_video], axis=0)
    expected = {"maxiou": iou_curve.max(), "meaniou": iou_curve.mean(),
                "adpiou": np.mean([r["iou"]["adaptive"] for r in per_video]),
                "maxmsiou": msiou_curve.max(), "meanmsiou": msiou_curve.mean(),
                "adpmsiou": np.mean([r["msiou"]["adaptive"] for r in per_video]),
                **{key: np.mean([r[key] for r in per_video]) for key in ("hce", "simae", "ccm")}}
    for key, value in expected.items():
        assert entry[key] == pytest.approx(float(value), abs=1e-6), key
    assert 0 <= entry["biiou"] <= 1


def test_compare_carries_the_chosen_measures(tree, tmp_path):
    import shutil

    results = tmp_path / "results"
    for exp in ("a", "b"):
        shutil.copytree(tree["repo"] / "results" / "exp1" / "DSB", results / exp / "DSB")
    main(["compare", "a", "b", "--testdata", "DSB", "--results-dir", str(results), "--datadir",
          str(tree["root"] / "sod"), "--metrics", "iou,hce", "--workers", "0"])
    header = (results / "compare" / "compare_sod.md").read_text().splitlines()[2]
    assert header.endswith("| DSB maxE | DSB meanE | DSB adpE | DSB maxiou | DSB meaniou | DSB adpiou | DSB hce |")
    csv = (results / "compare" / "compare_sod_pysodmetrics.csv").read_text().splitlines()
    assert csv[0].split(",")[-1] == "DSB hce" and csv[-2].split(",")[-1] == "a b"  # equal: both best
