"""Evaluation: classification metrics with bootstrap CIs, decision curves, figures and the report.

Pure numpy / scikit-learn / matplotlib (no torch), so it runs wherever predictions are available.
"""

from reactkd.evaluation.dca import (
    decision_curves,
    net_benefit,
    treat_all_net_benefit,
    treat_none_net_benefit,
)
from reactkd.evaluation.metrics import (
    attention_share,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
)
from reactkd.evaluation.report import write_evaluation_report

__all__ = [
    "attention_share",
    "brier_score",
    "classification_metrics",
    "decision_curves",
    "expected_calibration_error",
    "net_benefit",
    "reliability_bins",
    "treat_all_net_benefit",
    "treat_none_net_benefit",
    "write_evaluation_report",
]
