"""Evaluation of saliency maps: torch measures equal to PySODMetrics 1.6.2, under its class names, constructor and
``step`` arguments and result dictionaries (``import Evaluation`` in place of ``import py_sod_metrics``), and the
``eval_sod.sh`` / ``eval_vsod.sh`` entry point (``python -m Evaluation``). Imports nothing from ``models/``."""

from Evaluation.batch import PreparedBatch, prepare_batch
from Evaluation.fmeasurev2 import (
    BERHandler,
    DICEHandler,
    FmeasureHandler,
    FmeasureV2,
    FPRHandler,
    IOUHandler,
    KappaHandler,
    OverallAccuracyHandler,
    PrecisionHandler,
    RecallHandler,
    SensitivityHandler,
    SpecificityHandler,
    TNRHandler,
    TPRHandler,
)
from Evaluation.metrics import (
    MAE,
    SUMMARY_KEYS,
    Emeasure,
    Fmeasure,
    Smeasure,
    SODMetrics,
    WeightedFmeasure,
    average_over_videos,
)
from Evaluation.msiou import MSIoU

# Imported on first use (they need SciPy's ndimage or more OpenCV): an evaluation of the summary five never loads them.
_LAZY = {"SizeInvarianceMAE": "size_invariance", "SizeInvarianceFmeasureV2": "size_invariance",
         "HumanCorrectionEffortMeasure": "hce", "ContextMeasure": "context", "CamouflageContextMeasure": "context"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"Evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'Evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

__all__ = ["MAE", "Emeasure", "Fmeasure", "PreparedBatch", "SODMetrics", "SUMMARY_KEYS", "Smeasure",
           "WeightedFmeasure", "average_over_videos", "prepare_batch", "FmeasureV2", "BERHandler", "DICEHandler",
           "FmeasureHandler", "FPRHandler", "IOUHandler", "KappaHandler", "OverallAccuracyHandler",
           "PrecisionHandler", "RecallHandler", "SensitivityHandler", "SpecificityHandler", "TNRHandler",
           "TPRHandler", "MSIoU", "SizeInvarianceMAE", "SizeInvarianceFmeasureV2",
           "HumanCorrectionEffortMeasure", "ContextMeasure", "CamouflageContextMeasure"]
