"""Disentangled speech embeddings by cross-modal self-supervision (Nagrani et al., ICASSP 2020).

A shared audio trunk feeds two heads, identity ``a^I`` and content ``a^C``; the
face-track stream likewise (``v^I``, ``v^C``). No labels are needed: a face track
is one person, and its audio segments are in sync with its video segments.

- Content loss (:class:`ContentMatchingLoss`), multi-way matching of one video
  segment against the N audio segments of the SAME track::

      S_tt' = w cos(v^C_t, a^C_t') + b,   L_C = CE(S_t., target t' = t)

- Identity loss (:class:`IdentityMatchingLoss`), across the B tracks of the batch::

      S_ij = w cos(v^I_i, mean_t a^I_jt) + b,   L_I = CE(S_i., target j = i)

  ``w``, ``b`` learnable, initialised to 10 and -5. ``w`` is clamped positive. Note
  that ``b`` shifts every logit of a row equally, so it cancels in the softmax: its
  gradient is exactly 0 (kept for fidelity with the paper and GE2E).
- Disentanglement (:class:`ConfusionLoss`, inferred): an auxiliary classifier
  predicts content from the identity embedding; the encoder is trained to make its
  prediction uniform (Alvi et al. 2018, "Turning a blind eye").

:class:`DisentanglementHeads` puts the two heads on any encoder trunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class _ScaledCosineMatching(nn.Module):
    """Shared part: learnable ``w cos(., .) + b`` logits and cross-entropy on the diagonal."""

    def __init__(self, init_weight: float = 10.0, init_bias: float = -5.0, min_weight: float = 1e-6):
        super().__init__()
        if init_weight <= 0:
            raise ValueError(f"init_weight: expected a positive scale, got {init_weight}")
        self.weight = nn.Parameter(torch.tensor(float(init_weight)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.min_weight = float(min_weight)

    def logits(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``w cos(queries[..., i, :], candidates[..., j, :]) + b``, shape (..., M, M)."""
        cos = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).transpose(-1, -2)
        return self.weight.clamp_min(self.min_weight) * cos + self.bias

    def diagonal_cross_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of every row of (..., M, M) logits with target = its own index."""
        m = logits.shape[-1]
        targets = torch.arange(m, device=logits.device).expand(logits.shape[:-1])
        return F.cross_entropy(logits.reshape(-1, m), targets.reshape(-1))


def _check_segments(name: str, video: torch.Tensor, audio: torch.Tensor) -> None:
    if video.ndim != 3 or audio.ndim != 3:
        raise ValueError(
            f"{name}: expected (tracks, segments, dim) video and audio, got {tuple(video.shape)} "
            f"and {tuple(audio.shape)}"
        )
    if video.shape != audio.shape:
        raise ValueError(f"{name}: video {tuple(video.shape)} and audio {tuple(audio.shape)} shapes differ")


class ContentMatchingLoss(_ScaledCosineMatching):
    """Nagrani et al. 2020 content loss: ``CE(w cos(v^C_t, a^C_t') + b, t' = t)`` within each track.

    ``forward(video (B, N, D), audio (B, N, D))``: segment ``t`` of track ``b`` is the
    positive of video segment ``t`` of track ``b``; the other N - 1 audio segments of
    the same track are the negatives. Mean over the B x N video segments. Perfect
    alignment with orthogonal negatives gives ``log(1 + (N - 1) e^{-w})``; embeddings
    that carry no information (all equal) give ``log N``. N < 2 raises ValueError
    (one candidate leaves nothing to match).
    """

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        _check_segments(type(self).__name__, video, audio)
        if video.shape[1] < 2:
            raise ValueError(f"{type(self).__name__}: needs at least 2 segments per track, got {video.shape[1]}")
        return self.diagonal_cross_entropy(self.logits(video, audio))


class IdentityMatchingLoss(_ScaledCosineMatching):
    """Nagrani et al. 2020 identity loss: ``CE(w cos(v^I_i, mean_t a^I_jt) + b, j = i)`` across tracks.

    ``forward(video, audio)``: ``video`` (B, D) track-level identity embeddings, or
    (B, N, D) segment-level ones (averaged over segments); ``audio`` (B, N, D)
    segment embeddings (averaged over segments), or (B, D) already averaged. B < 2
    raises ValueError (a single track has no negative).
    """

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        v = video.mean(1) if video.ndim == 3 else video
        a = audio.mean(1) if audio.ndim == 3 else audio
        if v.ndim != 2 or a.ndim != 2 or v.shape != a.shape:
            raise ValueError(
                f"{name}: expected (tracks, [segments,] dim) video and audio with equal tracks and dim, "
                f"got {tuple(video.shape)} and {tuple(audio.shape)}"
            )
        if v.shape[0] < 2:
            raise ValueError(f"{name}: needs at least 2 tracks in the batch, got {v.shape[0]}")
        return self.diagonal_cross_entropy(self.logits(v, a))


class ConfusionLoss(nn.Module):
    """Disentanglement by confusion (Nagrani et al. 2020; inferred from Alvi et al. 2018).

    A two-player game on the identity embedding ``e`` (…, D):

    - :meth:`classifier_loss` ``= CE(classifier(e.detach()), content)`` trains the
      auxiliary classifier to predict content from identity embeddings; only the
      classifier gets gradients.
    - :meth:`confusion_loss` ``= KL(U || softmax(classifier(e))) = -log C - 1/C sum_c log p_c``
      trains the encoder to make that prediction uniform; the classifier's
      parameters are treated as constants (no gradient reaches them). Minimal (0)
      exactly at the uniform prediction.

    ``content`` are class indices in [0, num_classes): content labels where
    available (words, phones), else pseudo-labels, e.g. k-means cluster ids of the
    detached content embeddings ``a^C``. ``forward(identity, content)`` returns
    ``(classifier_loss, confusion_loss)``; step the classifier's optimiser with the
    first and the encoder's with the second.
    """

    def __init__(self, embedding_dim: int, num_classes: int, hidden_dim: int | None = None):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2 content classes, got {num_classes}")
        self.num_classes = num_classes
        if hidden_dim is None:
            self.classifier = nn.Linear(embedding_dim, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes)
            )

    def classifier_loss(self, identity: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the classifier on detached identity embeddings."""
        logits = self.classifier(identity.detach())
        if content.shape != logits.shape[:-1]:
            raise ValueError(
                f"{type(self).__name__}: content labels of shape {tuple(content.shape)} do not match "
                f"identity embeddings of shape {tuple(identity.shape)}"
            )
        return F.cross_entropy(logits.reshape(-1, self.num_classes), content.reshape(-1).long())

    def confusion_loss(self, identity: torch.Tensor) -> torch.Tensor:
        """``KL(uniform || p)`` of the classifier's prediction, gradients to the encoder only."""
        frozen = {name: p.detach() for name, p in self.classifier.named_parameters()}
        logits = functional_call(self.classifier, frozen, (identity,))
        log_p = F.log_softmax(logits, dim=-1)
        return (-math.log(self.num_classes) - log_p.mean(-1)).mean()

    def forward(self, identity: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier_loss(identity, content), self.confusion_loss(identity)


class DisentanglementHeads(nn.Module):
    """Identity and content heads on a shared trunk (Nagrani et al. 2020).

    ``forward(x) -> (identity, content)``, both L2-normalised, for inputs (…, trunk_dim)
    (e.g. (B, N, trunk_dim) segment features), or for the trunk's input when a
    ``trunk`` module is given (any encoder mapping its input to (…, trunk_dim)).
    Each head is a linear layer, or a one-hidden-layer MLP when ``hidden_dim`` is set.
    """

    def __init__(
        self,
        trunk_dim: int,
        identity_dim: int,
        content_dim: int,
        hidden_dim: int | None = None,
        trunk: nn.Module | None = None,
    ):
        super().__init__()
        self.trunk = trunk
        self.identity = self._head(trunk_dim, identity_dim, hidden_dim)
        self.content = self._head(trunk_dim, content_dim, hidden_dim)

    @staticmethod
    def _head(in_dim: int, out_dim: int, hidden_dim: int | None) -> nn.Module:
        if hidden_dim is None:
            return nn.Linear(in_dim, out_dim)
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x if self.trunk is None else self.trunk(x)
        return F.normalize(self.identity(h), dim=-1), F.normalize(self.content(h), dim=-1)
