"""TristouNet-style turn encoder (Bredin, ICASSP 2017), the base of Le & Odobez 2017.

MFCC (+ deltas) -> 2-layer BiLSTM -> temporal average pooling -> dense (tanh) -> L2 norm.
Default sizes are TristouNet's (16 units per LSTM direction, dense 16-16).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder, masked_mean


class TristouNetEmbedding(EmbeddingModel):
    """BiLSTM + average pooling + dense layers; input ``(B, L, input_size)``."""

    def __init__(
        self,
        input_size: int = 60,
        lstm_hidden: int = 16,
        lstm_layers: int = 2,
        dense: Sequence[int] = (16,),
        dimension: int = 16,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        self.lstm = nn.LSTM(input_size, lstm_hidden, num_layers=lstm_layers, batch_first=True, bidirectional=True)
        layers, size = [], 2 * lstm_hidden
        for width in dense:
            layers += [nn.Linear(size, width), nn.Tanh()]
            size = width
        layers.append(nn.Linear(size, dimension))
        self.head = nn.Sequential(*layers)

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n = (lengths * feats.shape[1]).round().clamp(1, feats.shape[1]).long().cpu()
        packed = nn.utils.rnn.pack_padded_sequence(feats, n, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.head(masked_mean(out, lengths))


class TristouNet(TurnEncoder):
    """TristouNet on SpeechBrain MFCCs (``n_mfcc`` coefficients with deltas and delta-deltas)."""

    def __init__(
        self,
        n_mfcc: int = 20,
        lstm_hidden: int = 16,
        lstm_layers: int = 2,
        dense: Sequence[int] = (16,),
        dimension: int = 16,
        min_frames: int = 50,
    ):
        embedding_config = dict(input_size=3 * n_mfcc, lstm_hidden=lstm_hidden, lstm_layers=lstm_layers,
                                dense=list(dense), dimension=dimension, min_frames=min_frames)
        super().__init__("mfcc", {"n_mfcc": n_mfcc, "deltas": True, "context": False},
                         TristouNetEmbedding(**embedding_config))
        self.embedding_config = embedding_config
        self.config = dict(n_mfcc=n_mfcc, **{k: v for k, v in embedding_config.items() if k != "input_size"})
