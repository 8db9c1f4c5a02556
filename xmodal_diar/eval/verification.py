"""Speaker verification from embeddings: trial lists, cosine scoring, AS-norm, EER, minDCF, DET.

Definitions (NIST SRE / VoxCeleb conventions)
---------------------------------------------
For a threshold ``θ`` (accept when ``score >= θ``):

- ``P_miss(θ)`` = fraction of target trials rejected, ``P_fa(θ)`` = fraction of
  non-target trials accepted; the DET curve is ``(P_fa, P_miss)`` over all ``θ``.
- **EER**: the rate where the piecewise-linear DET (ROC) curve crosses
  ``P_miss = P_fa`` (linear interpolation between the two operating points that
  bracket the crossing, as VoxCeleb's ``brentq(1 - x - interp1d(fpr, tpr)(x))``).
- **minDCF**: ``min_θ [C_miss P_miss(θ) p + C_fa P_fa(θ) (1 - p)] / min(C_miss p, C_fa (1 - p))``
  with ``C_miss = C_fa = 1`` and ``p = p_target`` (0.01 and 0.05 here): 1.0 is the cost
  of the best trivial system (always reject / always accept).

Trials may carry weights (used by the speaker bootstrap, :mod:`xmodal_diar.eval.bootstrap`);
the rates are then weighted fractions (``sklearn.metrics.roc_curve(sample_weight=...)``).

The operating points come from scikit-learn's ROC. SpeechBrain's
``speechbrain.utils.metric_stats.EER``/``minDCF`` give the same figures (EER within one
operating-point step, minDCF equal; ``tests/test_eval_verification.py``) but take no
trial weights, and its EER loops in Python over its 2N candidate thresholds (O(N²)),
too slow for 1000 bootstrap resamples of thousands of trials. SpeechBrain's
``EER`` does give the threshold shipped with exported models
(:mod:`xmodal_diar.training.calibration`), as its decision rule is ``SpeakerRecognition``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import sklearn.metrics

from xmodal_diar.eval.bootstrap import item_weights

#: p_target values of the two reported minDCF operating points.
P_TARGETS = (0.01, 0.05)


@dataclass(frozen=True)
class Trials:
    """A trial list over ``N`` embeddings: pairs ``(enrol[k], test[k])`` of row indices."""

    enrol: np.ndarray
    test: np.ndarray
    target: np.ndarray  # bool: same speaker

    def __len__(self) -> int:
        return len(self.target)

    @property
    def n_target(self) -> int:
        return int(self.target.sum())

    @property
    def n_nontarget(self) -> int:
        return int((~self.target).sum())


def _as_labels(labels: Sequence) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D sequence of speaker labels, got shape {labels.shape}")
    return labels


def all_trials(labels: Sequence) -> Trials:
    """Every unordered pair ``i < j`` of the ``N`` items (``N (N - 1) / 2`` trials)."""
    labels = _as_labels(labels)
    if len(labels) < 2:
        raise ValueError(f"labels: need at least 2 items to make trials, got {len(labels)}")
    i, j = np.triu_indices(len(labels), k=1)
    return Trials(i, j, labels[i] == labels[j])


def balanced_trials(labels: Sequence, per_speaker: int, seed: int = 0) -> Trials:
    """Sampled trials, balanced per speaker.

    For every speaker ``s``: ``per_speaker`` target pairs drawn without replacement from
    the pairs of ``s``'s items (all of them when ``s`` has fewer) and as many non-target
    pairs ``(item of s, item of another speaker)``, drawn uniformly. Duplicate pairs are
    removed. Seeded with ``numpy.random.default_rng(seed)``.
    """
    labels = _as_labels(labels)
    if per_speaker < 1:
        raise ValueError(f"per_speaker: must be >= 1, got {per_speaker}")
    speakers = np.unique(labels)
    if len(speakers) < 2:
        raise ValueError(f"labels: need at least 2 speakers for non-target trials, got {len(speakers)}")
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    for s in speakers:
        own = np.flatnonzero(labels == s)
        other = np.flatnonzero(labels != s)
        a, b = np.triu_indices(len(own), k=1)
        take = rng.permutation(len(a))[:per_speaker]
        pairs.update(zip(own[a[take]].tolist(), own[b[take]].tolist()))
        n_non = max(len(take), 1)
        enrol = rng.choice(own, size=n_non)
        test = rng.choice(other, size=n_non)
        pairs.update((min(e, t), max(e, t)) for e, t in zip(enrol.tolist(), test.tolist()))
    enrol, test = np.array(sorted(pairs)).T
    return Trials(enrol, test, labels[enrol] == labels[test])


def normalise_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float64), with a clear error for what cosine cannot score."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name}: expected (N >= 1, D) embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: {int((~np.isfinite(x)).sum())} NaN or infinite values")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{name}: {int((norm == 0).sum())} all-zero embeddings (cosine undefined)")
    return x / norm


def cosine_scores(embeddings: np.ndarray, trials: Trials) -> np.ndarray:
    """``cos(x_enrol, x_test)`` for every trial."""
    x = normalise_rows(embeddings, "embeddings")
    return np.einsum("kd,kd->k", x[trials.enrol], x[trials.test])


def as_norm(
    embeddings: np.ndarray, trials: Trials, scores: np.ndarray, cohort: np.ndarray, top_k: int = 200
) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm, Matějka et al. 2017).

    ``s' = ½ [(s - μ_e)/σ_e + (s - μ_t)/σ_t]`` where ``μ_e, σ_e`` are the mean and std of
    the ``top_k`` highest cosine scores of the enrol embedding against the ``cohort``
    (impostor embeddings, disjoint from the test speakers), likewise for the test side.
    """
    x = normalise_rows(embeddings, "embeddings")
    c = normalise_rows(cohort, "cohort")
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"cohort: dimension {c.shape[1]} differs from the embeddings' {x.shape[1]}")
    k = min(top_k, len(c))
    if k < 2:
        raise ValueError(f"cohort: needs at least 2 embeddings, got {len(c)}")
    top = -np.sort(-(x @ c.T), axis=1)[:, :k]
    mu, sigma = top.mean(axis=1), top.std(axis=1) + 1e-12
    e, t = trials.enrol, trials.test
    return 0.5 * ((scores - mu[e]) / sigma[e] + (scores - mu[t]) / sigma[t])


