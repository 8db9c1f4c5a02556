"""VGSR: vision-guided speaker recognition by cross-modal distillation (Jin et al., AAAI 2023).

A frozen face teacher guides a speaker student trained with its usual speaker loss
(AAM-softmax, triplet, ...). Two pieces:

- **MKD**, margin-based knowledge distillation, a loose constraint that leaves the
  student free inside a margin ``m``::

      L_MKD = 1/N sum_i w_i [D(P(s_i), t_i) - m]+

  with ``D`` the squared L2 distance, the cosine distance or a relational
  (pairwise-distance structure) distance, so that it wraps existing KD losses.
- **QAW**, quality-based adaptive weights ``w_i`` (inferred): per-sample weights from
  a quantified data quality (face detector score, face size, sharpness, frontality,
  speech SNR, ...), normalised to mean 1 over the batch.

How a recipe combines them (:class:`VGSRLoss`)::

    L = L_speaker + lambda * L_MKD(s, t; w = QAW(quality))

Notation as in ../shared/DESIGN.md: ``s_i`` speaker embeddings, ``t_i`` the paired
face embeddings (teacher; detached and L2-normalised here), ``P`` the learnable map
:class:`~xmodal_diar.losses.projection.SpeakerToFaceProjection`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmodal_diar.losses.distances import check_embeddings, check_finite, cosine_distance, squared_distance, squared_distances
from xmodal_diar.losses.projection import SpeakerToFaceProjection

Distance = Literal["l2", "cosine", "relational"]
Reduction = Literal["mean", "sum", "none"]


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def relational_distances(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample relational distance, the distance-wise term of RKD (Park et al., CVPR 2019).

    ``psi_x(i, j) = ||x_i - x_j|| / mean_{k != l} ||x_k - x_l||`` (and likewise for ``y``);
    ``D_i = mean_{j != i} huber(psi_x(i, j) - psi_y(i, j))`` (smooth L1, beta = 1).

    Needs at least 2 samples; with exactly 2 the normalised distances are both 1, so
    ``D = 0``. A batch of identical embeddings has all distances 0 (no NaN).
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"relational distance: needs a batch of at least 2 samples, got {n}")
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)

    def normalised(z: torch.Tensor) -> torch.Tensor:
        # clamp before sqrt: finite gradient on the diagonal and for duplicates
        d = squared_distances(z).clamp_min(eps).sqrt() * off_diagonal
        return d / (d.sum() / off_diagonal.sum()).clamp_min(eps)

    huber = F.smooth_l1_loss(normalised(x), normalised(y), reduction="none", beta=1.0)
    return (huber * off_diagonal).sum(1) / (n - 1)


class MarginKnowledgeDistillation(nn.Module):
    """VGSR's margin-based knowledge distillation ``[D(P(s_i), t_i) - m]+`` (Jin et al., AAAI 2023).

    Parameters
    ----------
    speaker_dim, face_dim : dimensions of the student and teacher embeddings; the
        module owns the map ``P`` between them.
    margin : ``m``; no penalty while ``D <= m``. In units of ``D``: squared L2 on unit
        vectors lies in [0, 4], cosine distance in [0, 2] (half the squared L2),
        the relational distance is a mean Huber loss of normalised distances
        (typically 0.01 to 0.2 for unrelated structures: use a smaller margin).
    distance : ``"l2"`` (``||P(s_i) - t_i||^2``), ``"cosine"`` (``1 - cos``) or
        ``"relational"`` (:func:`relational_distances` of the batch's ``P(s)`` vs ``t``).
    reduction : ``"mean"`` (``1/N sum_i w_i l_i``), ``"sum"`` or ``"none"`` (the (N,)
        per-sample losses, weights applied).
    identity_if_same_dim : ``P`` is the identity (no parameter) when the dimensions match.

    ``forward(speaker (N, speaker_dim), face (N, face_dim), weights (N,) | None)``.
    The teacher ``face`` is detached and L2-normalised. Batches: N >= 1 for "l2" and
    "cosine"; N >= 2 for "relational" (N = 1 raises ValueError, N = 2 gives 0).
    """

    def __init__(
        self,
        speaker_dim: int,
        face_dim: int,
        margin: float = 0.2,
        distance: Distance = "l2",
        reduction: Reduction = "mean",
        identity_if_same_dim: bool = False,
    ):
        super().__init__()
        _check_choice("distance", distance, ("l2", "cosine", "relational"))
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        if margin < 0:
            raise ValueError(f"margin: expected a non-negative value, got {margin}")
        self.margin = float(margin)
        self.distance = distance
        self.reduction = reduction
        self.projection = SpeakerToFaceProjection(speaker_dim, face_dim, identity_if_same_dim)

    def distances(self, speaker: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """``D(P(s_i), t_i)`` for every sample, shape (N,)."""
        name = type(self).__name__
        check_embeddings(name, speaker, face, min_batch=2 if self.distance == "relational" else 1)
        check_finite(name, speaker=speaker, face=face)
        if face.shape[1] != self.projection.face_dim:
            raise ValueError(
                f"{name}: expected face embeddings of dim {self.projection.face_dim}, got {face.shape[1]}"
            )
        projected = self.projection(speaker)
        teacher = F.normalize(face.detach(), dim=-1)
        if self.distance == "l2":
            return squared_distance(projected, teacher)
        if self.distance == "cosine":
            return cosine_distance(projected, teacher)
        return relational_distances(projected, teacher)

    def forward(
        self, speaker: torch.Tensor, face: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        losses = (self.distances(speaker, face) - self.margin).clamp_min(0.0)
        if weights is not None:
            if weights.shape != losses.shape:
                raise ValueError(
                    f"{type(self).__name__}: weights must have shape {tuple(losses.shape)}, "
                    f"got {tuple(weights.shape)}"
                )
            if not torch.isfinite(weights).all() or (weights < 0).any():
                raise ValueError(f"{type(self).__name__}: weights must be finite and non-negative")
            losses = losses * weights.to(losses.dtype)
        return _reduce(losses, self.reduction)


class QualityAdaptiveWeights(nn.Module):
    """VGSR's quality-based adaptive weights (Jin et al., AAAI 2023; details inferred).

    From a quality matrix ``Q`` (N, K), one row per sample, one column per quality
    measure where higher is better (face detector score, face size, sharpness,
    frontality, speech quality from :mod:`xmodal_diar.speech_quality`, ...):

    1. column normalisation over the batch, ``"minmax"``:
       ``q~_ik = (Q_ik - min_j Q_jk) / (max_j Q_jk - min_j Q_jk)`` (a constant column
       gives 1: it carries no information), or ``"none"`` (columns already in [0, 1]);
    2. combination ``q_i = sum_k a_k q~_ik / sum_k a_k`` with non-negative column
       weights ``a`` (default: all 1);
    3. batch normalisation to mean 1:
       ``"softmax"``: ``w_i = N softmax(q / temperature)_i`` (positive; the ratio of
       two weights is at most ``exp(1 / temperature)`` when ``q`` is in [0, 1]), or
       ``"linear"``: ``w_i = (floor + q_i) / mean_j (floor + q_j)`` (ones when all
       ``floor + q_j`` are 0).

    The weights are detached (they scale losses, they are not trained). Equal
    qualities give all-ones; a higher quality never gives a lower weight; a batch
    of one sample gives ``[1.]``.
    """

    def __init__(
        self,
        column_weights: Sequence[float] | None = None,
        column_normalization: Literal["minmax", "none"] = "minmax",
        combine: Literal["softmax", "linear"] = "softmax",
        temperature: float = 1.0,
        floor: float = 0.0,
    ):
        super().__init__()
        _check_choice("column_normalization", column_normalization, ("minmax", "none"))
        _check_choice("combine", combine, ("softmax", "linear"))
        if temperature <= 0:
            raise ValueError(f"temperature: expected a positive value, got {temperature}")
        if floor < 0:
            raise ValueError(f"floor: expected a non-negative value, got {floor}")
        if column_weights is not None:
            a = torch.as_tensor(column_weights, dtype=torch.float32)
            if a.ndim != 1 or (a < 0).any() or a.sum() <= 0:
                raise ValueError(
                    f"column_weights: expected non-negative weights, not all zero, got {list(column_weights)}"
                )
            self.register_buffer("column_weights", a)
        else:
            self.column_weights = None
        self.column_normalization = column_normalization
        self.combine = combine
        self.temperature = float(temperature)
        self.floor = float(floor)

    def combined_quality(self, quality: torch.Tensor) -> torch.Tensor:
        """Steps 1 and 2: the per-sample quality ``q`` (N,)."""
        name = type(self).__name__
        q = quality.detach().to(torch.float32)
        if q.ndim == 1:
            q = q[:, None]
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
            raise ValueError(f"{name}: expected a (batch, n_measures) quality matrix, got {tuple(quality.shape)}")
        if not torch.isfinite(q).all():
            raise ValueError(f"{name}: quality contains NaN or infinite values")
        if self.column_normalization == "minmax":
            low, high = q.amin(0), q.amax(0)
            span = high - low
            q = torch.where(span > 0, (q - low) / span.clamp_min(1e-12), torch.ones_like(q))
        if self.column_weights is None:
            return q.mean(1)
        if self.column_weights.numel() != q.shape[1]:
            raise ValueError(
                f"{name}: {self.column_weights.numel()} column_weights for a quality matrix "
                f"with {q.shape[1]} columns"
            )
        a = self.column_weights.to(q.device)
        return q @ a / a.sum()

    def forward(self, quality: torch.Tensor) -> torch.Tensor:
        """Per-sample weights (N,), mean 1, non-negative, detached."""
        q = self.combined_quality(quality)
        n = q.shape[0]
        if torch.all(q == q[0]):  # no quality difference: exactly ones, free of rounding
            return torch.ones_like(q)
        if self.combine == "softmax":
            return n * torch.softmax(q / self.temperature, dim=0)
        shifted = q + self.floor
        total = shifted.sum()
        if total <= 0:
            return torch.ones_like(q)
        return n * shifted / total


class VGSRLoss(nn.Module):
    """``L = L_speaker + lambda * L_MKD(s, t; w = QAW(quality))`` (Jin et al., AAAI 2023).

    The speaker loss value (AAM-softmax, triplet, ...) is computed by the recipe and
    passed in. Without ``quality_weights`` (or without ``quality``) all ``w_i = 1``.
    """

    def __init__(
        self,
        distillation: MarginKnowledgeDistillation,
        quality_weights: QualityAdaptiveWeights | None = None,
        weight: float = 1.0,
    ):
        super().__init__()
        if distillation.reduction != "mean":
            raise ValueError("VGSRLoss: distillation must use reduction='mean'")
        self.distillation = distillation
        self.quality_weights = quality_weights
        self.weight = float(weight)

    def forward(
        self,
        speaker_loss: torch.Tensor,
        speaker: torch.Tensor,
        face: torch.Tensor,
        quality: torch.Tensor | None = None,
    ) -> torch.Tensor:
        weights = None
        if quality is not None and self.quality_weights is not None:
            weights = self.quality_weights(quality)
        return speaker_loss + self.weight * self.distillation(speaker, face, weights)
