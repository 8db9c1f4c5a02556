"""Clustering of speaker-turn embeddings that estimates the number of speakers.

Distances are cosine, ``d(i, j) = 1 - cos(s_i, s_j)``, plus an optional face-evidence
``distance_offset`` ``(N, N)`` (negative: same face, positive: different faces, 0: none),
clipped to ``[0, 2]``. Two algorithms (``TurnClustering(method=...)``):

- ``"agglomerative"``: hierarchical agglomerative clustering (``scipy.cluster.hierarchy
  .linkage`` on the precomputed distances, linkage ``linkage``), cut at ``threshold``
  (broadcast turn clustering, Le & Odobez 2017, sec. 5);
- ``"spectral"``: spectral clustering with the eigengap count of Park et al. 2019
  ("Auto-tuning spectral clustering for speaker diarization using normalized maximum
  eigengap"): affinity ``A = 1 - d``, each row keeps its ``ceil(pruning * N)`` largest
  entries, ``A <- (A + Aᵀ) / 2``, normalised Laplacian ``L = I - D^-1/2 A D^-1/2``;
  the number of speakers is ``argmax_k (λ_{k+1} - λ_k)`` over the smallest eigenvalues, then
  k-means (``scipy.cluster.vq.kmeans2``) on the row-normalised first ``k`` eigenvectors.

No ghost speakers from short fragments (as pyannote's ``min_cluster_size``): only turns of
at least ``min_turn_duration`` seconds (their clean, single-speaker duration) are
clustered; clusters totalling less than ``min_cluster_duration`` seconds are dissolved
into the nearest remaining cluster while the count allows; every other turn then goes to
the nearest centroid (cosine distance plus its mean ``distance_offset`` to the members).
Turns flagged ``anchored`` (confidently paired with a face, see
:mod:`.face_evidence`) are clustered whatever their duration: there the face evidence,
not the short turn's voice, holds them to their speaker.

Two optional passes (hyper-parameters; their defaults, ``"assign"`` and ``0``, keep the
behaviour above):

- ``short_turns="cluster"``: a duration-aware rule for the short turns. A short turn
  whose cosine distance to every centroid exceeds ``threshold`` (it would not have joined
  any cluster) is an outlier; the outliers are clustered among themselves (same linkage,
  same ``threshold``) and a group becomes a new speaker when its turns total at least
  ``min_cluster_duration`` seconds (so several short turns, not one, make a speaker, as
  pyannote's ``min_cluster_size`` requires several embeddings); the other outliers are
  assigned as before. Needs a ``threshold`` (agglomerative, VBx); spectral assigns.
- ``refine=R``: ``R`` Lloyd (k-means) iterations over ALL turns started from that
  partition: duration-weighted centroids of the current clusters, then every turn to the
  nearest one (cosine distance plus its mean ``distance_offset`` to the members); clusters
  left empty are dropped (never below ``min_clusters``). AHC followed by a k-means
  refinement, the resegmentation idea of VBx (Landini et al. 2022, sec. 3) with hard
  assignments; it lets the short turns shape the centroids and moves long turns that
  average linkage left in a worse cluster.

The number of speakers: ``num_clusters`` forces it (``fcluster(..., "maxclust")`` /
k-means with that ``k``); otherwise the algorithm decides within ``[min_clusters,
max_clusters]``. Bounds are clipped to the number of turns by pyannote's
:meth:`~pyannote.audio.pipelines.clustering.BaseClustering.set_num_clusters`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from pyannote.audio.pipelines.clustering import BaseClustering
from pyannote.pipeline.parameter import Categorical, Integer, Parameter, Uniform
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2
from scipy.spatial.distance import cdist, squareform

LINKAGE_METHODS = ("average", "complete", "single", "weighted")
METHODS = ("agglomerative", "spectral")
COMMON_PARAMETERS = {"min_turn_duration": 1.0, "min_cluster_duration": 3.0, "short_turns": "assign", "refine": 0}
SHORT_TURNS = ("assign", "cluster")
DEFAULT_PARAMETERS = {
    "agglomerative": {"threshold": 0.7, "linkage": "average", **COMMON_PARAMETERS},
    "spectral": {"pruning": 0.3, **COMMON_PARAMETERS},
}


def relabel_by_first_appearance(clusters: np.ndarray) -> np.ndarray:
    """Cluster indices renumbered 0, 1, ... in order of first appearance."""
    _, first = np.unique(clusters, return_index=True)
    order = np.argsort(first)
    mapping = {clusters[first[k]]: rank for rank, k in enumerate(order)}
    return np.array([mapping[c] for c in clusters], dtype=int)


def cluster_centroids(embeddings: np.ndarray, clusters: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit-norm (optionally weighted) mean embedding of each cluster ``0..K-1``."""
    weights = np.ones(len(embeddings)) if weights is None else np.asarray(weights, dtype=np.float64)
    k = int(clusters.max()) + 1
    centroids = np.zeros((k, embeddings.shape[1]))
    np.add.at(centroids, clusters, embeddings * weights[:, None])
    return centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)


