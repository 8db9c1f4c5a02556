"""Cross-modal transfer from face embeddings to speaker-turn embeddings (Le & Odobez).

N. Le and J.-M. Odobez, "Improving speaker turn embedding by crossmodal transfer learning
from face embedding", ICCV Workshops 2017; journal extension "A domain adaptation approach
to improve speaker turn embedding using face representation", MTAP 2019 (adds MMD).

Notation (../shared/DESIGN.md): ``s_i`` the L2-normalised speaker-turn embedding (student),
``y_i`` its identity, ``t_i`` the paired L2-normalised face embedding (frozen teacher),
``t̄_c`` the normalised mean face embedding of identity ``c``, ``P`` the learnable map
speaker space -> face space (:class:`~xmodal_diar.losses.projection.SpeakerToFaceProjection`),
``d(a, b) = ||a - b||²`` and ``[x]+ = max(x, 0)``.

Terms:

- :class:`TripletLoss` (baseline speaker loss) ``[d(s_a,s_p) - d(s_a,s_n) + α]+``,
  triplets mined in the batch by :func:`mine_triplets`;
- :class:`TargetEmbeddingTransfer` (TET) ``mean_i d(P(s_i), t̄_{y_i})``;
- :class:`RelativeDistanceTransfer` (RDT, inferred) keeps the teacher's ordering of
  identity distances, triplet form or soft (Huber on distance matrices);
- :class:`ClusteringStructureTransfer` (CST, inferred) a coarser triplet term over the
  clusters of face centroids found once by :func:`cluster_face_centroids`;
- :class:`MMDLoss` (MTAP 2019) Gaussian-kernel MMD between ``P(s)`` and ``t``.

Face centroids are passed as one ``(C, D_face)`` table indexed by the integer labels
(:func:`identity_centroids` builds it from face embeddings), never per sample.

Degenerate batches: a batch in which no triplet (or pair) can be formed -- one sample,
one identity, every identity seen once -- gives a loss of exactly 0 that is still
connected to the inputs (``backward`` works, gradients are 0), never NaN. Malformed
inputs (shapes, labels out of range, non-finite values) raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmodal_diar.losses.distances import (
    check_embeddings,
    check_finite,
    check_labels,
    same_identity_mask,
    squared_distances,
)
from xmodal_diar.losses.projection import SpeakerToFaceProjection

MiningStrategy = Literal["all", "semi-hard", "hardest"]
MINING_STRATEGIES: tuple[str, ...] = ("all", "semi-hard", "hardest")


# --------------------------------------------------------------------------- helpers


def _mean_of_positive(losses: torch.Tensor) -> torch.Tensor:
    """Mean of the strictly positive entries (0, still differentiable, when there is none)."""
    positive = losses > 0
    return (losses * positive).sum() / positive.sum().clamp_min(1)


def identity_centroids(embeddings: torch.Tensor, labels: torch.Tensor, n_identities: int | None = None) -> torch.Tensor:
    """``t̄_c = normalize(mean_{i: y_i = c} normalize(t_i))``, a ``(C, D)`` table.

    Identities with no sample get a zero row. ``n_identities`` defaults to ``max(labels) + 1``.
    """
    check_embeddings("identity_centroids", embeddings)
    check_labels("identity_centroids", labels, embeddings.shape[0], n_identities)
    n = int(labels.max()) + 1 if n_identities is None else n_identities
    sums = embeddings.new_zeros(n, embeddings.shape[1])
    sums.index_add_(0, labels, F.normalize(embeddings, dim=-1))
    return F.normalize(sums, dim=-1)


# --------------------------------------------------------------------------- mining


def hardest_negatives(
    distances: torch.Tensor, labels: torch.Tensor, candidate_labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online hard negative mining: for each row ``i``, ``ĵ = argmin_{j: y_j != y_i} distances[i, j]``.

    ``distances`` is ``(N, M)``: rows are anchors with ``labels`` ``(N,)``, columns candidates
    with ``candidate_labels`` ``(M,)`` (``labels`` when omitted; the same matrix then holds
    one modality, a cross-modal ``d(v_i, f_j)`` matrix works as well). Returns ``(index,
    valid)``, both ``(N,)``: ``valid[i]`` is False when row ``i`` has no candidate of
    another identity (its ``index`` is then meaningless). A same-identity candidate is
    never returned. Used by :func:`mine_triplets` and by Wang et al.'s ranking loss.
    """
    candidate_labels = labels if candidate_labels is None else candidate_labels
    other = labels[:, None] != candidate_labels[None, :]
    masked = distances.detach().masked_fill(~other, float("inf"))
    return masked.argmin(dim=1), other.any(dim=1)


