"""The measures an evaluation can report, by name (``--metrics``), and the accumulator computing a chosen set.

Names are PySODEvalToolkit's where it has one (mae, fm, em, sm, wfm, msiou, fmeasure, f1, precision, recall, iou,
dice, specificity, bif1, biprecision, birecall, biiou, bioa, bikappa), extended in the same pattern to every
PySODMetrics 1.6.2 measure; ``all`` is all of them. The summary five (mae, fm, em, sm, wfm; `SODMetrics`) are always
computed. `Extras` computes the others from the same `PreparedBatch` and gives, per dataset (or video), ``values``
(scalars) and ``curves`` (per-threshold means), from which `summarize` makes the reported keys: a thresholded
measure X gives maxX and meanX (the max and mean of its dataset curve) and adpX (adaptive threshold); a binary one
(``bi``: pred > 0.5, tp / fp / tn / fn summed over the dataset, PySODEvalToolkit's ``sample_based=False``) its name;
the others one value each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from Evaluation import fmeasurev2
from Evaluation.batch import PreparedBatch
from Evaluation.msiou import MSIoU

__all__ = ["MEASURES", "SUMMARY_FIVE", "Measure", "named_metrics", "parse_metrics", "Extras", "summarize",
           "summary_keys", "LOWER_IS_BETTER", "needs_images", "uncomputable"]


@dataclass(frozen=True)
class Measure:
    """A reportable measure: what it is (docs/measures.md), the paper it comes from, and its reported keys."""

    name: str
    what: str
    source: str
    keys: tuple[str, ...]


_HANDLERS = {  # name -> (handler class, options, what it measures)
    "fmeasure": (fmeasurev2.FmeasureHandler, {"beta": 0.3}, "F-measure, beta^2 = 0.3"),
    "f1": (fmeasurev2.FmeasureHandler, {"beta": 1.0}, "F1 score (Dice of the binarised map)"),
    "precision": (fmeasurev2.PrecisionHandler, {}, "precision tp / (tp + fp)"),
    "recall": (fmeasurev2.RecallHandler, {}, "recall, sensitivity, TPR: tp / (tp + fn)"),
    "iou": (fmeasurev2.IOUHandler, {}, "intersection over union tp / (tp + fp + fn)"),
    "dice": (fmeasurev2.DICEHandler, {}, "Dice 2 tp / (2 tp + fp + fn)"),
    "specificity": (fmeasurev2.SpecificityHandler, {}, "specificity, TNR: tn / (tn + fp)"),
    "ber": (fmeasurev2.BERHandler, {}, "balanced error rate 1 - (TPR + TNR) / 2"),
    "kappa": (fmeasurev2.KappaHandler, {}, "Cohen's kappa (PySODMetrics' formula)"),
    "oa": (fmeasurev2.OverallAccuracyHandler, {}, "overall accuracy (tp + tn) / all"),
    "fpr": (fmeasurev2.FPRHandler, {}, "false positive rate fp / (fp + tn)"),
}
_CONFUSION = "the confusion counts of the binarised map (PySODMetrics' FmeasureV2 handlers)"
_SI = "Li et al., Size-invariance Matters, ICML 2024"


def _table() -> dict[str, Measure]:
    table = {
        "mae": Measure("mae", "mean absolute error", "Perazzi et al., Saliency filters, CVPR 2012", ("MAE",)),
        "fm": Measure("fm", "F-measure (beta^2 = 0.3) over 256 thresholds and adaptive; the PR curves",
                      "Achanta et al., Frequency-tuned salient region detection, CVPR 2009",
                      ("maxF", "meanF", "adpF")),
        "wfm": Measure("wfm", "weighted F-measure", "Margolin et al., How to evaluate foreground maps?, CVPR 2014",
                       ("wF",)),
        "sm": Measure("sm", "S-measure (structure measure), alpha = 0.5",
                      "Fan et al., Structure-measure, ICCV 2017", ("Sm",)),
    }
    table["em"] = Measure("em", "E-measure (enhanced alignment) over 256 thresholds and adaptive",
                          "Fan et al., Enhanced-alignment Measure, IJCAI 2018", ("maxE", "meanE", "adpE"))
    for name, (_, _, what) in _HANDLERS.items():
        table[name] = Measure(name, f"{what}, over 256 thresholds and adaptive", _CONFUSION,
                              (f"max{name}", f"mean{name}", f"adp{name}"))
    for name, (_, _, what) in _HANDLERS.items():
        table[f"bi{name}"] = Measure(f"bi{name}", f"{what} of pred > 0.5, from the dataset's summed counts",
                                     _CONFUSION, (f"bi{name}",))
    table["msiou"] = Measure("msiou", "multi-scale IoU of the edges, over 257 thresholds and adaptive",
                             "Ahmadzadeh et al., Multiscale IOU, ICIP 2021", ("maxmsiou", "meanmsiou", "adpmsiou"))
    table["simae"] = Measure("simae", "size-invariant MAE (per object box)", _SI, ("simae",))
    for name, (_, _, what) in _HANDLERS.items():
        table[f"si{name}"] = Measure(f"si{name}", f"size-invariant {what} (per object box), over 256 thresholds "
                                     "and adaptive", _SI, (f"maxsi{name}", f"meansi{name}", f"adpsi{name}"))
    table["hce"] = Measure("hce", "human correction effort (control points to fix the map)",
                           "Qin et al., Highly Accurate Dichotomous Image Segmentation, ECCV 2022", ("hce",))
    table["cm"] = Measure("cm", "context measure", "Wang et al., Context-measure, arXiv 2512.07076, 2025", ("cm",))
    table["ccm"] = Measure("ccm", "camouflage context measure (needs the RGB images)",
                           "Wang et al., Context-measure, arXiv 2512.07076, 2025", ("ccm",))
    return table


MEASURES = _table()
# The summary five: `SODMetrics` computes them, every evaluation reports them (their keys: `SUMMARY_KEYS`).
SUMMARY_FIVE = ("mae", "fm", "wfm", "sm", "em")
LOWER_IS_BETTER = frozenset({"MAE", "simae", "hce", "bifpr", "biber", "adpfpr", "adpber", "adpsifpr", "adpsiber",
                             *(f"{kind}{name}" for kind in ("max", "mean") for name in ("fpr", "ber", "sifpr",
                                                                                         "siber"))})


def named_metrics(text: str | None) -> list[str]:
    """The words of ``--metrics`` as given (joined by ',' or '+'), lower-cased: ``all`` stays ``all``."""
    return [name.strip().lower() for name in (text or "").replace("+", ",").split(",") if name.strip()]


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``--metrics``: names joined by ',' or '+' (or ``all``) -> the names, in the table's order, the summary five
    always included. Raises ValueError naming an unknown one."""
    names = named_metrics(text)
    if "all" in names:
        return tuple(MEASURES)
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)}; choose from all, {', '.join(MEASURES)}")
    chosen = set(names) | set(SUMMARY_FIVE)
    return tuple(name for name in MEASURES if name in chosen)


