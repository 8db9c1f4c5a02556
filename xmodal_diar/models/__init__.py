"""Speaker-turn encoders: ``forward(wavs (B, T), wav_lens (B,)) -> (B, D)`` unit-norm.

All are :class:`~xmodal_diar.models.base.TurnEncoder`s built on SpeechBrain features
and backbones, usable from hyperpyyaml (``!new:xmodal_diar.models.ECAPATurnEncoder``).
"""

from __future__ import annotations

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder, repeat_pad_frames
from xmodal_diar.models.campplus import CAMPPlus, CAMPPlusEmbedding, CAMPPlusTurnEncoder
from xmodal_diar.models.ecapa import ECAPAEmbedding, ECAPATurnEncoder, ECAPAVoxCelebEmbedding, ECAPAVoxCelebTurnEncoder
from xmodal_diar.models.ge2e import GE2EEmbedding, GE2ETurnEncoder
from xmodal_diar.models.heads import TRUNKS, EmbeddingHead, TrunkHeadEmbedding, TrunkHeadEncoder
from xmodal_diar.models.tristounet import TristouNet, TristouNetEmbedding
from xmodal_diar.models.xvector import XvectorEmbedding, XvectorTurnEncoder

#: Short names used by checkpoints, CLIs and YAML.
ENCODERS = {
    "tristounet": TristouNet,
    "ecapa": ECAPATurnEncoder,
    "xvector": XvectorTurnEncoder,
    "ge2e": GE2ETurnEncoder,
    "campplus": CAMPPlusTurnEncoder,
    "ecapa-voxceleb": ECAPAVoxCelebTurnEncoder,
    "trunk_head": TrunkHeadEncoder,
}


def encoder_name(encoder: TurnEncoder) -> str:
    for name, cls in ENCODERS.items():
        if type(encoder) is cls:
            return name
    raise ValueError(f"{type(encoder).__name__} is not one of the registered encoders {sorted(ENCODERS)}")


def build_encoder(name: str, **config) -> TurnEncoder:
    """Instantiate a registered encoder by short name (see :data:`ENCODERS`)."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}: expected one of {sorted(ENCODERS)}") from None
    return cls(**config)


__all__ = [
    "TurnEncoder", "EmbeddingModel", "repeat_pad_frames", "TristouNet", "TristouNetEmbedding",
    "ECAPATurnEncoder", "ECAPAEmbedding", "GE2ETurnEncoder", "GE2EEmbedding", "XvectorTurnEncoder", "XvectorEmbedding",
    "CAMPPlus", "CAMPPlusEmbedding", "CAMPPlusTurnEncoder", "ECAPAVoxCelebEmbedding", "ECAPAVoxCelebTurnEncoder",
    "TRUNKS", "EmbeddingHead", "TrunkHeadEmbedding", "TrunkHeadEncoder",
    "ENCODERS", "build_encoder", "encoder_name",
]
