"""Evaluation of saliency maps: torch metrics equal to PySODMetrics 1.6.2 and the ``eval_sod.sh`` / ``eval_vsod.sh``
entry point (``python -m Evaluation``). Imports nothing from ``models/``."""

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

__all__ = ["MAE", "Emeasure", "Fmeasure", "PreparedBatch", "SODMetrics", "SUMMARY_KEYS", "Smeasure",
           "WeightedFmeasure", "average_over_videos", "prepare_batch"]
