"""Evaluation toolkit: verification, turn clustering, diarization and cross-modal matching.

Every headline figure comes with a bootstrap interval over speakers
(:mod:`~xmodal_diar.eval.bootstrap`); verification and clustering are broken down by
turn duration (middle crops of 0.5, 1, 2, 4 s and natural lengths). The command line
front end is ``xmodal-diar evaluate verification|clustering|diarization|crossmodal``.
"""

from xmodal_diar.eval.bootstrap import ConfidenceInterval, speaker_bootstrap
from xmodal_diar.eval.clustering import (
    ClusteringCurve,
    ClusteringResult,
    clustering_report,
    evaluate_clustering,
    purity_coverage,
)
from xmodal_diar.eval.crossmodal import evaluate_crossmodal
from xmodal_diar.eval.diarization import DiarizationReport, evaluate_diarization, load_rttms, load_uems, protocol_references
from xmodal_diar.eval.verification import (
    DETCurve,
    Trials,
    all_trials,
    as_norm,
    balanced_trials,
    cosine_scores,
    det_curve,
    equal_error_rate,
    min_dcf,
    verification_report,
)

__all__ = [
    "ClusteringCurve",
    "ClusteringResult",
    "ConfidenceInterval",
    "DETCurve",
    "DiarizationReport",
    "Trials",
    "all_trials",
    "as_norm",
    "balanced_trials",
    "clustering_report",
    "cosine_scores",
    "det_curve",
    "equal_error_rate",
    "evaluate_clustering",
    "evaluate_crossmodal",
    "evaluate_diarization",
    "load_rttms",
    "load_uems",
    "min_dcf",
    "protocol_references",
    "purity_coverage",
    "speaker_bootstrap",
    "verification_report",
]
