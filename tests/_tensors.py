"""Tiny hand-checkable tensors shared by the loss tests."""

import torch

# Three unit vectors in 2-D: d(E0, E1) = 0.8, d(E0, E2) = 2.0, d(E1, E2) = 0.4 (squared Euclidean).
E0, E1, E2 = (1.0, 0.0), (0.6, 0.8), (0.0, 1.0)


def vectors(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def labels_of(*ys) -> torch.Tensor:
    return torch.tensor(ys, dtype=torch.long)


def one_gradient_step(measure, raw: torch.Tensor, lr: float = 0.1):
    """``(loss, aux)`` of ``measure()`` before and after one gradient-descent step on ``raw``."""
    before, aux_before = measure()
    before.backward()
    with torch.no_grad():
        raw -= lr * raw.grad
    after, aux_after = measure()
    return (before, aux_before), (after, aux_after)
