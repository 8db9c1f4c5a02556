"""x-vector TDNN turn encoder (Snyder et al., ICASSP 2018), SpeechBrain's implementation.

Defaults are a small TDNN (256 channels) that trains on a CPU; SpeechBrain's VoxCeleb
x-vector uses ``tdnn_channels=(512, 512, 512, 512, 1500)``, ``lin_neurons=512``, 24 mels.
The TDNN's receptive field is 15 frames; shorter turns are repeat-padded (see base).
"""

from __future__ import annotations

from typing import Sequence

import torch
from speechbrain.lobes.models.Xvector import Xvector
from speechbrain.nnet.pooling import StatisticsPooling

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder


class EvalDeterministicStatisticsPooling(StatisticsPooling):
    """SpeechBrain's statistics pooling adds a small Gaussian noise to the mean (1e-5 to
    9e-5) on every call; keep it for training and drop it in eval mode, so that
    inference is deterministic."""

    def _get_gauss_noise(self, shape_of_tensor, device="cpu"):
        if self.training:
            return super()._get_gauss_noise(shape_of_tensor, device=device)
        return torch.zeros(shape_of_tensor, device=device)


class XvectorEmbedding(EmbeddingModel):
    """:class:`speechbrain.lobes.models.Xvector.Xvector` with repeat padding and L2 norm."""

    def __init__(
        self,
        input_size: int = 24,
        tdnn_channels: Sequence[int] = (256, 256, 256, 256, 768),
        dimension: int = 256,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        self.xvector = Xvector(in_channels=input_size, tdnn_channels=list(tdnn_channels), lin_neurons=dimension)
        for i, block in enumerate(self.xvector.blocks):
            if type(block) is StatisticsPooling:
                self.xvector.blocks[i] = EvalDeterministicStatisticsPooling()

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.xvector(feats, lengths)


class XvectorTurnEncoder(TurnEncoder):
    """x-vector TDNN on SpeechBrain ``Fbank`` (``n_mels`` log mel filterbanks)."""

    def __init__(
        self,
        n_mels: int = 24,
        tdnn_channels: Sequence[int] = (256, 256, 256, 256, 768),
        dimension: int = 256,
        min_frames: int = 50,
    ):
        embedding_config = dict(input_size=n_mels, tdnn_channels=list(tdnn_channels),
                                dimension=dimension, min_frames=min_frames)
        super().__init__("fbank", {"n_mels": n_mels}, XvectorEmbedding(**embedding_config))
        self.embedding_config = embedding_config
        self.config = dict(n_mels=n_mels, **{k: v for k, v in embedding_config.items() if k != "input_size"})
