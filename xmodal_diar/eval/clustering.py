"""Speaker-turn clustering: agglomerative clustering swept over its threshold, purity / coverage.

Purity and coverage are pyannote.metrics' ``DiarizationPurity`` and ``DiarizationCoverage``
with each turn a segment of its duration (:func:`turns_as_annotations`). With ``w_k`` the
weight (duration) of turn ``k`` and ``M[r, h] = Σ_{k: ref k = r, hyp k = h} w_k`` they are
(the speaker bootstrap reweights :func:`contingency` directly, see :func:`dominance`):

    purity   = Σ_h max_r M[r, h] / Σ M        (each cluster is mostly one speaker)
    coverage = Σ_r max_h M[r, h] / Σ M        (each speaker is mostly in one cluster)

Sweeping the stopping threshold of the hierarchy trades one for the other; the
operating point is where they are equal (Le & Odobez 2017 report clustering that way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from xmodal_diar.eval.bootstrap import item_weights

#: Linkages supported: ``average`` on cosine distance, ``centroid`` on the Euclidean
#: distance between centroids of L2-normalised embeddings.
LINKAGES = ("average", "centroid")


def linkage_matrix(embeddings: np.ndarray, method: str = "average") -> np.ndarray:
    """scipy hierarchy (``(N-1, 4)`` linkage matrix) of the L2-normalised embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"embeddings: expected (N >= 2, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings: NaN or infinite values")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"embeddings: {int((norm == 0).sum())} all-zero rows (cosine undefined)")
    x = x / norm
    if method == "average":
        return linkage(pdist(x, metric="cosine").clip(min=0.0), method="average")
    if method == "centroid":
        return linkage(x, method="centroid", metric="euclidean")
    raise ValueError(f"method: expected one of {LINKAGES}, got {method!r}")


