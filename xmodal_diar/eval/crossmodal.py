"""Cross-modal voice/face tasks of Wang et al. 2020 (SIGIR), on embeddings in one space.

Similarity is the cosine of voice embedding ``v`` and face embedding ``f``.

- **Verification**: every (voice, face) pair is a trial, target when the identities
  match; ROC AUC (``sklearn.metrics.roc_auc_score``) and EER
  (:func:`xmodal_diar.eval.verification.equal_error_rate`).
- **1:N matching** (N = 2..10): a query of one modality, its identity's item of the other
  modality and N-1 items of N-1 other identities; correct when the true match scores
  highest (ties share the credit: 1/#tied). 1:2 in both directions (voice->faces,
  face->voices); chance is 1/N.
- **Retrieval**: each query ranks the whole gallery of the other modality; mean average
  precision (``sklearn.metrics.average_precision_score``) over queries, both directions.

Seen and unseen identities (in training or not) are evaluated apart: each split keeps
the queries AND the gallery items of its identities only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Optional, Sequence

import numpy as np
import sklearn.metrics

from xmodal_diar.eval.bootstrap import ItemSpeakers, speaker_bootstrap
from xmodal_diar.eval.verification import equal_error_rate, normalise_rows

MATCHING_SIZES = tuple(range(2, 11))


def cosine_matrix(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``(Q, G)`` cosine similarities."""
    q, g = normalise_rows(queries, "queries"), normalise_rows(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"queries ({q.shape[1]}-D) and gallery ({g.shape[1]}-D) are not in the same space: "
            "project them first (e.g. with the joint model's voice and face subnets)"
        )
    return q @ g.T


