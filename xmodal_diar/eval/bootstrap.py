"""Bootstrap confidence intervals over SPEAKERS (identities), not over trials.

Trials, turns and queries of one speaker are correlated; resampling them independently
understates the uncertainty of small test sets. Each bootstrap replicate draws ``S``
speakers with replacement from the ``S`` test speakers and recomputes the metric with
every item weighted by how often its speaker was drawn (a speaker drawn twice counts
twice, one not drawn counts zero). The interval is the percentile interval
``[q_{α/2}, q_{1-α/2}]`` of the replicates (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: Defaults of every report.
N_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ConfidenceInterval:
    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n_speakers: int

    def as_dict(self) -> dict:
        return {"value": self.estimate, "ci": [self.low, self.high]}

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def speaker_bootstrap(
    statistic: Callable[[Mapping[object, int]], float],
    speakers: Sequence,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``statistic`` over resampled ``speakers``.

    ``statistic(counts)`` receives ``{speaker: times drawn}`` (all speakers once gives the
    point estimate) and returns the metric recomputed with those weights. Replicates in
    which the metric is undefined (it raises ValueError, e.g. no non-target trial left)
    are skipped; the number kept is ``n_resamples`` of the result.
    """
    speakers = list(dict.fromkeys(speakers))
    if not speakers:
        raise ValueError("speakers: empty, nothing to resample")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples: must be >= 1, got {n_resamples}")
    estimate = float(statistic({s: 1 for s in speakers}))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        draw = rng.integers(0, len(speakers), size=len(speakers))
        counts = Counter(speakers[i] for i in draw.tolist())
        try:
            value = float(statistic(counts))
        except ValueError:
            continue
        if math.isfinite(value):
            values.append(value)
    if not values:
        return ConfidenceInterval(estimate, math.nan, math.nan, confidence, 0, len(speakers))
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(estimate, float(low), float(high), confidence, len(values), len(speakers))


class ItemSpeakers:
    """The speaker of each item, factorised once: bootstrap weights are then a gather."""

    def __init__(self, item_speakers: Sequence):
        self.speakers, self.codes = np.unique(np.asarray(item_speakers), return_inverse=True)

    def weights(self, counts: Mapping[object, int]) -> np.ndarray:
        """Weight of each item: how often its speaker was drawn."""
        per_speaker = np.array([counts.get(s, 0) for s in self.speakers.tolist()], dtype=np.float64)
        return per_speaker[self.codes]


def item_weights(item_speakers: Sequence, counts: Mapping[object, int]) -> np.ndarray:
    """Weight of each item: how often its speaker was drawn."""
    return ItemSpeakers(item_speakers).weights(counts)
