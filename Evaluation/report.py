"""Outputs of an evaluation: the printed table, ``metrics_<task>.json`` (merged with earlier runs, per dataset), a
Markdown table, and one PNG per dataset with the precision-recall curve and the F-measure-over-threshold curve.
Every file is written to a temporary name first and then renamed, so nothing is left half-written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from data.atomic import atomic_path, write_json_atomic
from Evaluation.metrics import SUMMARY_KEYS

COLUMNS = (*SUMMARY_KEYS, "images")
JSON_KEYS = (*SUMMARY_KEYS, "images", "videos", "resized", "missing", "sm_nan")


def json_entry(result: dict) -> dict:
    """The JSON record of a dataset result: metrics (NaN as null), counts; curves are left out."""
    entry = {}
    for key in JSON_KEYS:
        if key in result:
            value = result[key]
            entry[key] = int(value) if key not in SUMMARY_KEYS else (None if math.isnan(value) else float(value))
    return entry


def _cell(value: float | int | None, key: str) -> str:
    if key in ("images", "videos"):
        return str(value)
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def format_table(entries: dict[str, dict]) -> str:
    """Plain-text table, one row per dataset, columns `COLUMNS`."""
    rows = [["Dataset", *COLUMNS]]
    rows += [[name, *(_cell(entry.get(key), key) for key in COLUMNS)] for name, entry in entries.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))) for row in rows)


def markdown_table(entries: dict[str, dict]) -> str:
    """Markdown table, one row per dataset, columns `COLUMNS`."""
    lines = ["| Dataset | " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    lines += ["| " + " | ".join([name, *(_cell(entry.get(key), key) for key in COLUMNS)]) + " |"
              for name, entry in entries.items()]
    return "\n".join(lines) + "\n"


def merge_json(path: Path, entries: dict[str, dict]) -> dict[str, dict]:
    """Replace the given datasets' records in the JSON file at ``path`` (keeping other datasets from earlier runs;
    an unreadable old file is replaced) and return the merged records."""
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
    """PNG with the precision-recall curve and the F-measure over the 256 thresholds (PySODMetrics' curve order:
    index 0 = threshold 255), drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    pr_axes, f_axes = figure.subplots(1, 2)
    pr_axes.plot(curves["recall"], curves["precision"], color="tab:blue")
    pr_axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    thresholds = 255 - np.arange(len(curves["fmeasure"]))
    best = int(np.argmax(curves["fmeasure"]))
    f_axes.plot(thresholds, curves["fmeasure"], color="tab:red", label="F-measure (beta^2 = 0.3)")
    f_axes.plot(thresholds, curves["emeasure"], color="tab:green", linestyle="--", label="E-measure")
    f_axes.scatter([thresholds[best]], [curves["fmeasure"][best]], color="tab:red", zorder=3,
                   label=f"max F {curves['fmeasure'][best]:.4f} at {thresholds[best]}")
    f_axes.set(xlabel="Threshold (0-255)", ylabel="Score", xlim=(0, 255), ylim=(0, 1.02), title="Over thresholds")
    f_axes.legend(loc="lower center")
    for axes in (pr_axes, f_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
