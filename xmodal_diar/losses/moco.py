"""MoCo speaker embedding (Ding et al. 2020), after MoCo (He et al., CVPR 2020).

Two random crops of the same utterance (:class:`TwoCropSampler`), SpecAugment on
each crop's features (:class:`SpecAugment`, SpeechBrain's augmenters), a query
encoder ``f_q`` and a momentum key encoder ``f_k``::

    q = f_q(x_q),  k+ = f_k(x_k)                         (L2-normalised)
    L = -log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k in queue} exp(q.k / tau))
    theta_k <- m theta_k + (1 - m) theta_q               (m = 0.999)

then ``k+`` is enqueued in a FIFO queue of K negatives (K = 5000, tau = 0.07).
Used for unsupervised pre-training, then fine-tuned with labels.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from speechbrain.augment.freq_domain import SpectrogramDrop, Warping
from speechbrain.utils.data_utils import batch_pad_right
from torch import nn


class MoCo(nn.Module):
    """Momentum contrast with a queue of negatives (He et al. 2020; Ding et al. 2020 for speakers).

    Parameters
    ----------
    encoder : the query encoder ``f_q``, any module mapping its input (waveforms
        (B, T) or features (B, L, F), plus relative ``lengths`` when given) to
        (B, dim) embeddings (or SpeechBrain's (B, 1, dim)); outputs are L2-normalised
        here. The key encoder ``f_k`` is a deep copy that receives no gradient.
    dim : embedding dimension (the queue holds ``dim x queue_size`` keys).
    queue_size : K, number of negatives. Any K >= 1: it need not be a multiple of the
        batch size (the pointer wraps around) and may be smaller than the batch (only
        the batch's last K keys are kept; see :meth:`enqueue`).
    momentum : m of the key encoder's update, in [0, 1].
    temperature : tau of InfoNCE.

    ``forward(query_input, key_input, query_lengths=None, key_lengths=None)`` returns
    ``(loss, logits)``, logits (B, 1 + K) with the positive in column 0. In training
    mode it first updates ``f_k`` by momentum, then enqueues the batch's keys after
    computing the loss; in eval mode it changes nothing. The queue starts as random
    unit vectors, as in MoCo. Only parameters are updated by momentum; the key
    encoder's buffers (BatchNorm statistics) follow its own forward passes. Under
    DDP each process keeps its own queue (no key gathering, no shuffled BN).
    """

    queue: torch.Tensor
    queue_pointer: torch.Tensor

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        queue_size: int = 5000,
        momentum: float = 0.999,
        temperature: float = 0.07,
    ):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size: expected at least 1 negative, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature: expected a positive value, got {temperature}")
        self.encoder = encoder
        self.key_encoder = copy.deepcopy(encoder)
        self.key_encoder.requires_grad_(False)
        self.dim, self.queue_size = dim, queue_size
        self.momentum, self.temperature = float(momentum), float(temperature)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def _embed(self, encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, which: str) -> torch.Tensor:
        e = encoder(x) if lengths is None else encoder(x, lengths)
        if e.ndim == 3 and e.shape[1] == 1:  # SpeechBrain embedding models: (B, 1, D)
            e = e[:, 0]
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise ValueError(f"MoCo: the {which} encoder returned shape {tuple(e.shape)}, expected (batch, {self.dim})")
        return F.normalize(e, dim=-1)

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for every parameter."""
        for p_k, p_q in zip(self.key_encoder.parameters(), self.encoder.parameters()):
            p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, dim) into the FIFO queue at the pointer, oldest entries first out.

        Same result as enqueueing the keys one at a time: key ``i`` goes to column
        ``(pointer + i) mod K`` and the pointer advances by B, so when B > K only the
        last K keys remain.
        """
        batch = keys.shape[0]
        kept = keys.detach()[-self.queue_size :]
        first = self.queue_pointer + (batch - kept.shape[0])
        index = (first + torch.arange(kept.shape[0], device=keys.device)) % self.queue_size
        self.queue[:, index] = kept.T.to(self.queue.dtype)
        self.queue_pointer.fill_(int((self.queue_pointer + batch) % self.queue_size))

    def forward(
        self,
        query_input: torch.Tensor,
        key_input: torch.Tensor,
        query_lengths: torch.Tensor | None = None,
        key_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if query_input.shape[0] != key_input.shape[0]:
            raise ValueError(
                f"MoCo: query and key batches differ in size: {query_input.shape[0]} vs {key_input.shape[0]}"
            )
        q = self._embed(self.encoder, query_input, query_lengths, "query")
        with torch.no_grad():
            if self.training:
                self.update_key_encoder()
            k = self._embed(self.key_encoder, key_input, key_lengths, "key")
        positive = (q * k).sum(-1, keepdim=True)
        negative = q @ self.queue.clone().detach()
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, targets)
        if self.training:
            self.enqueue(k)
        return loss, logits


class TwoCropSampler:
    """Two random crops of the same utterance (Ding et al. 2020), reproducible with ``seed``.

    Each crop's duration is drawn uniformly in ``[min_duration, max_duration]``
    seconds and its start uniformly over the utterance; the two crops are drawn
    independently (they may overlap). An utterance shorter than a drawn duration
    gives the whole utterance for that crop.

    ``sampler(waveform (T,)) -> (crop_1, crop_2)``;
    ``sampler.batch([w_1, ..., w_B]) -> (x_q (B, Tq), lengths_q, x_k (B, Tk), lengths_k)``,
    right-padded with zeros and relative lengths (SpeechBrain's convention).
    """

    def __init__(
        self,
        min_duration: float = 2.0,
        max_duration: float = 4.0,
        sample_rate: int = 16000,
        seed: int | None = None,
    ):
        if not 0 < min_duration <= max_duration:
            raise ValueError(
                f"min_duration, max_duration: expected 0 < min <= max, got {min_duration} and {max_duration}"
            )
        self.min_samples = max(1, int(round(min_duration * sample_rate)))
        self.max_samples = max(self.min_samples, int(round(max_duration * sample_rate)))
        self.sample_rate = sample_rate
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()

    def _randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high]."""
        return int(torch.randint(low, high + 1, (), generator=self.generator))

    def crop(self, waveform: torch.Tensor) -> torch.Tensor:
        length = self._randint(self.min_samples, self.max_samples)
        if length >= waveform.shape[-1]:
            return waveform
        start = self._randint(0, waveform.shape[-1] - length)
        return waveform[..., start : start + length]

    def __call__(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if waveform.ndim != 1 or waveform.shape[0] == 0:
            raise ValueError(f"TwoCropSampler: expected a non-empty (time,) waveform, got shape {tuple(waveform.shape)}")
        return self.crop(waveform), self.crop(waveform)

    def batch(
        self, waveforms: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(waveforms) == 0:
            raise ValueError("TwoCropSampler.batch: got no waveform")
        first, second = zip(*(self(w) for w in waveforms))
        x_q, lengths_q = batch_pad_right(list(first))
        x_k, lengths_k = batch_pad_right(list(second))
        return x_q, lengths_q, x_k, lengths_k


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., Interspeech 2019) from SpeechBrain's augmenters.

    Time warping (``speechbrain.augment.freq_domain.Warping``), then time masks and
    frequency masks (``SpectrogramDrop`` with ``dim=1`` and ``dim=2``), applied to
    a copy of (B, L, F) features; each sample of the batch gets its own masks. Apply
    it separately to each crop's features. Randomness comes from torch's global
    generator (``torch.manual_seed`` makes it reproducible). Identity in eval mode.
    """

    def __init__(
        self,
        warp_window: int = 5,
        time_mask_length: tuple[int, int] = (0, 10),
        time_mask_count: tuple[int, int] = (1, 2),
        freq_mask_length: tuple[int, int] = (0, 8),
        freq_mask_count: tuple[int, int] = (1, 2),
    ):
        super().__init__()
        self.augmenters = nn.ModuleList(
            [
                Warping(warp_window=warp_window, dim=1),
                SpectrogramDrop(*time_mask_length, *time_mask_count, replace="zeros", dim=1),
                SpectrogramDrop(*freq_mask_length, *freq_mask_count, replace="zeros", dim=2),
            ]
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3:
            raise ValueError(f"SpecAugment: expected (batch, frames, features), got shape {tuple(features.shape)}")
        if not self.training:
            return features
        x = features.clone()  # SpeechBrain's augmenters write in place
        for augment in self.augmenters:
            x = augment(x)
        return x
