"""GE2E turn encoder on Resemblyzer's pretrained weights (Wan et al., ICASSP 2018).

The backbone is Resemblyzer's speaker encoder (3-layer LSTM, 256 units, over 40 power-mel
frames; trained with the GE2E loss on LibriSpeech + VoxCeleb 1 and 2; its weights ship
inside the ``resemblyzer`` wheel, so they load offline). On top sits a trainable head
``h(e) = normalize(W e + b)`` initialised to the identity, which our recipes train with a
speaker loss and the cross-modal terms (the backbone is frozen by default).

Stages, in SpeechBrain's contract (see :mod:`xmodal_diar.models.base`):

- ``compute_features``: :class:`GE2EMelFeatures`, power mel spectrogram identical to
  ``librosa.feature.melspectrogram`` (n_fft 400, hop 160, 40 Slaney mels) as Resemblyzer uses;
- ``mean_var_norm``: :class:`GE2EVolumeNormalization`, Resemblyzer's "normalise volume to
  -30 dBFS, increase only" done on the features of the valid frames;
- ``embedding_model``: :class:`GE2EEmbedding`, turns cut in partial windows of 160 frames
  (1.6 s, as GE2E was trained) with 50 % overlap, embedded as one batch, averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder

N_MELS = 40
PARTIAL_FRAMES = 160
#: Mean mel-frame power (sum over the 40 bins) of speech at -30 dBFS, measured once on
#: LibriSpeech with GE2EMelFeatures (see tests/test_models.py::test_ge2e_volume_reference).
REFERENCE_FRAME_POWER = 0.337


def resemblyzer_weights_path() -> Path:
    try:
        import resemblyzer
    except ImportError as exc:  # pragma: no cover - resemblyzer is a requirement
        raise ImportError("the ge2e encoder needs the 'resemblyzer' package (pip install resemblyzer)") from exc
    return Path(resemblyzer.__file__).resolve().parent / "pretrained.pt"


class GE2EMelFeatures(nn.Module):
    """``(B, T)`` waveforms to ``(B, L, 40)`` power mel frames (librosa's defaults)."""

    def __init__(self, sample_rate: int = 16000):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=400, hop_length=160, n_mels=N_MELS, power=2.0,
            norm="slaney", mel_scale="slaney", center=True, pad_mode="constant",
        )

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        return self.mel(wavs).transpose(1, 2)


class GE2EVolumeNormalization(nn.Module):
    """Scale each turn's mel power so its valid frames average the -30 dBFS reference (increase only)."""

    def __init__(self, reference_power: float = REFERENCE_FRAME_POWER):
        super().__init__()
        self.reference_power = reference_power

    def forward(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        n = feats.shape[1]
        valid = torch.ones(feats.shape[0], device=feats.device) if lengths is None else lengths
        count = (valid * n).round().clamp(1, n)
        mask = (torch.arange(n, device=feats.device)[None] < count[:, None]).to(feats.dtype)
        power = (feats.sum(-1) * mask).sum(1) / count
        gain = (self.reference_power / power.clamp_min(1e-10)).clamp_min(1.0)
        return feats * gain[:, None, None]


class GE2EEmbedding(EmbeddingModel):
    """Resemblyzer's LSTM + linear + ReLU over 1.6 s partials, averaged, then a trainable head."""

    def __init__(
        self,
        dimension: int = 256,
        pretrained: bool = True,
        freeze_backbone: bool = True,
        partial_frames: int = PARTIAL_FRAMES,
        partial_hop: int = PARTIAL_FRAMES // 2,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        self.partial_hop = partial_hop
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.head = nn.Linear(256, dimension)
        self.partial_frames = partial_frames
        self.freeze_backbone = freeze_backbone
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(dimension, 256))
            self.head.bias.zero_()
        if pretrained:
            state = torch.load(resemblyzer_weights_path(), map_location="cpu")["model_state"]
            self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
            self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        if freeze_backbone:
            for p in list(self.lstm.parameters()) + list(self.linear.parameters()):
                p.requires_grad_(False)

    def _windows(self, n_frames: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
        """Partials of ``partial_frames`` every ``partial_hop`` frames; the last one is
        end-aligned, so every partial of a turn longer than one partial is full-length."""
        owner, starts, sizes = [], [], []
        width, hop = self.partial_frames, self.partial_hop
        for i, n in enumerate(n_frames.tolist()):
            if n <= width:
                turn_starts = [0]
            else:
                turn_starts = list(range(0, n - width + 1, hop))
                if turn_starts[-1] + width < n:
                    turn_starts.append(n - width)
            for s in turn_starts:
                owner.append(i)
                starts.append(s)
                sizes.append(min(width, n - s))
        return owner, starts, sizes

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n_frames = (lengths * feats.shape[1]).round().clamp(1, feats.shape[1]).long()
        owner, starts, sizes = self._windows(n_frames)
        width = max(sizes)
        windows = feats.new_zeros(len(owner), width, feats.shape[-1])
        for j, (i, s, k) in enumerate(zip(owner, starts, sizes)):
            windows[j, :k] = feats[i, s : s + k]
        if min(sizes) < width:
            windows = nn.utils.rnn.pack_padded_sequence(windows, torch.tensor(sizes), batch_first=True, enforce_sorted=False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            _, (hidden, _) = self.lstm(windows)
            partial = F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)
        index = torch.tensor(owner, device=feats.device)
        summed = feats.new_zeros(feats.shape[0], partial.shape[-1]).index_add_(0, index, partial)
        utterance = F.normalize(summed, dim=-1)
        return self.head(utterance)


class GE2ETurnEncoder(TurnEncoder):
    """Pretrained GE2E (Resemblyzer) backbone with a trainable head, on 16 kHz waveforms.

    ``pretrained=True`` loads Resemblyzer's weights at construction (training from YAML);
    checkpoints carry all weights, so the recorded ``config`` says ``pretrained: False``.
    """

    def __init__(self, dimension: int = 256, pretrained: bool = True, freeze_backbone: bool = True,
                 partial_frames: int = PARTIAL_FRAMES, partial_hop: int = PARTIAL_FRAMES // 2, min_frames: int = 50):
        embedding_config = dict(dimension=dimension, pretrained=False, freeze_backbone=freeze_backbone,
                                partial_frames=partial_frames, partial_hop=partial_hop, min_frames=min_frames)
        embedding = GE2EEmbedding(**{**embedding_config, "pretrained": pretrained})
        super().__init__("fbank", {}, embedding)
        self.compute_features = GE2EMelFeatures()
        self.mean_var_norm = GE2EVolumeNormalization()
        self.feature_type, self.feature_kwargs, self.norm_kwargs = "ge2e", {}, {}
        self.embedding_config = embedding_config
        self.config = dict(embedding_config)