def _checked(labels: Sequence, clusters: Sequence, weights: Optional[np.ndarray]):
    """``(labels, clusters, weights)`` as equal-length 1-D arrays (weights default 1, >= 0)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and clusters {clusters.shape}: expected two equal 1-D arrays")
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != labels.shape or (w < 0).any():
        raise ValueError(f"weights: expected {labels.shape} non-negative values")
    return labels, clusters, w


def contingency(labels: Sequence, clusters: Sequence, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """``M[r, h]``: total weight of turns of reference speaker ``r`` in cluster ``h``."""
    labels, clusters, w = _checked(labels, clusters, weights)
    _, r = np.unique(labels, return_inverse=True)
    _, h = np.unique(clusters, return_inverse=True)
    m = np.zeros((r.max() + 1, h.max() + 1))
    np.add.at(m, (r, h), w)
    return m


def purity_coverage(
    labels: Sequence, clusters: Sequence, weights: Optional[np.ndarray] = None
) -> tuple[float, float]:
    """``(purity, coverage)`` of a partition: pyannote.metrics' ``DiarizationPurity`` and
    ``DiarizationCoverage`` of the turns laid end to end (:func:`turns_as_annotations`),
    each turn lasting its weight (default 1; zero-weight turns are left out)."""
    from pyannote.metrics.diarization import DiarizationCoverage, DiarizationPurity

    labels, clusters, w = _checked(labels, clusters, weights)
    if w.sum() <= 0:
        raise ValueError("weights: total weight is zero, purity and coverage are undefined")
    keep = w > 0
    reference, hypothesis = turns_as_annotations(labels[keep], clusters[keep], w[keep])
    return float(DiarizationPurity()(reference, hypothesis)), float(DiarizationCoverage()(reference, hypothesis))


def _purity_coverage_of(m: np.ndarray) -> tuple[float, float]:
    total = m.sum()
    if total <= 0:
        raise ValueError("weights: total weight is zero, purity and coverage are undefined")
    return float(m.max(axis=0).sum() / total), float(m.max(axis=1).sum() / total)


def turns_as_annotations(labels: Sequence, clusters: Sequence, durations: Sequence[float], uri: str = "turns"):
    """Reference and hypothesis ``pyannote.core.Annotation`` with the turns laid end to end."""
    from pyannote.core import Annotation, Segment

    reference, hypothesis = Annotation(uri=uri), Annotation(uri=uri)
    t = 0.0
    for k, (r, h, d) in enumerate(zip(labels, clusters, durations)):
        segment = Segment(t, t + float(d))
        reference[segment, k] = str(r)
        hypothesis[segment, k] = str(h)
        t += float(d)
    return reference, hypothesis


@dataclass
class ClusteringCurve:
    """Purity and coverage of the flat partition at each threshold (increasing)."""

    thresholds: np.ndarray
    n_clusters: np.ndarray
    purity: np.ndarray
    coverage: np.ndarray
    partitions: list[np.ndarray] = field(repr=False)

    def operating_point(self) -> int:
        """Index where purity and coverage are closest (ties: the higher of the two minima)."""
        gap = np.abs(self.purity - self.coverage)
        best = np.flatnonzero(gap == gap.min())
        return int(best[np.argmax(np.minimum(self.purity, self.coverage)[best])])


def threshold_sweep(
    z: np.ndarray, labels: Sequence, weights: Optional[np.ndarray] = None
) -> ClusteringCurve:
    """Every distinct flat partition of the hierarchy ``z``, from singletons to one cluster.

    Thresholds are the merge heights (``fcluster(z, t, criterion="distance")``); the
    singleton partition is listed first at threshold ``-inf``.
    """
    n = len(z) + 1
    thresholds = [-np.inf]
    partitions = [np.arange(1, n + 1)]
    for t in np.unique(z[:, 2]):
        thresholds.append(float(t))
        partitions.append(fcluster(z, t, criterion="distance"))
    # the sweep reads the N - 1 partitions from the contingency matrix (the formulas of the
    # module docstring): pyannote.metrics re-crops annotations for every partition, which made
    # `pytest tests/test_eval_clustering.py --durations=3`'s bootstrap test take 26.7 s instead
    # of 1.6 s (2-core CPU machine, under load). The reported points use pyannote.metrics.
    scores = np.array([_purity_coverage_of(contingency(labels, p, weights)) for p in partitions])
    return ClusteringCurve(
        thresholds=np.array(thresholds),
        n_clusters=np.array([len(np.unique(p)) for p in partitions]),
        purity=scores[:, 0],
        coverage=scores[:, 1],
        partitions=partitions,
    )


@dataclass
class ClusteringResult:
    """Curve, equal-purity-coverage operating point and oracle-speaker-count partition."""

    curve: ClusteringCurve
    threshold: float
    purity: float
    coverage: float
    n_clusters: int
    oracle_purity: float
    oracle_coverage: float
    n_speakers: int
    partition: np.ndarray = field(repr=False)
    oracle_partition: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "purity": self.purity,
            "coverage": self.coverage,
            "n_clusters": self.n_clusters,
            "oracle_purity": self.oracle_purity,
            "oracle_coverage": self.oracle_coverage,
            "n_speakers": self.n_speakers,
        }


def evaluate_clustering(
    embeddings: np.ndarray,
    labels: Sequence,
    durations: Optional[Sequence[float]] = None,
    method: str = "average",
) -> ClusteringResult:
    """Cluster the turns, sweep the threshold, and cut at the oracle number of speakers.

    ``durations`` weight the turns as pyannote.metrics does (every turn counts 1 if omitted).
    """
    labels = np.asarray(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"labels: {len(labels)} labels for {len(embeddings)} embeddings")
    weights = None if durations is None else np.asarray(durations, dtype=np.float64)
    z = linkage_matrix(embeddings, method)
    curve = threshold_sweep(z, labels, weights)
    k = curve.operating_point()
    n_speakers = len(np.unique(labels))
    oracle = fcluster(z, n_speakers, criterion="maxclust")
    oracle_purity, oracle_coverage = purity_coverage(labels, oracle, weights)
    purity, coverage = purity_coverage(labels, curve.partitions[k], weights)
    return ClusteringResult(
        curve=curve,
        threshold=float(curve.thresholds[k]),
        purity=purity,
        coverage=coverage,
        n_clusters=int(curve.n_clusters[k]),
        oracle_purity=oracle_purity,
        oracle_coverage=oracle_coverage,
        n_speakers=n_speakers,
        partition=curve.partitions[k],
        oracle_partition=oracle,
    )


def turn_weights(labels: Sequence, durations: Optional[Sequence[float]], counts: Mapping) -> np.ndarray:
    """Bootstrap weights of the turns: duration (or 1) times how often the speaker was drawn."""
    w = item_weights(np.asarray(labels).tolist(), counts)
    return w if durations is None else w * np.asarray(durations, dtype=np.float64)


def dominance(labels: Sequence, clusters: Sequence, weights: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per turn: is its speaker the dominant speaker of its cluster (``pure``), is its cluster
    the dominant cluster of its speaker (``covered``)? The weighted means of these give
    purity and coverage; with dominance fixed on the full set (as DER fixes its speaker
    mapping) they are linear in speaker weights, which the speaker bootstrap needs:
    re-deciding the max on resampled speakers favours sets with fewer distinct speakers."""
    m = contingency(labels, clusters, weights)
    _, r = np.unique(np.asarray(labels), return_inverse=True)
    _, h = np.unique(np.asarray(clusters), return_inverse=True)
    return m.argmax(axis=0)[h] == r, m.argmax(axis=1)[r] == h


def clustering_report(
    embeddings: np.ndarray,
    labels: Sequence,
    durations: Optional[Sequence[float]] = None,
    method: str = "average",
    seed: int = 0,
    n_resamples: int = 1000,
) -> tuple[dict, ClusteringResult]:
    """:func:`evaluate_clustering` with speaker-bootstrap intervals of the operating-point and
    oracle purity / coverage (the partitions and their :func:`dominance` stay fixed;
    resampled speakers reweight the turns)."""
    from xmodal_diar.eval.bootstrap import speaker_bootstrap

    result = evaluate_clustering(embeddings, labels, durations, method)
    labels = np.asarray(labels)
    speakers = np.unique(labels).tolist()

    weights = None if durations is None else np.asarray(durations, dtype=np.float64)

    def interval(partition, which: int):
        correct = dominance(labels, partition, weights)[which].astype(np.float64)

        def stat(counts):
            w = turn_weights(labels, durations, counts)
            if w.sum() <= 0:
                raise ValueError("no turn left")
            return float(np.average(correct, weights=w))

        return speaker_bootstrap(stat, speakers, n_resamples=n_resamples, seed=seed).as_dict()

    figures = {
        "linkage": method,
        "threshold": result.threshold,
        "n_clusters": result.n_clusters,
        "purity": interval(result.partition, 0),
        "coverage": interval(result.partition, 1),
        "oracle_purity": interval(result.oracle_partition, 0),
        "oracle_coverage": interval(result.oracle_partition, 1),
        "n_speakers": result.n_speakers,
        "n_turns": int(len(labels)),
    }
    return figures, result