@dataclass(frozen=True)
class DETCurve:
    """Operating points ``(P_fa, P_miss)`` for decreasing thresholds (accept if score >= θ)."""

    false_alarm: np.ndarray
    miss: np.ndarray
    thresholds: np.ndarray


def _check_scores(scores: np.ndarray, target: np.ndarray, weights: Optional[np.ndarray]):
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target, dtype=bool)
    if scores.shape != target.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and target {target.shape}: expected two equal 1-D arrays")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores: {int((~np.isfinite(scores)).sum())} NaN or infinite scores")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != scores.shape or (weights < 0).any():
            raise ValueError(f"weights: expected {scores.shape} non-negative values")
        pos, neg = weights[target].sum(), weights[~target].sum()
    else:
        pos, neg = target.sum(), (~target).sum()
    if pos <= 0 or neg <= 0:
        raise ValueError(
            f"need both target and non-target trials (got {pos:g} target, {neg:g} non-target)"
        )
    return scores, target, weights


def det_curve(scores: np.ndarray, target: np.ndarray, weights: Optional[np.ndarray] = None) -> DETCurve:
    """Every operating point of the scores, from 'reject all' to 'accept all'."""
    scores, target, weights = _check_scores(scores, target, weights)
    fpr, tpr, thr = sklearn.metrics.roc_curve(target, scores, sample_weight=weights, drop_intermediate=False)
    return DETCurve(false_alarm=fpr, miss=1.0 - tpr, thresholds=thr)


