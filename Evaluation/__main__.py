"""Evaluate saliency maps (PySODMetrics' protocol and the paper's), and compare methods.

    python -m Evaluation sod ECSSD+DUTS-TE myexp /data/sod              # what eval_sod.sh runs
    python -m Evaluation vsod DAVSOD+DAVIS myexp /data --gpu 0          # what eval_vsod.sh runs
    python -m Evaluation compare myexp other --testdata ECSSD+DUTS-TE --datadir /data/sod

Predictions are read from ``<results-dir>/<EXP>/<DATASET>/`` (``<stem>.png``; videos ``<video>/<frame>.png``);
GT from ``DIR/<DATASET>/GT/`` (sod) or from the annotation folders of the ``--test-lst`` videos whose path contains
``/<DATASET>`` (vsod, paths relative to DIR). Prints a table and writes ``<results-dir>/<EXP>/metrics_<task>.json``
(merged per dataset with earlier runs), ``metrics_<task>.md`` and ``curves_<task>_<DATASET>.png``. ``compare``
reads the experiments' ``metrics_<task>.json`` (evaluating first where a dataset is missing and ``--datadir`` is
given) and writes ``<out>/compare_<task>.md``, ``compare_<task>_{pysodmetrics,paper}.{csv,tex}`` and one figure of
all methods' curves per dataset, ``compare_<task>_<DATASET>.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import torch

from configs import DEFAULT_MAX_MEGAPIXELS
from data.atomic import unwritable
from data.guard import max_pixels_of
from Evaluation.compare import comparison_tables, draw_comparison, write_comparison
from Evaluation.evaluate import evaluate_dataset
from Evaluation.inputs import DatasetPairs, EvaluationError, image_dataset_pairs, video_dataset_pairs
from Evaluation.measures import MEASURES, named_metrics, needs_images, parse_metrics, summary_keys
from Evaluation.provenance import maps_changed, maps_record, source_record
from Evaluation.report import format_table, json_entry, save_curves, write_metrics
from utils import (
    ArgumentParser,
    add_max_megapixels_arg,
    data_processes,
    int_between,
    select_device,
    setup_logger,
    thread_count,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MISSING_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m Evaluation", description=__doc__.split("\n\n")[0])
    tasks = parser.add_subparsers(dest="command", required=True, metavar="{sod,vsod,compare}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("testdata", help="dataset name, or several joined by '+' (e.g. ECSSD+DUTS-TE)")
    common.add_argument("exp", help="experiment name: predictions in <results-dir>/<exp>/<DATASET>/")
    common.add_argument("--results-dir", default=str(REPO_ROOT / "results"),
                        help="folder holding the experiments (default: results/ of the repository)")
    common.add_argument("--gpu", default="", help="'' for the CPU (default), '0' for cuda:0")
    common.add_argument("--allow-missing", action="store_true",
                        help="evaluate the maps that exist when some GT maps have no prediction (counted)")
    common.add_argument("--batch-size", type=int_between(1, 4096), default=16, help="maps of one size per metric step")
    common.add_argument("-j", "--workers", type=data_processes, default=2,
                        help="processes decoding the maps and computing their metrics (CPU; 0: in this process)")
    common.add_argument("--threads", type=thread_count, default=1,
                        help="CPU threads of torch/OpenCV in the main process (default 1: the metric ops are small, "
                             "and on a shared CPU extra threads slow them down)")
    common.add_argument("--float64", action="store_true", help="per-pixel arithmetic in float64 (default float32)")
    common.add_argument("--metrics", default=None, metavar="NAMES",
                        help="measures besides the summary five (mae, fm, em, sm, wfm, always reported), joined by "
                             "',' or '+', or 'all': " + ", ".join(MEASURES)
                             + " (docs/measures.md)")
    common.add_argument("--skip-uncomputable", action="store_true",
                        help="leave out (named and counted) the maps a chosen measure has no value for, e.g. the "
                             "size-invariant ones on a GT without background (default: one line naming the file, "
                             "exit 2)")
    add_max_megapixels_arg(common)
    sod = tasks.add_parser("sod", parents=[common], help="image datasets", description="Image SOD datasets.")
    sod.set_defaults(task="sod")
    sod.add_argument("datadir", help="folder with <DATASET>/GT/<stem>.png (e.g. ROOTDIR/sod)")
    sod.add_argument("--keep-excluded", action="store_true",
                     help="keep the five PASCAL-S images the authors' evaluation drops (359, 408, 424, 460, 622)")
    vsod = tasks.add_parser("vsod", parents=[common], help="video datasets", description="Video SOD datasets.")
    vsod.set_defaults(task="vsod")
    vsod.add_argument("datadir", metavar="rootdir", help="data root; the list file's paths are relative to it")
    vsod.add_argument("--test-lst", default=None,
                      help="list file of the test videos (default: dataset/test_video_lst.txt of the repository)")
    vsod.add_argument("--keep-ends", action="store_true",
                      help="also evaluate the first and last annotated frame of each video (DAVSOD skips them)")
    compare = tasks.add_parser("compare", help="compare methods", description="Compare experiments: tables with the "
                               "best and second-best values marked, and the curves of all methods per dataset.")
    compare.add_argument("exps", nargs="+", metavar="EXP", help="experiments (folders under --results-dir)")
    compare.add_argument("--testdata", required=True, help="'+'-joined dataset names")
    compare.add_argument("--task", choices=["sod", "vsod"], default="sod", help="image (default) or video datasets")
    compare.add_argument("--results-dir", default=str(REPO_ROOT / "results"),
                         help="folder holding the experiments (default: results/ of the repository)")
    compare.add_argument("--datadir", default=None,
                         help="GT folder (sod) or data root (vsod): evaluate an experiment's maps where its metrics "
                              "lack a dataset")
    compare.add_argument("--test-lst", default=None, help="list file of the test videos (vsod)")
    compare.add_argument("--out", default=None, help="folder of the tables and figures (<results-dir>/compare)")
    compare.add_argument("-j", "--workers", type=data_processes, default=2,
                         help="processes decoding and computing, where an experiment is evaluated first")
    compare.add_argument("--gpu", default="", help="'' for the CPU (default), '0' for cuda:0")
    compare.add_argument("--metrics", default=None, metavar="NAMES",
                         help="measures to compare besides the summary five (as for sod / vsod; evaluated where an "
                              "experiment lacks them and --datadir is given)")
    return parser


@dataclass(frozen=True)
class Request:
    """One evaluation (``sod`` / ``vsod``), its flags resolved: ``compare`` makes one for each experiment it
    evaluates instead of parsing a command line again. Field defaults are the flags'."""

    task: str
    testdata: str
    exp: str
    datadir: str
    results_dir: str = str(REPO_ROOT / "results")
    gpu: str = ""
    allow_missing: bool = False
    batch_size: int = 16
    workers: int = 2
    threads: int = 1
    float64: bool = False
    metrics: str | None = None
    skip_uncomputable: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    keep_excluded: bool = False
    test_lst: str | None = None
    keep_ends: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Request:
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls) if hasattr(args, field.name)})


