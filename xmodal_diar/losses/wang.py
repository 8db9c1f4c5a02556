"""Joint face-voice embedding (Wang et al., SIGIR 2020).

R. Wang et al., "Learning Discriminative Joint Embeddings for Efficient Face and Voice
Association", SIGIR 2020. A voice subnet ``V`` and a face subnet ``F`` (here
:class:`FaceAdapter`, a trainable MLP on frozen face embeddings) map into one
L2-normalised space, ``v_i = V(audio_i)``, ``f_i = F(face_i)``, trained with

- :class:`BidirectionalRankingLoss`, online hard negatives in the mini-batch;
- :class:`SharedIdentityLoss`, ONE classifier for both modalities;
- :class:`SharedCenterLoss`, centres shared by both modalities;
- :class:`JointEmbeddingLoss`, ``L_rank + λ1 L_id + λ2 L_c``.

``d(a, b) = ||a - b||²``. Hard negative mining is
:func:`xmodal_diar.losses.le_odobez.hardest_negatives`, shared with the triplet loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmodal_diar.losses.distances import check_embeddings, squared_distance, squared_distances
from xmodal_diar.losses.distances import check_finite, check_labels
from xmodal_diar.losses.le_odobez import hardest_negatives


def _check_pair(
    name: str, voice: torch.Tensor, face: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None
) -> None:
    """Paired ``(N, D)`` voice and face batches, finite, with valid labels."""
    check_embeddings(name, voice, face)
    if voice.shape[1] != face.shape[1]:
        raise ValueError(f"{name}: voice and face embeddings differ in dim: {voice.shape[1]} vs {face.shape[1]}")
    check_labels(name, labels, voice.shape[0], n_classes)
    check_finite(name, voice=voice, face=face)


class FaceAdapter(nn.Module):
    """Face subnet ``F`` of Wang et al.: an MLP on frozen face embeddings, L2-normalised output.

    ``f = normalize(W_L σ(... σ(W_1 t + b_1) ...) + b_L)`` with ReLU ``σ`` and optional dropout,
    ``face_dim -> hidden_dims... -> joint_dim``. ``hidden_dims=()`` is a single linear layer.
    """

    def __init__(self, face_dim: int, joint_dim: int, hidden_dims: Sequence[int] = (256,), dropout: float = 0.0):
        super().__init__()
        if face_dim <= 0 or joint_dim <= 0 or any(h <= 0 for h in hidden_dims):
            raise ValueError(
                f"FaceAdapter: dims must be positive, got face_dim={face_dim}, joint_dim={joint_dim}, "
                f"hidden_dims={list(hidden_dims)}"
            )
        self.face_dim, self.joint_dim = face_dim, joint_dim
        sizes = [face_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(i, o), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], joint_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        if face.shape[-1] != self.face_dim:
            raise ValueError(f"FaceAdapter: expected face embeddings of dim {self.face_dim}, got {face.shape[-1]}")
        return F.normalize(self.mlp(face), dim=-1)


class BidirectionalRankingLoss(nn.Module):
    """Bi-directional ranking loss with online hard negative mining (Wang et al. 2020).

    ``L = mean_i [m + d(v_i, f_i) - d(v_i, f_ĵ)]+ + mean_i [m + d(f_i, v_i) - d(f_i, v_ĵ')]+``
    with ``ĵ = argmin_{j: y_j != y_i} d(v_i, f_j)`` and ``ĵ' = argmin_{j: y_j != y_i} d(f_i, v_j)``,
    the hardest in-batch negatives of ANOTHER identity (:func:`hardest_negatives`). Each
    direction is averaged over its anchors that have a negative; the two are summed, so
    the loss is symmetric under swapping ``v`` and ``f``. One identity in the batch -> 0.
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        if margin < 0:
            raise ValueError(f"BidirectionalRankingLoss: margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, voice: torch.Tensor, face: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_pair(type(self).__name__, voice, face, labels)
        cross = squared_distances(voice, face)  # cross[i, j] = d(v_i, f_j)
        positive = cross.diagonal()
        total = cross.new_zeros(())
        for distances in (cross, cross.T):  # voice anchors, then face anchors
            negative, valid = hardest_negatives(distances, labels)
            rows = torch.nonzero(valid).squeeze(1)
            losses = F.relu(self.margin + positive[rows] - distances[rows, negative[rows]])
            total = total + losses.sum() / max(rows.numel(), 1)
        return total

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class SharedIdentityLoss(nn.Module):
    """Identity constraint of Wang et al. (2020): ONE linear softmax classifier for both modalities.

    ``L_id = mean_i [CE(W v_i + b, y_i) + CE(W f_i + b, y_i)]`` (summed over the two
    modalities, averaged over the batch).
    """

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        if dim <= 0 or n_classes < 2:
            raise ValueError(f"SharedIdentityLoss: need dim > 0 and n_classes >= 2, got {dim}, {n_classes}")
        self.n_classes = n_classes
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, voice: torch.Tensor, face: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_pair(type(self).__name__, voice, face, labels, self.n_classes)
        return F.cross_entropy(self.classifier(voice), labels) + F.cross_entropy(self.classifier(face), labels)


class SharedCenterLoss(nn.Module):
    """Center constraint of Wang et al. (2020), centres shared by both modalities.

    ``L_c = mean_i [½ ||v_i - c_{y_i}||² + ½ ||f_i - c_{y_i}||²]``; the centres ``c`` are an
    ``(n_classes, dim)`` parameter learnt by the optimiser, initialised as random unit vectors.
    """

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        if dim <= 0 or n_classes < 1:
            raise ValueError(f"SharedCenterLoss: need dim > 0 and n_classes >= 1, got {dim}, {n_classes}")
        self.n_classes = n_classes
        self.centers = nn.Parameter(F.normalize(torch.randn(n_classes, dim), dim=-1))

    def forward(self, voice: torch.Tensor, face: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_pair(type(self).__name__, voice, face, labels, self.n_classes)
        c = self.centers[labels]
        return (0.5 * squared_distance(voice, c) + 0.5 * squared_distance(face, c)).mean()


class JointEmbeddingLoss(nn.Module):
    """Total objective of Wang et al. (2020): ``L = L_rank + λ1 L_id + λ2 L_c``.

    ``forward(v, f, labels)`` returns ``(total, terms)`` with ``terms`` the detached
    ``{"rank", "identity", "center"}`` values for logging. The λ defaults are not given
    by the paper's abstract (inferred): ``lambda_id=1.0``, ``lambda_center=0.1``.
    """

    def __init__(
        self,
        dim: int,
        n_classes: int,
        margin: float = 0.2,
        lambda_id: float = 1.0,
        lambda_center: float = 0.1,
    ):
        super().__init__()
        if lambda_id < 0 or lambda_center < 0:
            raise ValueError(
                f"JointEmbeddingLoss: λ must be >= 0, got lambda_id={lambda_id}, lambda_center={lambda_center}"
            )
        self.lambda_id, self.lambda_center = float(lambda_id), float(lambda_center)
        self.ranking = BidirectionalRankingLoss(margin)
        self.identity = SharedIdentityLoss(dim, n_classes)
        self.center = SharedCenterLoss(dim, n_classes)

    def forward(
        self, voice: torch.Tensor, face: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rank = self.ranking(voice, face, labels)
        identity = self.identity(voice, face, labels)
        center = self.center(voice, face, labels)
        total = rank + self.lambda_id * identity + self.lambda_center * center
        return total, {"rank": rank.detach(), "identity": identity.detach(), "center": center.detach()}

    def extra_repr(self) -> str:
        return f"lambda_id={self.lambda_id}, lambda_center={self.lambda_center}"