def measures_markdown() -> str:
    """The table of every measure (name, reported keys, what it measures, source) as Markdown: docs/measures.md
    holds it between its ``generated`` markers (``make docs`` writes it; a test checks it is current)."""
    rows = [f"| `{m.name}` | {', '.join(m.keys)} | {m.what} | {m.source} |" for m in MEASURES.values()]
    return "\n".join(["| name | reports | what it measures | source |", "|---|---|---|---|", *rows]) + "\n"


def needs_images(names: tuple[str, ...]) -> bool:
    return "ccm" in names


def summary_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """The reported keys of ``names``, in order."""
    return tuple(key for name in names for key in MEASURES[name].keys)


def uncomputable(names: tuple[str, ...], gt: np.ndarray) -> tuple[str, str] | None:
    """``(measure names, why)`` when a measure of ``names`` has no value for the (H, W) uint8 GT map ``gt`` (the
    size-invariant ones on a GT without background), else None; checked before a map joins a batch."""
    size_invariant = [name for name in names if name.startswith("si")]
    if size_invariant:
        from Evaluation.size_invariance import NO_BACKGROUND, has_background

        if not has_background(gt):
            return ", ".join(size_invariant), NO_BACKGROUND
    return None


class Extras:
    """The chosen measures beyond the summary five, fed the same `PreparedBatch` (and, for ccm, the RGB images)."""

    def __init__(self, names: tuple[str, ...], device: torch.device | str = "cpu") -> None:
        self.names = tuple(name for name in names if name not in SUMMARY_FIVE)
        device = torch.device(device)
        gray = dict(with_dynamic=True, with_adaptive=True)
        binary = dict(with_dynamic=False, with_adaptive=False, with_binary=True, sample_based=False)
        handlers = {}
        for name in self.names:
            base = name[2:] if name.startswith("bi") and name[2:] in _HANDLERS else name
            if base in _HANDLERS:
                cls, options, _ = _HANDLERS[base]
                handlers[name] = cls(**(binary if base != name else gray), **options)
        self.confusion = fmeasurev2.FmeasureV2(handlers, device) if handlers else None
        si = {name: _HANDLERS[name[2:]][0](**gray, **_HANDLERS[name[2:]][1]) for name in self.names
              if name.startswith("si") and name[2:] in _HANDLERS}
        import Evaluation  # the measures needing SciPy or more OpenCV are loaded only when asked for

        self.size_invariant = Evaluation.SizeInvarianceFmeasureV2(si, device, keep_maps=False) if si else None
        makers = {"msiou": lambda: MSIoU(True, True, device=device),
                  "simae": lambda: Evaluation.SizeInvarianceMAE(device),
                  "hce": lambda: Evaluation.HumanCorrectionEffortMeasure(device=device),
                  "cm": lambda: Evaluation.ContextMeasure(device=device),
                  "ccm": lambda: Evaluation.CamouflageContextMeasure(device=device)}
        self.others = {name: make() for name, make in makers.items() if name in self.names}

    def update(self, batch: PreparedBatch, images: list[np.ndarray] | None = None) -> None:
        for measure in (self.confusion, self.size_invariant):
            if measure is not None:
                measure.update(batch)
        for name, measure in self.others.items():
            if name == "ccm":
                measure.update(batch, images)
            else:
                measure.update(batch)

    def merge(self, other: Extras) -> None:
        for mine, theirs in ((self.confusion, other.confusion), (self.size_invariant, other.size_invariant)):
            if mine is not None:
                mine.merge(theirs)
        for name, measure in self.others.items():
            measure.merge(other.others[name])

    def results(self) -> dict:
        """``{'values': {key: float}, 'curves': {name: (256,) or (257,)}}`` over the maps so far."""
        values: dict[str, float] = {}
        curves: dict[str, np.ndarray] = {}
        for measure in (self.confusion, self.size_invariant):
            if measure is None:
                continue
            for name, result in measure.get_results().items():
                if "dynamic" in result:
                    curves[name] = np.asarray(result["dynamic"], dtype=np.float64)
                if "adaptive" in result:
                    values[f"adp{name}"] = float(result["adaptive"])
                if "binary" in result:
                    values[name] = float(result["binary"])
        for name, measure in self.others.items():
            result = measure.get_results()
            if name == "msiou":
                curves["msiou"] = np.asarray(result["dynamic"], dtype=np.float64)
                values["adpmsiou"] = float(result["adaptive"])
            else:
                values[name] = float(result[next(iter(result))])
        return {"values": values, "curves": curves}


def summarize(results: dict) -> dict[str, float]:
    """Reported keys from `Extras.results` (or their average over videos): the values, and max / mean of each
    curve."""
    out = dict(results["values"])
    for name, curve in results["curves"].items():
        out[f"max{name}"] = float(np.max(curve))
        out[f"mean{name}"] = float(np.mean(curve))
    return out
