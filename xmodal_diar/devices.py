"""``--device`` values to ``torch.device``, with a one-line error for what this machine lacks."""

from __future__ import annotations

import torch


def resolve_device(name: "str | torch.device") -> torch.device:
    """``torch.device(name)``; ``ValueError`` naming the problem when ``name`` is malformed
    or asks for an accelerator (CUDA, MPS) this process cannot use."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {name!r}: not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                             f"{'CPU-only build' if torch.version.cuda is None else 'no visible GPU'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return device
