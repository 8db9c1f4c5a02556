"""VGSR's QAW in training: the speech SNR quality is a column of the quality matrix next to
the face-quality columns, so a noisy crop gets a lower distillation weight."""

from __future__ import annotations

import torch

from xmodal_diar.audio import load_audio
from xmodal_diar.losses.vgsr import QualityAdaptiveWeights
from xmodal_diar.training.brain import quality_matrix


def test_noisy_crop_gets_a_lower_speech_quality_and_weight(librispeech_test):
    flac = sorted(librispeech_test.glob("*/*.flac"))[0]
    clean = load_audio(flac, start=0.0, end=3.0)
    torch.manual_seed(0)
    noisy = clean + clean.std() * torch.randn_like(clean)  # about 0 dB SNR
    short = clean[: 16000]  # a shorter crop, padded in the batch
    wavs = torch.zeros(3, clean.shape[0])
    wavs[0], wavs[1], wavs[2, : short.shape[0]] = clean, noisy, short
    lens = torch.tensor([1.0, 1.0, short.shape[0] / clean.shape[0]])
    face = torch.full((3, 4), 0.5)  # equal face qualities: only speech differs
    q = quality_matrix(face, wavs, lens)
    assert q.shape == (3, 5) and torch.equal(q[:, :4], face)
    assert q[1, 4] < q[0, 4] - 0.2  # the 0 dB crop reads much lower
    assert 0.0 <= float(q[:, 4].min()) and float(q[:, 4].max()) <= 1.0
    assert abs(float(q[2, 4] - q[0, 4])) < 0.35  # padding is not read as silence
    weights = QualityAdaptiveWeights()(q)
    assert weights[1] < weights[0]
