"""Calibration of a face embedder: when are two faces the same person, and how sure is that?

A face embedder gives unit vectors; two faces (or two face tracks, through their mean
embeddings) are at cosine distance ``d = 1 - cos(a, b)``. Its calibration is a logistic
model of the same-identity probability (Platt scaling, Platt 1999) with equal priors:

    LLR(d) = scale * (threshold - d)          (log-likelihood ratio, same vs different)
    P(same | d) = sigmoid(LLR(d))

``threshold`` is the decision threshold (``P = 0.5``), ``scale`` how fast the evidence
grows away from it. Both are fitted (:func:`fit_calibration`, class-balanced logistic
regression) on same/different pairs of real faces by ``python -m
xmodal_diar.faces.calibrate``, which prints the table of the faces README. Each embedder
declares its own (``FaceEmbedder.calibration``): a fixed cosine threshold means nothing
across embedders (dlib's 128-D descriptors put different people 0.09-0.20 apart, so the
old 0.3 merged everyone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["FaceCalibration", "fit_calibration", "equal_error_rate", "cosine_distances"]


@dataclass(frozen=True)
class FaceCalibration:
    """Same-identity decision threshold and score scale of a face embedder (cosine distance)."""

    threshold: float  #: cosine distance at which P(same) = 0.5
    scale: float  #: log-odds per unit of cosine distance (> 0)
    source: str = ""  #: what it was measured on (the command and data)

    def __post_init__(self):
        if not self.scale > 0 or not 0.0 <= self.threshold <= 2.0:
            raise ValueError(f"face calibration needs scale > 0 and threshold in [0, 2], got {self}")

    def llr(self, distance) -> np.ndarray:
        """Log-likelihood ratio ``scale * (threshold - d)`` of "same person" at cosine distance ``d``."""
        return self.scale * (self.threshold - np.asarray(distance, dtype=np.float64))

    def probability(self, distance) -> np.ndarray:
        """``P(same | d) = sigmoid(LLR(d))`` (equal priors)."""
        return 1.0 / (1.0 + np.exp(-self.llr(distance)))

    def evidence(self, distance) -> np.ndarray:
        """``2 P(same | d) - 1 = tanh(LLR / 2)`` in (-1, 1): +1 surely the same, -1 surely not."""
        return np.tanh(0.5 * self.llr(distance))


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` cosine distances between rows (any norm)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def fit_calibration(same: Sequence[float], different: Sequence[float], source: str = "") -> FaceCalibration:
    """Class-balanced logistic regression of "same" on the cosine distance, Platt's targets.

    Minimises the cross-entropy ``mean_same CE(t+, P) + mean_diff CE(t-, P)`` over
    ``(threshold, scale)`` (scipy), with Platt's (1999) smoothed targets
    ``t+ = (N+ + 1) / (N+ + 2)`` and ``t- = 1 / (N- + 2)``: real faces are often perfectly
    separated, where plain targets would send the scale to infinity (hard decisions
    again). Class balancing keeps the threshold from being pulled by the many more
    different-person pairs.
    """
    from scipy.optimize import minimize

    same = np.asarray(same, dtype=np.float64)
    different = np.asarray(different, dtype=np.float64)
    if len(same) < 2 or len(different) < 2:
        raise ValueError(f"calibration needs at least 2 same and 2 different pairs, got {len(same)} and {len(different)}")

    t_same = (len(same) + 1.0) / (len(same) + 2.0)
    t_diff = 1.0 / (len(different) + 2.0)

    def cross_entropy(target, llr):  # -t log sigmoid(llr) - (1 - t) log sigmoid(-llr)
        return np.mean(target * np.logaddexp(0.0, -llr) + (1.0 - target) * np.logaddexp(0.0, llr))

    def loss(params):
        threshold, log_scale = params
        scale = np.exp(log_scale)
        return cross_entropy(t_same, scale * (threshold - same)) + cross_entropy(t_diff, scale * (threshold - different))

    start = [0.5 * (np.median(same) + np.median(different)), np.log(10.0)]
    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    threshold, log_scale = result.x
    return FaceCalibration(float(np.clip(threshold, 0.0, 2.0)), float(np.exp(log_scale)), source)


def equal_error_rate(same: Sequence[float], different: Sequence[float]) -> float:
    """EER of the distance as a same-person detector (scikit-learn's ROC)."""
    from sklearn.metrics import roc_curve

    scores = -np.concatenate([np.asarray(same, float), np.asarray(different, float)])
    labels = np.concatenate([np.ones(len(same)), np.zeros(len(different))])
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    k = int(np.argmin(np.abs(fnr - fpr)))
    return float(0.5 * (fpr[k] + fnr[k]))
