"""Speaker-turn encoder: SpeechBrain's three-stage contract in one ``nn.Module``.

``TurnEncoder.forward(wavs (B, T) at 16 kHz, wav_lens (B,) relative) -> (B, D)`` with
unit-norm rows. It is built from exactly the modules that a SpeechBrain
``EncoderClassifier`` runs in ``encode_batch``::

    feats = compute_features(wavs)            # speechbrain.lobes.features.Fbank / MFCC
    feats = mean_var_norm(feats, wav_lens)    # InputNormalization(norm_type="sentence")
    emb   = embedding_model(feats, wav_lens)  # (B, 1, D), L2-normalised

so that the export (:mod:`xmodal_diar.adapters.speechbrain`) writes these three modules
as they are and ``EncoderClassifier.from_hparams`` gives the same embeddings.

Short turns: an :class:`EmbeddingModel` repeat-pads (tiles) the valid frames of every
turn shorter than ``min_frames`` (default 50 frames = 0.5 s) before its backbone, so a
0.1 s turn gives a finite embedding of its own content, never NaN, whatever the
backbone's receptive field.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from speechbrain.lobes.features import MFCC, Fbank
from speechbrain.processing.features import InputNormalization
from torch import nn

SAMPLE_RATE = 16000
FRAME_SHIFT = 0.010  # seconds; SpeechBrain features' default hop


def repeat_pad_frames(
    feats: torch.Tensor, lengths: Optional[torch.Tensor], min_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile the valid frames of every sequence shorter than ``min_frames``.

    ``feats`` is ``(B, L, F)``, ``lengths`` relative in (0, 1]. Returns the padded
    features ``(B, max(L, min_frames), F)`` and the new relative lengths.
    """
    batch, n_frames, _ = feats.shape
    if lengths is None:
        lengths = torch.ones(batch, device=feats.device)
    valid = (lengths * n_frames).round().long().clamp(1, n_frames)
    if int(valid.min()) >= min_frames:
        return feats, lengths
    target = max(n_frames, min_frames)
    out = feats.new_zeros(batch, target, feats.shape[-1])
    new_valid = valid.clone()
    for i in range(batch):
        n = int(valid[i])
        if n >= min_frames:
            out[i, :n_frames] = feats[i]
            continue
        reps = math.ceil(min_frames / n)
        out[i, :min_frames] = feats[i, :n].repeat(reps, 1)[:min_frames]
        new_valid[i] = min_frames
    return out, new_valid.float() / target


def masked_mean(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Temporal average of ``(B, L, C)`` over the valid frames given relative ``lengths``."""
    if lengths is None:
        return x.mean(1)
    n = (lengths * x.shape[1]).round().clamp(1, x.shape[1])
    mask = (torch.arange(x.shape[1], device=x.device)[None] < n[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / n[:, None]


class EmbeddingModel(nn.Module):
    """Backbone stage: ``(feats (B, L, F), lengths) -> (B, 1, D)`` unit-norm embeddings."""

    def __init__(self, dimension: int, min_frames: int = 50):
        super().__init__()
        self.dimension = dimension
        self.min_frames = min_frames

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        feats, lengths = repeat_pad_frames(feats, lengths, self.min_frames)
        emb = self.backbone(feats, lengths).reshape(feats.shape[0], -1)
        return F.normalize(emb, dim=-1).unsqueeze(1)


def build_features(feature_type: str, **kwargs) -> nn.Module:
    """SpeechBrain ``Fbank`` or ``MFCC``, or Kaldi fbank (:class:`~xmodal_diar.models.campplus.KaldiFbank`)."""
    if feature_type == "kaldi_fbank":
        from xmodal_diar.models.campplus import KaldiFbank

        return KaldiFbank(**kwargs)
    if feature_type == "fbank":
        return Fbank(**kwargs)
    if feature_type == "mfcc":
        return MFCC(**kwargs)
    raise ValueError(f"unknown feature_type {feature_type!r}: expected 'fbank', 'mfcc' or 'kaldi_fbank'")


class TurnEncoder(nn.Module):
    """Waveforms to unit-norm turn embeddings, through SpeechBrain's three stages.

    Subclasses only choose the features and build ``embedding_model``. ``config``
    holds the constructor arguments (JSON-serialisable) so a checkpoint can rebuild it.
    """

    sample_rate = SAMPLE_RATE
    #: embed the rows of a padded batch one by one, cropped to their length (for features
    #: that cannot take relative lengths, e.g. Kaldi fbank + sentence mean normalisation)
    rowwise_padding = False

    def __init__(self, feature_type: str, feature_kwargs: dict, embedding_model: EmbeddingModel):
        super().__init__()
        self.feature_type = feature_type
        self.feature_kwargs = dict(feature_kwargs)
        self.compute_features = build_features(feature_type, **feature_kwargs)
        self.norm_kwargs = {"norm_type": "sentence", "std_norm": False}
        self.mean_var_norm = InputNormalization(**self.norm_kwargs)
        self.embedding_model = embedding_model
        self.config: dict = {}

    @property
    def dimension(self) -> int:
        return self.embedding_model.dimension

    @property
    def min_duration(self) -> float:
        """Turns shorter than this (seconds) are repeat-padded inside the model."""
        return self.embedding_model.min_frames * FRAME_SHIFT

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if wavs.ndim != 2:
            raise ValueError(f"{type(self).__name__}: expected (batch, time) waveforms, got {tuple(wavs.shape)}")
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        if self.rowwise_padding and bool((wav_lens < 1).any()):
            n = (wav_lens * wavs.shape[1]).round().long().clamp(1, wavs.shape[1]).tolist()
            return torch.cat([self(wavs[i : i + 1, :k]) for i, k in enumerate(n)])
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, wav_lens)
        return self.embedding_model(feats, wav_lens).squeeze(1)