def hardest_positives(distances: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row ``i`` of a square ``(N, N)`` matrix, ``argmax_{j != i: y_j = y_i} distances[i, j]``.

    Returns ``(index, valid)`` like :func:`hardest_negatives`.
    """
    n = labels.shape[0]
    positive = same_identity_mask(labels) & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    masked = distances.detach().masked_fill(~positive, float("-inf"))
    return masked.argmax(dim=1), positive.any(dim=1)


def mine_triplets(
    distances: torch.Tensor, labels: torch.Tensor, strategy: MiningStrategy = "all", margin: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices ``(a, p, n)`` of the batch triplets ``y_a = y_p != y_n``, ``a != p``.

    ``distances`` is the ``(N, N)`` matrix ``d(x_i, x_j)`` (only read, never differentiated).

    - ``"all"``: every valid triplet;
    - ``"semi-hard"``: those with ``d(a,p) < d(a,n) < d(a,p) + margin`` (FaceNet);
    - ``"hardest"``: one per anchor, its hardest positive ``argmax d(a,p)`` and hardest
      negative ``argmin d(a,n)`` (batch-hard); anchors lacking either are skipped.

    Each result is a ``(T,)`` long tensor; ``T = 0`` when no triplet qualifies.
    """
    if strategy not in MINING_STRATEGIES:
        raise ValueError(f"mine_triplets: strategy must be one of {MINING_STRATEGIES}, got {strategy!r}")
    n = labels.shape[0]
    if distances.shape != (n, n):
        raise ValueError(
            f"mine_triplets: expected a ({n}, {n}) distance matrix, got {tuple(distances.shape)}"
        )
    d = distances.detach()
    if strategy == "hardest":
        p, has_p = hardest_positives(d, labels)
        neg, has_n = hardest_negatives(d, labels)
        a = torch.nonzero(has_p & has_n).squeeze(1)
        return a, p[a], neg[a]
    same = same_identity_mask(labels)
    positive = same & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    valid = positive[:, :, None] & ~same[:, None, :]
    if strategy == "semi-hard":
        d_ap, d_an = d[:, :, None], d[:, None, :]
        valid &= (d_ap < d_an) & (d_an < d_ap + margin)
    a, p, neg = torch.nonzero(valid, as_tuple=True)
    return a, p, neg


# --------------------------------------------------------------------------- losses


class TripletLoss(nn.Module):
    """Triplet loss with in-batch mining, the baseline of Le & Odobez (2017), after TristouNet.

    ``L = [d(s_a, s_p) - d(s_a, s_n) + α]+`` with ``d`` the squared Euclidean distance
    between L2-normalised embeddings, α = ``margin`` (0.2), triplets from :func:`mine_triplets`.

    Averaging: ``"all"`` and ``"semi-hard"`` average over the mined triplets whose loss is
    strictly positive (Hermans et al.'s "batch all"; every semi-hard triplet is positive);
    ``"hardest"`` averages over the anchors (batch-hard). No triplet -> 0 (see module doc).
    """

    def __init__(self, margin: float = 0.2, mining: MiningStrategy = "all"):
        super().__init__()
        if mining not in MINING_STRATEGIES:
            raise ValueError(f"TripletLoss: mining must be one of {MINING_STRATEGIES}, got {mining!r}")
        if margin < 0:
            raise ValueError(f"TripletLoss: margin must be >= 0, got {margin}")
        self.margin, self.mining = float(margin), mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_embeddings(name, embeddings)
        check_labels(name, labels, embeddings.shape[0])
        check_finite(name, embeddings=embeddings)
        d = squared_distances(embeddings)
        a, p, n = mine_triplets(d, labels, self.mining, self.margin)
        losses = F.relu(d[a, p] - d[a, n] + self.margin)
        if self.mining == "hardest":
            return losses.sum() / max(losses.numel(), 1)
        return _mean_of_positive(losses)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"


class _ProjectedTransfer(nn.Module):
    """Holds ``P``: its own, or one shared with other terms via ``projection=``."""

    def __init__(self, speaker_dim: int, face_dim: int, projection: nn.Module | None = None):
        super().__init__()
        if projection is None:
            projection = SpeakerToFaceProjection(speaker_dim, face_dim)
        dims = (getattr(projection, "speaker_dim", speaker_dim), getattr(projection, "face_dim", face_dim))
        if dims != (speaker_dim, face_dim):
            raise ValueError(
                f"{type(self).__name__}: projection maps {dims[0]} -> {dims[1]}, "
                f"expected speaker_dim={speaker_dim} -> face_dim={face_dim}"
            )
        self.speaker_dim, self.face_dim = speaker_dim, face_dim
        self.projection = projection


class TargetEmbeddingTransfer(_ProjectedTransfer):
    """TET, target embedding transfer (Le & Odobez 2017).

    ``L = mean_i d(P(s_i), t̄_{y_i})``: each projected speaker embedding is pulled to the
    face centroid of its identity. ``face_centroids`` is the ``(C, face_dim)`` table of
    ``t̄_c`` indexed by ``labels`` (rows are L2-normalised here, so raw means are fine).
    Pass ``projection=`` to share one ``P`` with :class:`MMDLoss` (or another term).
    """

    def forward(self, speaker: torch.Tensor, labels: torch.Tensor, face_centroids: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_embeddings(name, speaker)
        check_embeddings(name, face_centroids)
        check_labels(name, labels, speaker.shape[0], face_centroids.shape[0])
        if face_centroids.shape[1] != self.face_dim:
            raise ValueError(f"{name}: face_centroids must have dim {self.face_dim}, got {face_centroids.shape[1]}")
        check_finite(name, speaker=speaker, face_centroids=face_centroids)
        targets = F.normalize(face_centroids, dim=-1)[labels]
        return ((self.projection(speaker) - targets) ** 2).sum(-1).mean()


class RelativeDistanceTransfer(nn.Module):
    """RDT, relative distance transfer (Le & Odobez 2017; details inferred).

    ``mode="triplet"`` (default): over the sample triples ``(a, p, n)`` of pairwise distinct
    identities for which the teacher says ``d(t̄_a, t̄_p) + min_teacher_gap < d(t̄_a, t̄_n)``,
    ``L = [d(s_a, s_p) - d(s_a, s_n) + α']+`` (α' = ``margin``), averaged over the triples
    with positive loss. Same-identity pairs are left to the speaker loss.

    ``mode="soft"``: with ``D^s_ij = d(s_i, s_j)`` and ``D^t_ij = d(t̄_{y_i}, t̄_{y_j})``
    over the pairs ``i < j`` of different identities, each divided by its mean over those
    pairs, ``L = mean Huber_δ(D^s / mean D^s, D^t / mean D^t)`` (δ = ``huber_delta``), a
    distance-wise relational loss in the manner of RKD (Park et al. 2019).

    ``face_centroids``: the ``(C, D_face)`` table of ``t̄_c`` indexed by ``labels``.
    Fewer than 3 (triplet) or 2 (soft) identities in the batch -> 0.
    """

    def __init__(
        self,
        margin: float = 0.1,
        mode: Literal["triplet", "soft"] = "triplet",
        min_teacher_gap: float = 0.0,
        huber_delta: float = 1.0,
    ):
        super().__init__()
        if mode not in ("triplet", "soft"):
            raise ValueError(f"RelativeDistanceTransfer: mode must be 'triplet' or 'soft', got {mode!r}")
        if margin < 0 or min_teacher_gap < 0 or huber_delta <= 0:
            raise ValueError(
                "RelativeDistanceTransfer: margin and min_teacher_gap must be >= 0 and huber_delta > 0, "
                f"got {margin}, {min_teacher_gap}, {huber_delta}"
            )
        self.margin, self.mode = float(margin), mode
        self.min_teacher_gap, self.huber_delta = float(min_teacher_gap), float(huber_delta)

    def forward(self, speaker: torch.Tensor, labels: torch.Tensor, face_centroids: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_embeddings(name, speaker)
        check_embeddings(name, face_centroids)
        check_labels(name, labels, speaker.shape[0], face_centroids.shape[0])
        check_finite(name, speaker=speaker, face_centroids=face_centroids)
        teacher = squared_distances(F.normalize(face_centroids.detach(), dim=-1))[labels][:, labels]
        student = squared_distances(speaker)
        different = ~same_identity_mask(labels)
        if self.mode == "soft":
            pairs = torch.triu(different, diagonal=1)
            ds, dt = student[pairs], teacher[pairs]
            if ds.numel() == 0:
                return student.sum() * 0.0
            ds = ds / ds.mean().clamp_min(1e-12)
            dt = dt / dt.mean().clamp_min(1e-12)
            return F.huber_loss(ds, dt, delta=self.huber_delta)
        ordered = different[:, :, None] & different[:, None, :]
        ordered &= teacher[:, :, None] + self.min_teacher_gap < teacher[:, None, :]
        a, p, n = torch.nonzero(ordered, as_tuple=True)
        return _mean_of_positive(F.relu(student[a, p] - student[a, n] + self.margin))

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mode={self.mode!r}"


def cluster_face_centroids(
    centroids: torch.Tensor | np.ndarray,
    n_clusters: int,
    method: Literal["kmeans", "agglomerative"] = "kmeans",
    seed: int = 0,
    linkage: str = "average",
) -> torch.Tensor:
    """Cluster the identities' face centroids once before training (CST, Le & Odobez 2017).

    ``centroids`` ``(C, D)`` are L2-normalised first (so Euclidean ~ cosine). ``"kmeans"``:
    :func:`scipy.cluster.vq.kmeans2` with k-means++ seeding from ``seed``;
    ``"agglomerative"``: :func:`scipy.cluster.hierarchy.linkage` (``linkage`` method)
    cut into ``n_clusters`` with ``fcluster(criterion="maxclust")`` (deterministic).
    Returns ``(C,)`` long cluster ids, contiguous from 0 (an empty k-means cluster is
    dropped, so there may be fewer than ``n_clusters`` ids).
    """
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as hierarchy_linkage
    from scipy.cluster.vq import kmeans2

    x = torch.as_tensor(centroids).detach().double().cpu()
    check_embeddings("cluster_face_centroids", x)
    check_finite("cluster_face_centroids", centroids=x)
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"cluster_face_centroids: n_clusters must be in [1, {x.shape[0]}], got {n_clusters}")
    x = F.normalize(x, dim=-1).numpy()
    if method == "kmeans":
        _, ids = kmeans2(x, n_clusters, minit="++", seed=np.random.default_rng(seed))
    elif method == "agglomerative":
        if x.shape[0] == 1:
            ids = np.zeros(1, dtype=np.int64)
        else:
            ids = fcluster(hierarchy_linkage(x, method=linkage), t=n_clusters, criterion="maxclust")
    else:
        raise ValueError(f"cluster_face_centroids: method must be 'kmeans' or 'agglomerative', got {method!r}")
    _, contiguous = np.unique(ids, return_inverse=True)
    return torch.as_tensor(contiguous.reshape(-1), dtype=torch.long)


class ClusteringStructureTransfer(nn.Module):
    """CST, clustering structure transfer (Le & Odobez 2017; details inferred).

    The identities' face centroids are clustered once before training
    (:func:`cluster_face_centroids`), giving ``k(c)`` for every identity ``c``. CST is then
    the coarser triplet term ``[d(s_a, s_p) - d(s_a, s_n) + β]+`` with ``k(y_p) = k(y_a)``
    (positives: any sample of an identity of the anchor's face cluster) and
    ``k(y_n) != k(y_a)``, β = ``margin`` (0.1, smaller than the speaker triplet's α);
    mining and averaging as in :class:`TripletLoss`.

    ``identity_clusters``: ``(C,)`` cluster id of each identity; may be given later with
    :meth:`set_identity_clusters` (a YAML-built module gets it from the training script).
    """

    identity_clusters: torch.Tensor

    def __init__(
        self,
        identity_clusters: Sequence[int] | torch.Tensor | None = None,
        margin: float = 0.1,
        mining: MiningStrategy = "all",
    ):
        super().__init__()
        self.triplet = TripletLoss(margin=margin, mining=mining)
        self.register_buffer("identity_clusters", torch.zeros(0, dtype=torch.long), persistent=False)
        if identity_clusters is not None:
            self.set_identity_clusters(identity_clusters)

    def set_identity_clusters(self, identity_clusters: Sequence[int] | torch.Tensor) -> None:
        clusters = torch.as_tensor(identity_clusters)
        if clusters.ndim != 1 or clusters.numel() == 0:
            raise ValueError(
                f"{type(self).__name__}: identity_clusters must be a non-empty (C,) sequence, "
                f"got shape {tuple(clusters.shape)}"
            )
        check_labels(f"{type(self).__name__} identity_clusters", clusters, clusters.shape[0])
        self.identity_clusters = clusters.to(self.identity_clusters.device, torch.long)

    def forward(self, speaker: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if self.identity_clusters.numel() == 0:
            raise ValueError(f"{name}: identity_clusters not set; call set_identity_clusters() first")
        check_embeddings(name, speaker)
        check_labels(name, labels, speaker.shape[0], self.identity_clusters.shape[0])
        return self.triplet(speaker, self.identity_clusters.to(labels.device)[labels])


def maximum_mean_discrepancy(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0), unbiased: bool = False
) -> torch.Tensor:
    """Squared MMD between samples ``x`` ``(N, D)`` and ``y`` ``(M, D)`` (Gretton et al. 2012).

    ``k(a, b) = Σ_σ exp(-||a - b||² / (2σ²))`` over ``bandwidths``.
    Biased (V-statistic, default): ``mean K_xx + mean K_yy - 2 mean K_xy``, always >= 0,
    defined for one sample. Unbiased (U-statistic): the diagonals of ``K_xx`` and ``K_yy``
    are left out (``Σ_{i≠j} / (N(N-1))``); it can be slightly negative and needs N, M >= 2.
    Symmetric in ``x`` and ``y``.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"maximum_mean_discrepancy: expected (N, D) and (M, D) samples, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    minimum = 2 if unbiased else 1
    if x.shape[0] < minimum or y.shape[0] < minimum:
        raise ValueError(
            f"maximum_mean_discrepancy: the {'unbiased' if unbiased else 'biased'} estimator needs at least "
            f"{minimum} samples on each side, got {x.shape[0]} and {y.shape[0]}"
        )
    if len(bandwidths) == 0 or any(b <= 0 for b in bandwidths):
        raise ValueError(f"maximum_mean_discrepancy: bandwidths must be positive, got {list(bandwidths)}")
    gammas = torch.tensor([1.0 / (2.0 * b * b) for b in bandwidths], dtype=x.dtype, device=x.device)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-squared_distances(a, b)[..., None] * gammas).sum(-1)

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    if not unbiased:
        return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()
    n, m = x.shape[0], y.shape[0]
    off_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    off_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_xx + off_yy - 2.0 * k_xy.mean()


class MMDLoss(_ProjectedTransfer):
    """MMD term of Le & Odobez's journal extension (MTAP 2019).

    ``L = MMD²(P(s), t)`` between the batch's projected speaker embeddings and its paired
    face embeddings ``t`` (``(M, face_dim)``, any M), with a sum of Gaussian kernels of
    the given ``bandwidths``; biased estimator by default (see
    :func:`maximum_mean_discrepancy`). Pass ``projection=`` to share ``P`` with TET.
    """

    def __init__(
        self,
        speaker_dim: int,
        face_dim: int,
        bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
        unbiased: bool = False,
        projection: nn.Module | None = None,
    ):
        super().__init__(speaker_dim, face_dim, projection)
        self.bandwidths, self.unbiased = tuple(float(b) for b in bandwidths), bool(unbiased)

    def forward(self, speaker: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_embeddings(name, speaker)
        check_embeddings(name, face)
        check_finite(name, speaker=speaker, face=face)
        if face.shape[1] != self.face_dim:
            raise ValueError(f"{name}: face embeddings must have dim {self.face_dim}, got {face.shape[1]}")
        return maximum_mean_discrepancy(self.projection(speaker), face, self.bandwidths, self.unbiased)

    def extra_repr(self) -> str:
        return f"bandwidths={self.bandwidths}, unbiased={self.unbiased}"
