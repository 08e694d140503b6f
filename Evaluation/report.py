"""Outputs of an evaluation: the printed tables, ``metrics_<task>.json`` (merged with earlier runs and with
evaluations running at the same time, per dataset), a Markdown file, and one PNG per dataset with the
precision-recall curve and the F-measure-over-threshold curve. Each output has two groups of figures: PySODMetrics'
protocol, and the paper's (the authors' scripts, under ``"release"``). Every file is written to a temporary name
first and then renamed, so nothing is left half-written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from data.atomic import atomic_path, locked, write_bytes_atomic, write_json_atomic
from Evaluation.measures import MEASURES, summary_keys
from Evaluation.metrics import SUMMARY_KEYS

JSON_KEYS = (*SUMMARY_KEYS, "images", "videos", "resized", "missing", "sm_nan", "one_pixel")
MEASURE_KEYS = summary_keys(tuple(MEASURES))  # every reportable key, in the order tables show them
RELEASE_TITLE = "Paper's protocol (the authors' evaluation scripts, docs/design.md §7.3)"
OURS_TITLE = "PySODMetrics protocol"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def json_entry(result: dict) -> dict:
    """The JSON record of a dataset result: metrics (NaN as null), counts, the paper's protocol under ``release``,
    and the precision, recall and F-measure curves (256 thresholds, index 0 = 255) for comparison figures."""
    entry = {}
    for key in JSON_KEYS:
        if key in result:
            value = result[key]
            entry[key] = int(value) if key not in SUMMARY_KEYS else _number(value)
    if "skipped" in result:
        entry["skipped"] = len(result["skipped"])
    entry.update({key: _number(value) for key, value in result.get("extra", {}).items()})
    entry["release"] = {key: _number(value) for key, value in result["release"].items()}
    curves = result["curves"]
    entry["curves"] = {key: [float(v) for v in curves[key]] for key in ("precision", "recall", "fmeasure")}
    return entry


def _cell(value: float | int | None, key: str) -> str:
    if key in ("images", "videos"):
        return str(value)
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def measure_columns(entries: dict[str, dict]) -> list[str]:
    """The measure keys any of ``entries`` has, in `MEASURE_KEYS` order (the summary five first)."""
    present = {key for entry in entries.values() for key in entry}
    return [key for key in MEASURE_KEYS if key in present]


def _groups(entries: dict[str, dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the two protocols: ours (the measures of `measure_columns`, then ``images``) and
    the paper's (the ``release`` keys)."""
    release = list(next(iter(entries.values())).get("release", {})) if entries else []
    ours = [*measure_columns(entries), "images"]
    groups = [(OURS_TITLE, ours, lambda entry: entry), (RELEASE_TITLE, release, lambda e: e.get("release", {}))]
    return [(title, ["Dataset", *keys], [[name, *(_cell(pick(entry).get(key), key) for key in keys)]
                                         for name, entry in entries.items()]) for title, keys, pick in groups if keys]


def format_table(entries: dict[str, dict]) -> str:
    """Plain-text tables, one row per dataset: PySODMetrics' protocol (its measures), then the paper's."""
    blocks = []
    for title, header, rows in _groups(entries):
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                           enumerate(zip(row, widths, strict=True))) for row in [header, *rows]]
        blocks.append("\n".join([title, *lines]))
    return "\n\n".join(blocks)


def markdown_table(entries: dict[str, dict]) -> str:
    """Markdown tables, one row per dataset: PySODMetrics' protocol (its measures), then the paper's."""
    blocks = []
    for title, header, rows in _groups(entries):
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        blocks.append("\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]))
    return "\n\n".join(blocks) + "\n"


def write_metrics(exp_dir: Path, task: str, entries: dict[str, dict]) -> dict[str, dict]:
    """Merge ``entries`` into ``<exp_dir>/metrics_<task>.json`` and rewrite ``metrics_<task>.md`` from the merged
    records, under one lock (`data.atomic.locked`): evaluations of other datasets writing into the same experiment
    at the same time (a SLURM array) keep each other's figures. Returns the merged records."""
    path = Path(exp_dir) / f"metrics_{task}.json"
    with locked(path):
        merged = merge_json(path, entries)
        write_bytes_atomic(Path(exp_dir) / f"metrics_{task}.md", markdown_table(merged).encode())
    return merged


def merge_json(path: Path, entries: dict[str, dict]) -> dict[str, dict]:
    """Replace the given datasets' records in the JSON file at ``path`` (keeping other datasets from earlier runs;
    an unreadable old file is replaced) and return the merged records. Not safe against another process doing the
    same at once: `write_metrics` holds the lock around it."""
    merged: dict[str, dict] = {}
    try:
        old = json.loads(Path(path).read_text())
        if isinstance(old, dict):
            merged = {name: entry for name, entry in old.items() if isinstance(entry, dict)}
    except (OSError, ValueError):
        pass
    merged.update(entries)
    write_json_atomic(path, merged)
    return merged


def save_curves(path: Path, title: str, curves: dict) -> None:
    """PNG of one method's curves: `draw_curves` with its E-measure curve and its best F-measure marked."""
    draw_curves(path, title, {"": curves})


def draw_curves(path: Path, title: str, methods: dict[str, dict]) -> None:
    """PNG with the precision-recall curves and the F-measure over the 256 thresholds (PySODMetrics' curve order:
    index 0 = threshold 255) of each method (label -> curves with ``precision``, ``recall``, ``fmeasure`` and, for
    one method, ``emeasure``), drawn with matplotlib's Agg canvas (no display, no global pyplot state). One method
    (label ''): its E-measure curve too and its best F-measure marked; several: each labelled with its max F."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    pr_axes, f_axes = figure.subplots(1, 2)
    single = len(methods) == 1 and "" in methods
    for label, curves in methods.items():
        fmeasure = np.asarray(curves["fmeasure"])
        thresholds = 255 - np.arange(len(fmeasure))
        best = int(np.argmax(fmeasure))
        pr_axes.plot(curves["recall"], curves["precision"], color="tab:blue" if single else None, label=label or None)
        f_axes.plot(thresholds, fmeasure, color="tab:red" if single else None,
                    label="F-measure (beta^2 = 0.3)" if single else f"{label} (max {fmeasure[best]:.4f})")
        if single:
            f_axes.plot(thresholds, curves["emeasure"], color="tab:green", linestyle="--", label="E-measure")
            f_axes.scatter([thresholds[best]], [fmeasure[best]], color="tab:red", zorder=3,
                           label=f"max F {fmeasure[best]:.4f} at {thresholds[best]}")
    pr_axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    f_axes.set(xlabel="Threshold (0-255)", ylabel="Score" if single else "F-measure (beta^2 = 0.3)", xlim=(0, 255),
               ylim=(0, 1.02), title="Over thresholds" if single else "F-measure over thresholds")
    f_axes.legend(loc="lower center", fontsize=None if single else "small")
    if not single:
        pr_axes.legend(loc="lower left", fontsize="small")
    for axes in (pr_axes, f_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
