"""Pinned pretrained speaker encoders (:mod:`xmodal_diar.weights`) as pipeline embeddings.

``speaker_model("ecapa-voxceleb")`` is SpeechBrain's ``spkrec-ecapa-voxceleb`` loaded through
SpeechBrain's own ``EncoderClassifier.from_hparams`` from the local weights folder, as a
pyannote ``Model`` (``forward(waveforms (B, 1, T), weights=None, wav_lens=None) -> (B, 192)``)
so that both :class:`~xmodal_diar.pipelines.BroadcastDiarization` and the stock
``pyannote.audio.pipelines.SpeakerDiarization`` can use it. Frame ``weights`` (pyannote's
overlap masks) are handled by :meth:`xmodal_diar.adapters.pyannote.TurnEmbeddingModel.forward`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from torch import nn

from xmodal_diar.adapters.pyannote import TurnEmbeddingModel

#: Names accepted by :func:`speaker_model` (entries of ``python -m xmodal_diar.weights list``).
PRETRAINED_ENCODERS = ("ecapa-voxceleb",)


class SpeechBrainEncoder(nn.Module):
    """SpeechBrain ``EncoderClassifier`` from a local folder: ``(B, T)[, wav_lens] -> (B, D)``."""

    min_duration = 0.1

    def __init__(self, source: Path):
        super().__init__()
        from speechbrain.inference.speaker import EncoderClassifier

        source = Path(source)
        classifier = EncoderClassifier.from_hparams(
            source=str(source), savedir=str(source), overrides={"pretrained_path": str(source)}, run_opts={"device": "cpu"}
        )
        self.mods = classifier.mods  # registered, so .to(device) moves them
        self._classifier = classifier
        self.dimension = int(classifier.hparams.embedding_model.fc.conv.out_channels)

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._classifier.device = wavs.device
        return self._classifier.encode_batch(wavs, wav_lens).squeeze(1)


class PretrainedSpeakerModel(TurnEmbeddingModel):
    """A pinned pretrained encoder as a pyannote embedding ``Model`` (not a saved checkpoint)."""

    def __init__(self, name: str = "ecapa-voxceleb", duration: float = 10.0):
        Model.__init__(self, sample_rate=16000, num_channels=1)
        from xmodal_diar.weights import weights_dir

        if name not in PRETRAINED_ENCODERS:
            raise ValueError(f"embedding: unknown pretrained encoder {name!r}; expected one of {PRETRAINED_ENCODERS}")
        self.name = name
        self.encoder = SpeechBrainEncoder(weights_dir(name))
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=duration, min_duration=0.1
        )

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def forward(self, waveforms, weights=None, wav_lens=None):
        if wav_lens is not None:
            return self.encoder(waveforms[:, 0], wav_lens)
        return super().forward(waveforms, weights)


def speaker_model(name: str) -> PretrainedSpeakerModel:
    """The pinned pretrained encoder ``name`` (see :data:`PRETRAINED_ENCODERS`), in eval mode."""
    return PretrainedSpeakerModel(name).eval()
