"""A pretrained speaker trunk with a small trainable head, the encoder of the face-regularised recipes.

``e = normalize(h(normalize(trunk(x))))``, with the head ``h`` either affine
(``hidden=[]``: ``h(u) = W u + b``, initialised to the identity, so training starts from
the bare trunk) or a residual MLP ``h(u) = u + W2 relu(W1 u)`` (``W2`` initialised to 0)
projected to ``dimension``. The trunk is a :mod:`xmodal_diar.weights` name:

- ``campplus``: CAM++ on Kaldi fbank (:mod:`xmodal_diar.models.campplus`);
- ``ecapa-voxceleb``: SpeechBrain's VoxCeleb ECAPA-TDNN (:mod:`xmodal_diar.models.ecapa`).

``frozen=True`` (default): the trunk is not trained and checkpoints hold the head only
(a few hundred kB); the trunk is rebuilt from the model cache at load time.
``frozen=False`` fine-tunes it, and checkpoints then hold it too.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder
from xmodal_diar.models.campplus import CAMPPlusEmbedding
from xmodal_diar.models.ecapa import ECAPAVoxCelebEmbedding

#: trunk name -> (feature type, feature kwargs, embedding model class, trunk dimension)
TRUNKS = {
    "campplus": ("kaldi_fbank", {"n_mels": 80}, CAMPPlusEmbedding, 192),
    "ecapa-voxceleb": ("fbank", {"n_mels": 80}, ECAPAVoxCelebEmbedding, 192),
}


def _trunk(name: str):
    try:
        return TRUNKS[name]
    except KeyError:
        raise ValueError(f"unknown trunk {name!r}: expected one of {sorted(TRUNKS)}") from None


class EmbeddingHead(nn.Module):
    """Affine map initialised to the identity, or a residual MLP (see the module docstring)."""

    def __init__(self, in_dim: int, dimension: int, hidden: Sequence[int] = ()):
        super().__init__()
        self.mlp = nn.Sequential()
        dims = [in_dim, *hidden]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            self.mlp.add_module(f"linear{i}", nn.Linear(a, b))
            self.mlp.add_module(f"relu{i}", nn.ReLU())
        if hidden:
            self.mlp.add_module("out", nn.Linear(dims[-1], in_dim))
            nn.init.zeros_(self.mlp.out.weight)
            nn.init.zeros_(self.mlp.out.bias)
        self.projection = nn.Linear(in_dim, dimension)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(dimension, in_dim))
            self.projection.bias.zero_()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if len(self.mlp):
            u = u + self.mlp(u)
        return self.projection(u)


class TrunkHeadEmbedding(EmbeddingModel):
    """``(feats, lengths) -> (B, 1, dimension)``: the trunk's embedding, then the head."""

    def __init__(
        self,
        trunk: str = "campplus",
        frozen: bool = True,
        dimension: int = 192,
        hidden: Sequence[int] = (),
        pretrained: bool = True,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        _, _, trunk_cls, trunk_dim = _trunk(trunk)
        self.frozen = frozen
        self.trunk = trunk_cls(pretrained=trunk if pretrained else None, frozen=frozen, min_frames=min_frames)
        self.head = EmbeddingHead(trunk_dim, dimension, list(hidden))

    def trunk_embedding(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The bare trunk's unit-norm embeddings ``(B, trunk_dim)`` (what a frozen-trunk cache stores)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.trunk(feats, lengths).squeeze(1)

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk_embedding(feats, lengths))


class TrunkHeadEncoder(TurnEncoder):
    """Waveforms -> trunk features -> trunk -> head (see the module docstring)."""

    def __init__(
        self,
        trunk: str = "campplus",
        frozen: bool = True,
        dimension: int = 192,
        hidden: Sequence[int] = (),
        pretrained: bool = True,
        min_frames: int = 50,
    ):
        feature_type, feature_kwargs, _, _ = _trunk(trunk)
        embedding_config = dict(trunk=trunk, frozen=frozen, dimension=dimension, hidden=list(hidden),
                                pretrained=pretrained, min_frames=min_frames)
        super().__init__(feature_type, feature_kwargs, TrunkHeadEmbedding(**embedding_config))
        self.rowwise_padding = feature_type == "kaldi_fbank"
        #: True while a recipe feeds cached trunk embeddings (B, trunk_dim) instead of waveforms
        #: (:mod:`xmodal_diar.training.trunk_cache`); never saved
        self.cached_inputs = False
        self.embedding_config = embedding_config
        self.config = dict(embedding_config)

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.cached_inputs:
            return self.head_embedding(wavs)
        return super().forward(wavs, wav_lens)

    def trunk_embedding(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The bare trunk's embeddings of waveforms ``(B, T)``."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.mean_var_norm(self.compute_features(wavs), wav_lens)
        return self.embedding_model.trunk_embedding(feats, wav_lens)

    def head_embedding(self, trunk_embeddings: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings from cached trunk embeddings ``(B, trunk_dim)``: ``forward`` = this o trunk."""
        return F.normalize(self.embedding_model.head(trunk_embeddings), dim=-1)
