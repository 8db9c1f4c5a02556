"""ECAPA-TDNN turn encoder (Desplanques et al., Interspeech 2020), SpeechBrain's implementation.

Defaults are a small ECAPA (256 channels) that trains on a CPU; SpeechBrain's VoxCeleb
model is ``channels=(1024, 1024, 1024, 1024, 3072)``, ``lin_neurons=192``, 80 mels:
:class:`ECAPAVoxCelebTurnEncoder` loads its released weights (``spkrec-ecapa-voxceleb``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder
from xmodal_diar.models.pretrained import freeze_in_state_dict, load_pretrained


class ECAPAEmbedding(EmbeddingModel):
    """:class:`speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN` with repeat padding and L2 norm."""

    def __init__(
        self,
        input_size: int = 80,
        channels: Sequence[int] = (256, 256, 256, 256, 768),
        attention_channels: int = 64,
        se_channels: int = 64,
        dimension: int = 192,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        self.ecapa = ECAPA_TDNN(
            input_size=input_size,
            channels=list(channels),
            attention_channels=attention_channels,
            se_channels=se_channels,
            lin_neurons=dimension,
        )

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.ecapa(feats, lengths)


class ECAPATurnEncoder(TurnEncoder):
    """ECAPA-TDNN on SpeechBrain ``Fbank`` (``n_mels`` log mel filterbanks)."""

    def __init__(
        self,
        n_mels: int = 80,
        channels: Sequence[int] = (256, 256, 256, 256, 768),
        attention_channels: int = 64,
        se_channels: int = 64,
        dimension: int = 192,
        min_frames: int = 50,
    ):
        embedding_config = dict(input_size=n_mels, channels=list(channels), attention_channels=attention_channels,
                                se_channels=se_channels, dimension=dimension, min_frames=min_frames)
        super().__init__("fbank", {"n_mels": n_mels}, ECAPAEmbedding(**embedding_config))
        self.embedding_config = embedding_config
        self.config = dict(n_mels=n_mels, **{k: v for k, v in embedding_config.items() if k != "input_size"})


#: Registry name (:mod:`xmodal_diar.weights`) of SpeechBrain's ``spkrec-ecapa-voxceleb``.
VOXCELEB_WEIGHTS = "ecapa-voxceleb"
VOXCELEB_CHANNELS = (1024, 1024, 1024, 1024, 3072)


class ECAPAVoxCelebEmbedding(ECAPAEmbedding):
    """SpeechBrain's VoxCeleb ECAPA-TDNN (1024 channels, 192-D) with its released weights.

    The weights (``embedding_model.ckpt`` of ``spkrec-ecapa-voxceleb``) are loaded at
    construction from the model cache; ``frozen``: not trained, and left out of
    ``state_dict()`` (see :mod:`xmodal_diar.models.pretrained`).
    """

    def __init__(self, pretrained: Optional[str] = VOXCELEB_WEIGHTS, frozen: bool = True, min_frames: int = 50):
        super().__init__(80, VOXCELEB_CHANNELS, attention_channels=128, se_channels=128, dimension=192,
                         min_frames=min_frames)
        if pretrained is not None:
            load_pretrained(self.ecapa, pretrained, "embedding_model.ckpt")
        if frozen:
            freeze_in_state_dict(self, "ecapa")


class ECAPAVoxCelebTurnEncoder(TurnEncoder):
    """``spkrec-ecapa-voxceleb`` as a turn encoder: SpeechBrain ``Fbank`` (80 mels), sentence
    mean normalisation and ``ECAPA_TDNN``, the three stages of its ``hyperparams.yaml``."""

    def __init__(self, pretrained: Optional[str] = VOXCELEB_WEIGHTS, frozen: bool = True, min_frames: int = 50):
        embedding_config = dict(pretrained=pretrained, frozen=frozen, min_frames=min_frames)
        super().__init__("fbank", {"n_mels": 80}, ECAPAVoxCelebEmbedding(**embedding_config))
        self.embedding_config = embedding_config
        self.config = dict(embedding_config)