def equal_error_rate(scores: np.ndarray, target: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """EER: crossing of the linearly interpolated DET curve with ``P_miss = P_fa``."""
    curve = det_curve(scores, target, weights)
    fa, miss = curve.false_alarm, curve.miss
    # fa increases, miss decreases along the curve: find the first point with fa >= miss.
    k = int(np.argmax(fa >= miss))
    if k == 0:
        return float(fa[0])
    # segment (fa[k-1], miss[k-1]) -> (fa[k], miss[k]); solve fa(t) = miss(t).
    d0 = miss[k - 1] - fa[k - 1]
    d1 = miss[k] - fa[k]
    t = d0 / (d0 - d1)
    return float(fa[k - 1] + t * (fa[k] - fa[k - 1]))


def min_dcf(
    scores: np.ndarray,
    target: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    weights: Optional[np.ndarray] = None,
) -> float:
    """Normalised minimum detection cost (see the module docstring)."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target: must be in (0, 1), got {p_target}")
    curve = det_curve(scores, target, weights)
    cost = c_miss * curve.miss * p_target + c_fa * curve.false_alarm * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


@dataclass
class VerificationResult:
    """Figures of one trial list (one duration bucket)."""

    eer: float
    min_dcf: dict[float, float]
    n_trials: int
    n_target: int
    n_nontarget: int
    curve: DETCurve = field(repr=False)

    def as_dict(self) -> dict:
        out = {
            "eer": self.eer,
            **{f"min_dcf_{p:g}": v for p, v in self.min_dcf.items()},
            "n_trials": self.n_trials,
            "n_target": self.n_target,
            "n_nontarget": self.n_nontarget,
        }
        return out


def evaluate_scores(
    scores: np.ndarray, target: np.ndarray, p_targets: Sequence[float] = P_TARGETS
) -> VerificationResult:
    """EER, minDCF at each ``p_targets`` and the DET curve of one set of scored trials."""
    target = np.asarray(target, dtype=bool)
    return VerificationResult(
        eer=equal_error_rate(scores, target),
        min_dcf={p: min_dcf(scores, target, p_target=p) for p in p_targets},
        n_trials=len(target),
        n_target=int(target.sum()),
        n_nontarget=int((~target).sum()),
        curve=det_curve(scores, target),
    )


def trial_weights(trials: Trials, labels: Sequence, speaker_counts: Mapping) -> np.ndarray:
    """Bootstrap weight of each trial given how often each speaker was drawn.

    A trial belongs half to each of its two speakers: ``w = (n[spk_enrol] + n[spk_test]) / 2``
    (``n[spk]`` for a target trial), so that every trial has expected weight 1.
    """
    n = item_weights(_as_labels(labels).tolist(), speaker_counts)
    return 0.5 * (n[trials.enrol] + n[trials.test])


def verification_report(
    embeddings: np.ndarray,
    labels: Sequence,
    per_speaker: Optional[int] = None,
    seed: int = 0,
    cohort: Optional[np.ndarray] = None,
    top_k: int = 200,
    n_resamples: int = 1000,
    p_targets: Sequence[float] = P_TARGETS,
) -> tuple[dict, VerificationResult]:
    """Trials (all pairs, or ``per_speaker`` balanced ones), cosine scores (AS-norm when a
    ``cohort`` is given), EER and minDCF with speaker-bootstrap intervals.

    Returns the JSON-ready figures and the :class:`VerificationResult` (DET curve included).
    """
    from xmodal_diar.eval.bootstrap import speaker_bootstrap

    labels = _as_labels(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"labels: {len(labels)} labels for {len(embeddings)} embeddings")
    trials = all_trials(labels) if per_speaker is None else balanced_trials(labels, per_speaker, seed)
    scores = cosine_scores(embeddings, trials)
    if cohort is not None:
        scores = as_norm(embeddings, trials, scores, cohort, top_k)
    result = evaluate_scores(scores, trials.target, p_targets)
    speakers = np.unique(labels).tolist()

    def interval(fn):
        stat = lambda counts: fn(scores, trials.target, weights=trial_weights(trials, labels, counts))  # noqa: E731
        return speaker_bootstrap(stat, speakers, n_resamples=n_resamples, seed=seed).as_dict()

    figures = {
        "eer": interval(equal_error_rate),
        **{f"min_dcf_{p:g}": interval(lambda s, t, weights, p=p: min_dcf(s, t, p, weights=weights)) for p in p_targets},
        "n_trials": len(trials),
        "n_target": trials.n_target,
        "n_nontarget": trials.n_nontarget,
        "n_utterances": int(len(labels)),
        "n_speakers": len(speakers),
        "score": "cosine" + (f" + AS-norm (top {min(top_k, len(cohort))} of {len(cohort)} cohort)" if cohort is not None else ""),
    }
    return figures, result
