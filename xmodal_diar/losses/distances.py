"""Distances and batch checks shared by every loss module.

``d(a, b) = ||a - b||^2`` throughout, as in ../shared/DESIGN.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_distances(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise ``||a_i - b_j||^2`` as an ``(N, M)`` matrix (``b = a`` when omitted).

    Computed by expansion and clamped at 0, so that its gradient is finite on the
    diagonal (``torch.cdist(...) ** 2`` has a NaN gradient at zero distance).
    """
    b = a if b is None else b
    d = (a * a).sum(-1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(-1)[None]
    return d.clamp_min(0.0)


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``||a_i - b_i||^2``, shape ``(N,)``."""
    return ((a - b) ** 2).sum(-1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``1 - cos(a_i, b_i)``, shape ``(N,)``."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def check_embeddings(name: str, *tensors: torch.Tensor, min_batch: int = 1) -> None:
    """Raise ValueError unless every tensor is a finite ``(N, D)`` batch with the same N >= min_batch."""
    sizes = set()
    for t in tensors:
        if t.ndim != 2:
            raise ValueError(f"{name}: expected (batch, dim) embeddings, got shape {tuple(t.shape)}")
        sizes.add(t.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"{name}: batch sizes differ: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    if n < min_batch:
        raise ValueError(f"{name}: needs a batch of at least {min_batch} samples, got {n}")


def same_identity_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` boolean matrix, True where ``labels[i] == labels[j]``."""
    return labels[:, None] == labels[None, :]


def check_labels(name: str, labels: torch.Tensor, batch_size: int, n_classes: int | None = None) -> None:
    """Raise ValueError unless ``labels`` is an integer ``(batch_size,)`` tensor in ``[0, n_classes)``."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name}: labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ValueError(
            f"{name}: expected labels of shape ({batch_size},), got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(labels.min())}")
    if n_classes is not None and labels.numel() and labels.max() >= n_classes:
        raise ValueError(
            f"{name}: label {int(labels.max())} out of range for {n_classes} identities"
        )


def check_finite(name: str, **tensors: torch.Tensor) -> None:
    """Raise ValueError naming the argument that holds NaN or inf."""
    for arg, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: {arg} contains NaN or inf")