def _list_file(args: argparse.Namespace | Request) -> Path:
    return Path(args.test_lst) if args.test_lst else REPO_ROOT / "dataset" / "test_video_lst.txt"


def chosen_metrics(args: argparse.Namespace | Request) -> tuple[str, ...]:
    """The measure names of ``--metrics`` (EvaluationError for an unknown one)."""
    try:
        return parse_metrics(args.metrics)
    except ValueError as err:
        raise EvaluationError(str(err)) from None


def computable_metrics(args: Request, names: tuple[str, ...], logger: logging.Logger) -> tuple[str, ...]:
    """``names`` without the camouflage context measure when ``--metrics all`` (not ccm by name) asked for it and an
    image dataset has no ``images/`` folder beside its GT (a GT-only dataset): `all` means what can be computed,
    and the log says what was left out. ccm asked for by name still needs the images."""
    if not needs_images(names) or "ccm" in named_metrics(args.metrics) or args.task != "sod":
        return names
    without = [name for name in args.testdata.split("+")
               if name and not (Path(args.datadir) / name / "images").is_dir()]
    if not without:
        return names
    logger.warning("--metrics all: ccm left out (the camouflage context measure needs the RGB images; %s has no "
                   "images/ folder beside GT/)", ", ".join(without))
    return tuple(name for name in names if name != "ccm")


