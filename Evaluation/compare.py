"""Comparing methods: one table per protocol with the best and second-best value of each column marked (Markdown,
CSV, LaTeX), and the precision-recall and F-measure curves of all methods on one figure per dataset.

The figures come from each experiment's ``metrics_<task>.json`` (written by ``python -m Evaluation sod|vsod``); the
``__main__`` module evaluates first where an experiment lacks a dataset. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

from data.atomic import write_bytes_atomic
from Evaluation.inputs import EvaluationError
from Evaluation.measures import LOWER_IS_BETTER
from Evaluation.metrics import SUMMARY_KEYS
from Evaluation.report import draw_curves

__all__ = ["PROTOCOLS", "comparison_tables", "write_comparison", "draw_comparison"]

# protocol -> the title of its tables
PROTOCOLS = {"pysodmetrics": "PySODMetrics protocol",
             "paper": "Paper's protocol (the authors' scripts, docs/design.md §7.3)"}


def _figures(entry: dict, protocol: str, keys: tuple[str, ...]) -> dict[str, float | None]:
    if protocol == "paper":
        return dict(entry.get("release", {}))
    return {key: entry.get(key) for key in keys}


def comparison_tables(metrics: dict[str, dict[str, dict]], datasets: list[str],
                      keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict]:
    """Per protocol: ``{'columns': [(dataset, metric)], 'rows': {method: [value or None]}, 'rank': {method: [1, 2
    or 0]}}`` from ``metrics`` (method -> dataset -> JSON entry); rank 1 marks a column's best value, 2 the
    second best (lower is better for MAE, HCE and the error rates, higher for the others; ties share the rank).
    The PySODMetrics table's columns are the measure ``keys`` (default: the summary five's)."""
    tables = {}
    for protocol in PROTOCOLS:
        first = {name: _figures(metrics[next(iter(metrics))][name], protocol, keys) for name in datasets}
        columns = [(name, key) for name in datasets for key in first[name]]
        rows = {method: [_figures(entries[name], protocol, keys).get(key) for name, key in columns]
                for method, entries in metrics.items()}
        ranks = {method: [0] * len(columns) for method in rows}
        for index, (_, key) in enumerate(columns):
            values = sorted({v for v in (row[index] for row in rows.values()) if v is not None and not math.isnan(v)},
                            reverse=key not in LOWER_IS_BETTER)
            for method, row in rows.items():
                if row[index] is not None and row[index] in values[:2]:
                    ranks[method][index] = values.index(row[index]) + 1
        tables[protocol] = {"columns": columns, "rows": rows, "rank": ranks}
    return tables


def _cell(value: float | None, rank: int, style: str) -> str:
    text = "-" if value is None or math.isnan(value) else f"{value:.4f}"
    if rank == 0 or text == "-":
        return text
    marks = {"markdown": ("**{}**", "_{}_"), "latex": ("\\textbf{{{}}}", "\\underline{{{}}}")}[style]
    return marks[rank - 1].format(text)


def write_comparison(tables: dict[str, dict], out: Path, task: str) -> list[Path]:
    """``compare_<task>.md`` (both tables), and per protocol ``compare_<task>_<protocol>.csv`` (plain values, then
    a 'best' and a 'second' row naming the method of each column) and ``.tex`` (a tabular, best in bold, second
    underlined). Returns the paths written."""
    paths, markdown = [], []
    for protocol, table in tables.items():
        header = ["Method", *(f"{name} {key}" for name, key in table["columns"])]
        lines = [f"**{PROTOCOLS[protocol]}**", "", "| " + " | ".join(header) + " |",
                 "|---" + "|---:" * len(table["columns"]) + "|"]
        lines += ["| " + " | ".join([method, *(_cell(v, r, "markdown") for v, r in zip(row, table["rank"][method],
                                                                                       strict=True))]) + " |"
                  for method, row in table["rows"].items()]
        markdown.append("\n".join(lines))
        csv = [",".join(header)] + [",".join([method, *("" if v is None else repr(v) for v in row)])
                                    for method, row in table["rows"].items()]
        for rank, label in ((1, "best"), (2, "second")):
            csv.append(",".join([label, *(" ".join(m for m in table["rows"] if table["rank"][m][i] == rank)
                                          for i in range(len(table["columns"])))]))
        datasets = list(dict.fromkeys(name for name, _ in table["columns"]))
        spans = " & ".join(f"\\multicolumn{{{sum(n == name for n, _ in table['columns'])}}}{{c}}{{{name}}}"
                           for name in datasets)
        tex = ["\\begin{tabular}{l" + "c" * len(table["columns"]) + "}", "\\hline", f"Method & {spans} \\\\",
               " & " + " & ".join(key for _, key in table["columns"]) + " \\\\", "\\hline"]
        tex += [" & ".join([method.replace("_", "\\_"), *(_cell(v, r, "latex") for v, r in zip(
            row, table["rank"][method], strict=True))]) + " \\\\" for method, row in table["rows"].items()]
        tex += ["\\hline", "\\end{tabular}"]
        for suffix, text in (("csv", csv), ("tex", tex)):
            paths.append(out / f"compare_{task}_{protocol}.{suffix}")
            write_bytes_atomic(paths[-1], ("\n".join(text) + "\n").encode())
    paths.insert(0, out / f"compare_{task}.md")
    write_bytes_atomic(paths[0], ("\n\n".join(markdown) + "\n").encode())
    return paths


def draw_comparison(metrics: dict[str, dict[str, dict]], dataset: str, path: Path) -> None:
    """One PNG: the precision-recall curves and the F-measure over the 256 thresholds of every method on
    ``dataset`` (PySODMetrics' curves, stored in each JSON entry; `Evaluation.report.draw_curves`)."""
    methods = {}
    for method, entries in metrics.items():
        curves = entries[dataset].get("curves")
        if not curves:
            raise EvaluationError(f"{method}: metrics of {dataset} have no curves (evaluate it again)")
        methods[method] = curves
    draw_curves(path, dataset, methods)
