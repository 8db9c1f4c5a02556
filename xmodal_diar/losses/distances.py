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