def collect(args: Request, logger: logging.Logger,
            metrics: tuple[str, ...]) -> list[DatasetPairs]:
    """The pairs of every requested dataset, checked before any map is read."""
    with_images = needs_images(metrics)
    names = [name for name in args.testdata.split("+") if name]
    if not names:
        raise EvaluationError(f"no dataset name in {args.testdata!r}")
    exp_dir = Path(args.results_dir) / args.exp
    if not exp_dir.is_dir():
        raise EvaluationError(f"experiment folder not found: {exp_dir} (predictions are read from "
                              f"{exp_dir}/<DATASET>/)")
    if (why := unwritable(exp_dir, folder=True)) is not None:  # the metrics are written there
        raise EvaluationError(f"experiment folder {exp_dir}: {why}")
    datadir = Path(args.datadir)
    if not datadir.is_dir():
        raise EvaluationError(f"data folder not found: {datadir}")
    if args.task == "vsod":
        list_file = _list_file(args)
        if not list_file.is_file():
            raise EvaluationError(f"--test-lst: list file not found: {list_file}")
    datasets = []
    for name in names:
        if args.task == "sod":
            dataset = image_dataset_pairs(datadir, exp_dir, name, args.keep_excluded, with_images)
        else:
            dataset = video_dataset_pairs(datadir, list_file, exp_dir, name, args.keep_ends, with_images)
        for note in dataset.notes:
            logger.info("%s", note)
        if dataset.missing:
            total = len(dataset.missing) + len(dataset.pairs)
            shown = ", ".join(str(path) for path in dataset.missing[:MISSING_SHOWN])
            more = ", ..." if len(dataset.missing) > MISSING_SHOWN else ""
            message = f"{name}: {len(dataset.missing)} of {total} GT maps have no prediction ({shown}{more})"
            if not args.allow_missing:
                raise EvaluationError(f"{message}; --allow-missing evaluates the others")
            logger.warning("%s; evaluating the other %d (--allow-missing)", message, len(dataset.pairs))
        datasets.append(dataset)
    return datasets


def run(args: Request, logger: logging.Logger) -> dict[str, dict]:
    """Evaluate, write the outputs, return the JSON records of this run's datasets."""
    names = computable_metrics(args, chosen_metrics(args), logger)
    datasets = collect(args, logger, names)
    device = select_device(args.gpu)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    dtype = torch.float64 if args.float64 else torch.float32
    exp_dir = Path(args.results_dir) / args.exp
    old_path = exp_dir / f"metrics_{args.task}.json"
    old = _read_metrics(old_path)
    list_file = _list_file(args) if args.task == "vsod" else None
    entries = {}
    for dataset in datasets:
        maps_folder = exp_dir / dataset.name
        maps = maps_record(maps_folder)  # read before the evaluation: what its figures are computed from
        if dataset.name in old and (changed := maps_changed(old[dataset.name], maps)):
            logger.info("%s: recomputing the figures of %s: %s", dataset.name, old_path, changed)
        result = evaluate_dataset(dataset, device, dtype, args.batch_size, args.workers,
                                  progress=sys.stderr.isatty(), names=names,
                                  max_pixels=max_pixels_of(args.max_megapixels),
                                  skip_uncomputable=args.skip_uncomputable)
        if result["one_pixel"]:
            logger.warning("%s: %d maps have 1 pixel, where the E-measure (PySODMetrics' too) divides by H*W - 1 = 0 "
                           "and gives 1/eps = 4.5e15, so maxE, meanE and adpE mean nothing (docs/bad_input.md, "
                           "\"Evaluation: records and degenerate maps\")", dataset.name, result["one_pixel"])
        for line in result["skipped"]:
            logger.warning("skipped %s", line)
        if result["skipped"]:
            logger.warning("%s: %d maps left out (--skip-uncomputable, listed above)", dataset.name,
                           len(result["skipped"]))
        if result["resized"]:
            logger.warning("%s: %d predictions differ in size from their GT and were resized (bilinear)",
                           dataset.name, result["resized"])
        if result["sm_nan"]:
            logger.warning("%s: S-measure is NaN for %d maps (GT centroid on the last row or column: an empty "
                           "quadrant; PySODMetrics gives NaN too), so Sm is NaN", dataset.name, result["sm_nan"])
        entries[dataset.name] = {**json_entry(result), "source": source_record(
            maps_folder, maps, dataset.gt_source, Path(args.datadir), list_file)}
        title = f"{args.exp} - {dataset.name} ({result['images']} maps" + (
            f", {result['videos']} videos)" if "videos" in result else ")")
        save_curves(exp_dir / f"curves_{args.task}_{dataset.name}.png", title, result["curves"])
    write_metrics(exp_dir, args.task, entries)
    logger.info("wrote %s, %s and curves_%s_<DATASET>.png", exp_dir / f"metrics_{args.task}.json",
                exp_dir / f"metrics_{args.task}.md", args.task)
    return entries


