"""Agglomerative clustering of speaker-turn embeddings, with optional link constraints.

Hierarchical agglomerative clustering (``scipy.cluster.hierarchy.linkage``) of the turns'
cosine distances ``d(i, j) = 1 - cos(s_i, s_j)``, stopped at the distance ``threshold``
(broadcast diarization by turn clustering, Le & Odobez 2017, sec. 5). Face evidence
enters as an additive ``distance_offset`` (:class:`~xmodal_diar.pipelines.face_evidence.FaceEvidence`:
negative for the same face, positive for different faces; the sum is clipped at 0), hence
the linkage runs on precomputed distances and only the linkage methods defined on them
are offered.

The number of speakers: ``num_clusters`` forces the dendrogram cut into exactly that many
clusters (``fcluster(..., criterion="maxclust")``); otherwise the threshold decides and
its count is clamped into ``[min_clusters, max_clusters]``. Bounds are validated and
clipped to the number of turns by pyannote's
:meth:`~pyannote.audio.pipelines.clustering.BaseClustering.set_num_clusters` (reused).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from pyannote.audio.pipelines.clustering import BaseClustering
from pyannote.pipeline.parameter import Categorical, Uniform
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, squareform


LINKAGE_METHODS = ("average", "complete", "single", "weighted")
DEFAULT_PARAMETERS = {"threshold": 0.7, "method": "average"}


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


class TurnClustering(BaseClustering):
    """Constrained agglomerative clustering of turn embeddings.

    Hyper-parameters
    ----------------
    threshold : float in [0, 2]
        Stopping distance (cosine distance between clusters).
    method : {"average", "complete", "single", "weighted"}
        Linkage method.
    """

    expects_num_clusters: bool = False

    def __init__(self):
        super().__init__(metric="cosine")
        self.threshold = Uniform(0.0, 2.0)
        self.method = Categorical(list(LINKAGE_METHODS))

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS)

    def __call__(
        self,
        embeddings: np.ndarray,
        distance_offset: Optional[np.ndarray] = None,
        num_clusters: Optional[int] = None,
        min_clusters: Optional[int] = None,
        max_clusters: Optional[int] = None,
    ) -> np.ndarray:
        """Cluster index of each of the ``(N, D)`` embeddings, numbered by first appearance."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or not np.isfinite(embeddings).all():
            raise ValueError(f"turn clustering: expected finite (N, D) embeddings, got shape {embeddings.shape}")
        n = len(embeddings)
        if n == 0:
            return np.zeros(0, dtype=int)
        num_clusters, min_clusters, max_clusters = self.set_num_clusters(
            n, num_clusters=num_clusters, min_clusters=min_clusters, max_clusters=max_clusters
        )
        if n == 1 or max_clusters < 2:
            return np.zeros(n, dtype=int)
        distances = np.clip(cdist(embeddings, embeddings, metric="cosine"), 0.0, 2.0)
        if distance_offset is not None:
            distance_offset = np.asarray(distance_offset, dtype=np.float64)
            if distance_offset.shape != (n, n):
                raise ValueError(f"turn clustering: distance_offset must be ({n}, {n}), got {distance_offset.shape}")
            distances = np.clip(distances + distance_offset, 0.0, None)
        np.fill_diagonal(distances, 0.0)
        dendrogram = linkage(squareform(distances, checks=False), method=self.method)
        if num_clusters is None:
            clusters = fcluster(dendrogram, self.threshold, criterion="distance")
            found = len(np.unique(clusters))
            if min_clusters <= found <= max_clusters:
                return relabel_by_first_appearance(clusters)
            num_clusters = min(max(found, min_clusters), max_clusters)
        clusters = fcluster(dendrogram, num_clusters, criterion="maxclust")
        return relabel_by_first_appearance(clusters)
