"""Evaluation of saliency maps: torch measures equal to PySODMetrics 1.6.2, under its class names, constructor and
``step`` arguments and result dictionaries (``import Evaluation`` in place of ``import py_sod_metrics``), and the
``eval_sod.sh`` / ``eval_vsod.sh`` entry point (``python -m Evaluation``). Imports nothing from ``models/``."""

from Evaluation.context import CamouflageContextMeasure, ContextMeasure
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
from Evaluation.hce import HumanCorrectionEffortMeasure
from Evaluation.metrics import (
    MAE,
    SUMMARY_KEYS,
    Emeasure,
    Fmeasure,
    PreparedBatch,
    Smeasure,
    SODMetrics,
    WeightedFmeasure,
    average_over_videos,
    prepare_batch,
)
from Evaluation.msiou import MSIoU
from Evaluation.size_invariance import SizeInvarianceFmeasureV2, SizeInvarianceMAE

__all__ = ["MAE", "Emeasure", "Fmeasure", "PreparedBatch", "SODMetrics", "SUMMARY_KEYS", "Smeasure",
           "WeightedFmeasure", "average_over_videos", "prepare_batch", "FmeasureV2", "BERHandler", "DICEHandler",
           "FmeasureHandler", "FPRHandler", "IOUHandler", "KappaHandler", "OverallAccuracyHandler",
           "PrecisionHandler", "RecallHandler", "SensitivityHandler", "SpecificityHandler", "TNRHandler",
           "TPRHandler", "MSIoU", "SizeInvarianceMAE", "SizeInvarianceFmeasureV2",
           "HumanCorrectionEffortMeasure", "ContextMeasure", "CamouflageContextMeasure"]