def matching_trials(
    query_labels: Sequence, gallery_labels: Sequence, n: int, n_trials: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(query index (T,), gallery indices (T, n))``, column 0 the true match.

    Queries are drawn uniformly among those whose identity has a gallery item; the n-1
    distractors come from n-1 distinct other identities. Seeded.
    """
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    identities = np.unique(g_labels)
    if n < 2:
        raise ValueError(f"n: 1:N matching needs N >= 2, got {n}")
    if len(identities) < n:
        raise ValueError(f"gallery: 1:{n} matching needs {n} identities, got {len(identities)}")
    g_index = np.searchsorted(identities, g_labels)  # identity index of each gallery item
    members = np.argsort(g_index, kind="stable")  # gallery items grouped by identity
    starts = np.searchsorted(g_index[members], np.arange(len(identities)))
    sizes = np.bincount(g_index, minlength=len(identities))
    candidates = np.flatnonzero(np.isin(q_labels, identities))
    if len(candidates) == 0:
        raise ValueError("queries: no query identity has an item in the gallery")
    rng = np.random.default_rng(seed)
    queries = rng.choice(candidates, size=n_trials)
    own = np.searchsorted(identities, q_labels[queries])
    # n-1 distinct other identities per trial: the n-1 smallest of random keys, own one excluded
    keys = rng.random((n_trials, len(identities)))
    keys[np.arange(n_trials), own] = np.inf
    picked = np.concatenate([own[:, None], np.argsort(keys, axis=1)[:, : n - 1]], axis=1)
    offsets = (rng.random(picked.shape) * sizes[picked]).astype(np.int64)
    gallery = members[starts[picked] + offsets]
    return queries, gallery


def matching_correct(similarity: np.ndarray, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Per-trial credit (1, 0, or 1/#tied) that the true match (column 0) scores highest."""
    s = similarity[queries[:, None], gallery]
    best = s.max(axis=1, keepdims=True)
    winners = (s == best).sum(axis=1)
    return np.where(s[:, 0] == best[:, 0], 1.0 / winners, 0.0)


def average_precisions(similarity: np.ndarray, query_labels: Sequence, gallery_labels: Sequence) -> np.ndarray:
    """Average precision of each query's ranking of the gallery (NaN: no relevant item)."""
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    out = np.full(len(q_labels), np.nan)
    for i, label in enumerate(q_labels.tolist()):
        relevant = g_labels == label
        if relevant.any():
            out[i] = sklearn.metrics.average_precision_score(relevant, similarity[i])
    return out


@dataclass
class _Items:
    """Per-item results of one split, weighted by identity for the bootstrap."""

    values: np.ndarray
    identities: ItemSpeakers

    def mean(self, counts=None) -> float:
        w = np.ones(len(self.values)) if counts is None else self.identities.weights(counts)
        if w.sum() <= 0:
            raise ValueError("no item left")
        return float(np.average(self.values, weights=w))


def evaluate_crossmodal(
    voice: np.ndarray,
    voice_labels: Sequence,
    face: np.ndarray,
    face_labels: Sequence,
    seen_identities: Optional[Collection] = None,
    n_trials: int = 2000,
    matching_sizes: Sequence[int] = MATCHING_SIZES,
    seed: int = 0,
    n_resamples: int = 1000,
) -> dict:
    """All tasks on ``all`` identities, and on ``seen``/``unseen`` ones when ``seen_identities``
    (the identities present in training) is given.

    Returns ``{split: {figure: {"value", "ci"} or number}}``; the bootstrap intervals
    resample identities. 1:N figures are ``None`` for N above the split's identity count.
    """
    v_labels, f_labels = np.asarray(voice_labels), np.asarray(face_labels)
    if len(v_labels) != len(voice):
        raise ValueError(f"voice_labels: {len(v_labels)} labels for {len(voice)} voice embeddings")
    if len(f_labels) != len(face):
        raise ValueError(f"face_labels: {len(f_labels)} labels for {len(face)} face embeddings")
    similarity = cosine_matrix(voice, face)
    splits = {"all": None}
    if seen_identities is not None:
        seen = np.asarray(sorted(set(seen_identities), key=str))
        splits["seen"] = seen
        splits["unseen"] = np.setdiff1d(np.union1d(v_labels, f_labels), seen)
    report = {}
    for split, keep in splits.items():
        vi = np.arange(len(v_labels)) if keep is None else np.flatnonzero(np.isin(v_labels, keep))
        fi = np.arange(len(f_labels)) if keep is None else np.flatnonzero(np.isin(f_labels, keep))
        report[split] = _evaluate_split(
            similarity[np.ix_(vi, fi)], v_labels[vi], f_labels[fi], n_trials, matching_sizes, seed, n_resamples
        )
    return report


def _evaluate_split(sim, v_labels, f_labels, n_trials, sizes, seed, n_resamples) -> dict:
    identities = np.intersect1d(v_labels, f_labels)
    out: dict = {
        "n_identities": int(len(identities)),
        "n_voice": int(len(v_labels)),
        "n_face": int(len(f_labels)),
        "n_trials": int(n_trials),
        "seed": int(seed),
    }
    if len(identities) < 2:
        out["skipped"] = f"needs at least 2 identities with both a voice and a face, got {len(identities)}"
        return out

    def interval(stat):
        return speaker_bootstrap(stat, identities.tolist(), n_resamples=n_resamples, seed=seed).as_dict()

    # verification: every voice x face pair
    scores = sim.ravel()
    target = (v_labels[:, None] == f_labels[None, :]).ravel()
    voice_ids, face_ids = ItemSpeakers(v_labels), ItemSpeakers(f_labels)

    def pair_weights(counts):  # a pair belongs half to its voice's and half to its face's identity
        return 0.5 * (voice_ids.weights(counts)[:, None] + face_ids.weights(counts)[None, :]).ravel()

    def auc(counts):
        return float(sklearn.metrics.roc_auc_score(target, scores, sample_weight=pair_weights(counts)))

    def eer(counts):
        return equal_error_rate(scores, target, weights=pair_weights(counts))

    out["verification_auc"] = interval(auc)
    out["verification_eer"] = interval(eer)
    out["n_verification_trials"] = int(len(scores))

    for direction, s, q_lab, g_lab in (("voice_to_face", sim, v_labels, f_labels), ("face_to_voice", sim.T, f_labels, v_labels)):
        accuracies = {}
        for n in sizes:
            if n > len(np.unique(g_lab)):
                accuracies[str(n)] = None
                continue
            queries, gallery = matching_trials(q_lab, g_lab, n, n_trials, seed=seed + n)
            items = _Items(matching_correct(s, queries, gallery), ItemSpeakers(q_lab[queries]))
            accuracies[str(n)] = interval(items.mean) if n == 2 else items.mean()
        out[f"{direction}_1of2"] = accuracies.get("2")
        out[f"{direction}_1ofN"] = {k: (v["value"] if isinstance(v, dict) else v) for k, v in accuracies.items()}
        ap = average_precisions(s, q_lab, g_lab)
        ok = ~np.isnan(ap)
        out[f"{direction}_map"] = interval(_Items(ap[ok], ItemSpeakers(q_lab[ok])).mean)
    return out