def centroid_distances(embeddings: np.ndarray, centroids: np.ndarray, offset: Optional[np.ndarray], members) -> np.ndarray:
    """``(N, K)`` cosine distances of every turn to every centroid, plus (face evidence) its mean
    ``offset`` to the members of each cluster (``members[k]``: indices or mask of cluster k)."""
    distances = cdist(embeddings, centroids, metric="cosine")
    if offset is not None:
        distances += np.stack([offset[:, m].mean(axis=1) for m in members], axis=1)
    return distances


def eigengap_spectral(
    distances: np.ndarray, pruning: float, num_clusters: Optional[int], min_clusters: int, max_clusters: int, seed: int = 0
) -> np.ndarray:
    """Spectral clustering of a distance matrix with the eigengap count (see module docstring)."""
    n = len(distances)
    affinity = np.clip(1.0 - distances, 0.0, 1.0)
    keep = max(2, int(np.ceil(pruning * n)))
    if keep < n:
        threshold = -np.sort(-affinity, axis=1)[:, keep - 1 : keep]
        affinity = np.where(affinity >= threshold, affinity, 0.0)
    affinity = (affinity + affinity.T) / 2
    degree = np.maximum(affinity.sum(axis=1), 1e-12)
    laplacian = np.eye(n) - affinity / np.sqrt(np.outer(degree, degree))
    eigenvalues, eigenvectors = np.linalg.eigh(laplacian)
    if num_clusters is None:
        hi = min(max_clusters, n - 1)
        gaps = np.diff(eigenvalues[: hi + 1])  # gaps[k - 1] = λ_{k+1} - λ_k, k = 1..hi
        ks = np.arange(1, hi + 1)
        allowed = (ks >= min_clusters) & (ks <= hi)
        num_clusters = int(ks[allowed][np.argmax(gaps[allowed])]) if allowed.any() else min_clusters
    if num_clusters <= 1:
        return np.zeros(n, dtype=int)
    features = eigenvectors[:, :num_clusters]
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(5):
        centres, labels = kmeans2(features, num_clusters, minit="++", seed=rng)
        inertia = ((features - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return np.unique(best, return_inverse=True)[1]


class TurnClustering(BaseClustering):
    """Clustering of turn embeddings (see module docstring).

    Parameters
    ----------
    method : {"agglomerative", "spectral"}

    Hyper-parameters
    ----------------
    threshold, linkage : agglomerative only (stopping cosine distance, linkage method)
    pruning : spectral only (fraction of each affinity row kept)
    min_turn_duration : shorter turns are not clustered, only assigned to a centroid
        (or, with ``short_turns="cluster"``, grouped when far from every centroid)
    min_cluster_duration : smaller clusters are dissolved (no ghost speakers)
    short_turns : {"assign", "cluster"} (see module docstring)
    refine : int in [0, 5], k-means iterations over all turns after the clustering
    """

    expects_num_clusters: bool = False

    def __init__(self, method: str = "agglomerative"):
        super().__init__(metric="cosine")
        if method not in METHODS:
            raise ValueError(f"clustering: method must be one of {METHODS} (or 'vbx' in the pipeline), got {method!r}")
        self.method = method
        if method == "agglomerative":
            self.threshold = Uniform(0.0, 2.0)
            self.linkage = Categorical(list(LINKAGE_METHODS))
        else:
            self.pruning = Uniform(0.05, 1.0)
        self._common_hyper_parameters()

    def _common_hyper_parameters(self) -> None:
        self.min_turn_duration = Uniform(0.0, 4.0)
        self.min_cluster_duration = Uniform(0.0, 30.0)
        self.short_turns = Categorical(list(SHORT_TURNS))
        self.refine = Integer(0, 5)

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS[self.method])

    def _cluster(
        self, distances: np.ndarray, num_clusters, min_clusters: int, max_clusters: int, embeddings: np.ndarray
    ) -> np.ndarray:
        """Cluster index (from 0) of each turn to cluster; subclasses (VBx) may use ``embeddings``."""
        n = len(distances)
        if n == 1 or max_clusters < 2:
            return np.zeros(n, dtype=int)
        if self.method == "spectral":
            return eigengap_spectral(distances, self.pruning, num_clusters, min_clusters, max_clusters)
        dendrogram = linkage(squareform(distances, checks=False), method=self.linkage)
        if num_clusters is None:
            clusters = fcluster(dendrogram, self.threshold, criterion="distance")
            found = len(np.unique(clusters))
            if min_clusters <= found <= max_clusters:
                return clusters - 1
            num_clusters = min(max(found, min_clusters), max_clusters)
        return fcluster(dendrogram, num_clusters, criterion="maxclust") - 1

    def __call__(
        self,
        embeddings: np.ndarray,
        durations: Optional[np.ndarray] = None,
        distance_offset: Optional[np.ndarray] = None,
        num_clusters: Optional[int] = None,
        min_clusters: Optional[int] = None,
        max_clusters: Optional[int] = None,
        anchored: Optional[np.ndarray] = None,
        speech: Optional[np.ndarray] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """``(clusters (N,), centroids (K, D))`` of ``(N, D)`` embeddings; clusters by first appearance.

        ``durations`` (N,): seconds each turn's embedding stands for (default 1 each);
        ``distance_offset`` (N, N): face evidence added to the cosine distances;
        ``anchored`` (N,) bool: turns clustered even when shorter than ``min_turn_duration``;
        ``speech`` (N,): seconds each turn adds to its cluster's total, which
        ``min_cluster_duration`` bounds (default ``durations``). With overlapping chunks a
        moment of speech is a turn of every chunk that sees it, so the pipeline passes
        ``durations x segmentation_step`` to count it once.
        """
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or not np.isfinite(embeddings).all():
            raise ValueError(f"turn clustering: expected finite (N, D) embeddings, got shape {embeddings.shape}")
        n = len(embeddings)
        if n == 0:
            return np.zeros(0, dtype=int), np.zeros((0, embeddings.shape[1]))
        durations = np.ones(n) if durations is None else np.asarray(durations, dtype=np.float64)
        offset = None if distance_offset is None else np.asarray(distance_offset, dtype=np.float64)
        speech = durations if speech is None else np.asarray(speech, dtype=np.float64)
        if durations.shape != (n,) or (offset is not None and offset.shape != (n, n)) or speech.shape != (n,):
            raise ValueError(
                f"turn clustering: durations {durations.shape}, speech {speech.shape} and distance_offset "
                f"{getattr(offset, 'shape', None)} must be ({n},), ({n},) and ({n}, {n})"
            )
        # (N, N) float64, in place: no zero offset, no extra copies (the sum with its transpose buffers one)
        distances = cdist(embeddings, embeddings, metric="cosine")
        if offset is not None:
            distances += offset
        np.clip(distances, 0.0, 2.0, out=distances)
        distances += distances.T
        distances /= 2
        np.fill_diagonal(distances, 0.0)

        # turns long enough to be clustered (at least 2, the longest, when too few are)
        long = durations >= self.min_turn_duration
        if anchored is not None:
            anchored = np.asarray(anchored, dtype=bool)
            if anchored.shape != (n,):
                raise ValueError(f"turn clustering: anchored {anchored.shape} must be ({n},)")
            long = long | anchored
        if long.sum() < min(2, n):
            long = np.zeros(n, dtype=bool)
            long[np.argsort(-durations)[: min(2, n)]] = True
        index = np.flatnonzero(long)
        speakers_cap = np.inf if max_clusters is None else max_clusters  # before clipping to the long turns
        num_clusters, min_clusters, max_clusters = self.set_num_clusters(
            len(index), num_clusters=num_clusters, min_clusters=min_clusters, max_clusters=max_clusters
        )
        clusters = self._cluster(
            distances[np.ix_(index, index)], num_clusters, min_clusters, max_clusters, embeddings[index]
        )

        # dissolve clusters too small to be a speaker (not when the count is forced)
        if num_clusters is None:
            while True:
                ids, sizes = np.unique(clusters, return_inverse=False), None
                sizes = np.array([speech[index][clusters == c].sum() for c in ids])
                small = ids[sizes < self.min_cluster_duration]
                if len(ids) <= max(min_clusters, 1) or len(small) == 0:
                    break
                victim = small[np.argmin(sizes[sizes < self.min_cluster_duration])]
                others = ids[ids != victim]
                members = clusters == victim
                cost = [distances[np.ix_(index[members], index[clusters == o])].mean() for o in others]
                clusters[members] = others[int(np.argmin(cost))]
                clusters = np.unique(clusters, return_inverse=True)[1]

        # every turn to the nearest centroid of the long turns' clusters
        centroids = cluster_centroids(embeddings[index], clusters, durations[index])
        k = len(centroids)
        to_centroids = centroid_distances(embeddings, centroids, offset, [index[clusters == c] for c in range(k)])
        assigned = np.argmin(to_centroids, axis=1)
        assigned[index] = clusters
        if num_clusters is None and self._value("short_turns") == "cluster" and hasattr(self, "threshold"):
            assigned = self._cluster_short_turns(assigned, long, to_centroids, distances, speech, speakers_cap)
        for _ in range(int(self._value("refine"))):
            refined = self._refine(embeddings, assigned, durations, offset)
            if np.array_equal(refined, assigned) or len(np.unique(refined)) < max(min_clusters, 1):
                break
            assigned = refined
        assigned = np.unique(assigned, return_inverse=True)[1]
        centroids = cluster_centroids(embeddings, assigned, durations) if self.refine_centroids_from_all else centroids
        # relabel by first appearance, dropping clusters left empty
        labels = relabel_by_first_appearance(assigned)
        order = [assigned[np.flatnonzero(labels == r)[0]] for r in range(labels.max() + 1)]
        return labels, centroids[order]

    @property
    def refine_centroids_from_all(self) -> bool:
        """Whether the returned centroids are those of all the turns (after either pass)."""
        return int(self._value("refine")) > 0 or self._value("short_turns") == "cluster"

    def _value(self, name: str):
        """A hyper-parameter of :data:`COMMON_PARAMETERS`, its default when not instantiated
        (a TurnClustering instantiated with only the older keys behaves as before)."""
        value = getattr(self, name, None)
        return COMMON_PARAMETERS[name] if value is None or isinstance(value, Parameter) else value

    def _cluster_short_turns(
        self, assigned: np.ndarray, long: np.ndarray, to_centroids: np.ndarray, distances: np.ndarray,
        speech: np.ndarray, max_clusters: float,
    ) -> np.ndarray:
        """``short_turns="cluster"``: short turns far from every centroid may found new clusters."""
        outliers = np.flatnonzero(~long & (to_centroids.min(axis=1) > self.threshold))
        if len(outliers) < 2:
            return assigned
        sub = distances[np.ix_(outliers, outliers)]
        method = getattr(self, "linkage", "average")
        groups = fcluster(linkage(squareform(sub, checks=False), method=method), self.threshold, criterion="distance")
        assigned = assigned.copy()
        next_label = int(assigned.max()) + 1
        sizes = {g: speech[outliers[groups == g]].sum() for g in np.unique(groups)}
        for g in sorted(sizes, key=lambda g: -sizes[g]):
            if sizes[g] < self.min_cluster_duration or next_label >= max_clusters:
                continue
            assigned[outliers[groups == g]] = next_label
            next_label += 1
        return assigned

    @staticmethod
    def _refine(embeddings: np.ndarray, assigned: np.ndarray, durations: np.ndarray, offset: Optional[np.ndarray]) -> np.ndarray:
        """One k-means step: duration-weighted centroids of ``assigned``, every turn to the nearest."""
        ids = np.unique(assigned)
        _, dense = np.unique(assigned, return_inverse=True)
        centroids = cluster_centroids(embeddings, dense, np.maximum(durations, 1e-3))
        return np.argmin(centroid_distances(embeddings, centroids, offset, [assigned == c for c in ids]), axis=1)
