"""``P``: the learnable map from speaker space to face space (Le & Odobez 2017; VGSR 2023).

``P(s) = normalize(W s + b)``. Needed whenever the speaker and face dimensions differ;
with ``identity_if_same_dim=True`` and equal dimensions it is the identity (no
parameter), which is the "direct" variant of the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpeakerToFaceProjection(nn.Module):
    """Linear map + L2 normalisation from ``speaker_dim`` to ``face_dim``."""

    def __init__(self, speaker_dim: int, face_dim: int, identity_if_same_dim: bool = False):
        super().__init__()
        self.speaker_dim, self.face_dim = speaker_dim, face_dim
        if identity_if_same_dim and speaker_dim == face_dim:
            self.linear = None
        else:
            self.linear = nn.Linear(speaker_dim, face_dim)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if s.shape[-1] != self.speaker_dim:
            raise ValueError(
                f"SpeakerToFaceProjection: expected speaker embeddings of dim {self.speaker_dim}, "
                f"got {s.shape[-1]}"
            )
        x = s if self.linear is None else self.linear(s)
        return F.normalize(x, dim=-1)