def _read_metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _needs_evaluation(entry: dict | None, wanted: set[str], maps_folder: Path, logger: logging.Logger,
                      exp: str) -> str | None:
    """Why an experiment's figures of a dataset must be computed (again) before they are compared, or None: no
    figures (or not every wanted measure), or maps that changed since they were computed. Figures whose maps are
    gone, or that do not record their maps (older evaluations), are used as they are, with a warning."""
    if not entry or not wanted <= set(entry):
        return "no metrics" if not entry else "no metrics of every chosen measure"
    if not maps_folder.is_dir():
        logger.warning("%s: the maps folder %s is gone: its recorded figures are compared unchecked", exp,
                       maps_folder)
        return None
    why = maps_changed(entry, maps_record(maps_folder))
    if why and "source" not in entry:
        logger.warning("%s on %s: %s: compared as recorded (give --datadir to re-evaluate them)", exp,
                       maps_folder.name, why)
        return None
    return f"its maps changed since its figures were computed ({why})" if why else None


def compare(args: argparse.Namespace, logger: logging.Logger) -> str:
    """Read (or first compute) every experiment's metrics of the datasets, write the tables and figures; returns the
    Markdown tables."""
    datasets = [name for name in args.testdata.split("+") if name]
    results = Path(args.results_dir)
    out = Path(args.out) if args.out else results / "compare"
    if (why := unwritable(out, folder=True)) is not None:
        raise EvaluationError(f"--out {out}: {why}")
    metrics = {}
    wanted = {"release", "curves", *summary_keys(chosen_metrics(args))}
    for exp in args.exps:
        path = results / exp / f"metrics_{args.task}.json"
        entries = _read_metrics(path)
        for name in datasets:
            if (why := _needs_evaluation(entries.get(name), wanted, results / exp / name, logger, exp)) is None:
                continue
            entry_source = (entries.get(name) or {}).get("source", {})
            datadir = args.datadir or entry_source.get("datadir")
            if not datadir:
                what = f"no {args.task} metrics of {exp}" if why.startswith("no metrics") else why
                raise EvaluationError(f"{results / exp}: {what} for {name} in {path.name}; give --datadir to "
                                      "evaluate its maps")
            logger.info("evaluating %s on %s: %s", exp, name, why)
            test_lst = args.test_lst or entry_source.get("test_lst")
            run(Request(args.task, name, exp, datadir, results_dir=str(results), gpu=args.gpu, workers=args.workers,
                        metrics=args.metrics, test_lst=test_lst if args.task == "vsod" else None), logger)
            entries = _read_metrics(path)
        metrics[exp] = {name: entries[name] for name in datasets}
    paths = write_comparison(comparison_tables(metrics, datasets, summary_keys(chosen_metrics(args))), out, args.task)
    for name in datasets:
        draw_comparison(metrics, name, out / f"compare_{args.task}_{name}.png")
    logger.info("wrote %s and compare_%s_<DATASET>.png", ", ".join(str(p) for p in paths), args.task)
    return paths[0].read_text()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = setup_logger()
    try:
        if args.command == "compare":
            print(compare(args, logger))
            return
        entries = run(Request.from_args(args), logger)
    except EvaluationError as err:
        logger.error("%s", err)
        raise SystemExit(2) from None
    print(format_table(entries))


if __name__ == "__main__":
    main()
