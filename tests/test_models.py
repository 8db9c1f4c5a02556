"""Speaker-turn encoders: shape, unit norm, short turns, determinism, gradients, YAML."""

from __future__ import annotations

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from xmodal_diar.models import ENCODERS, build_encoder, repeat_pad_frames

SMALL = {
    "tristounet": {},
    "ecapa": {"channels": [32, 32, 32, 32, 96], "attention_channels": 16, "se_channels": 16, "dimension": 24},
    "xvector": {"tdnn_channels": [32, 32, 32, 32, 96], "dimension": 24},
    "ge2e": {"dimension": 256},
    # pretrained trunks, randomly initialised here (tests/test_models_trunks.py loads the real weights)
    "campplus": {"pretrained": None, "frozen": False},
    "ecapa-voxceleb": {"pretrained": None, "frozen": False},
    "trunk_head": {"pretrained": False},
}


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request):
    torch.manual_seed(0)
    return build_encoder(request.param, **SMALL[request.param])


def test_shape_unit_norm_and_finite_on_tenth_of_second(encoder):
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.randn(3, 1600) * 0.1)  # 0.1 s: below every receptive field
        mixed = encoder(torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.05]))
    assert out.shape == (3, encoder.dimension)
    assert torch.isfinite(out).all() and torch.isfinite(mixed).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_deterministic_in_eval_mode(encoder):
    encoder.eval()
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))


def test_relative_lengths_mask_the_padding(encoder):
    """A zero-padded turn given its relative length embeds (nearly) like the bare turn, and
    closer than when the padding is not masked. Recurrent encoders pack the sequence, so
    only the boundary frame differs; convolutional ones still see padding in their context."""
    encoder.eval()
    x = torch.randn(1, 12000) * 0.1
    padded = torch.cat([x, torch.zeros(1, 12000)], 1)
    with torch.no_grad():
        bare = encoder(x)
        masked = float((bare * encoder(padded, torch.tensor([0.5]))).sum())
        unmasked = float((bare * encoder(padded)).sum())
    recurrent = type(encoder).__name__ in ("TristouNet", "GE2ETurnEncoder")
    assert masked > (0.99 if recurrent else 0.7)
    assert masked > unmasked


def test_gradients_flow_to_trainable_parameters(encoder):
    encoder.train()
    out = encoder(torch.randn(4, 8000) * 0.1)
    (out[:, 0].sum()).backward()
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert trainable
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_repeat_pad_frames_tiles_valid_frames():
    feats = torch.arange(2 * 10 * 1, dtype=torch.float32).reshape(2, 10, 1)
    out, lens = repeat_pad_frames(feats, torch.tensor([1.0, 0.3]), min_frames=7)
    assert out.shape == (2, 10, 1)
    assert out[1, :7, 0].tolist() == [10, 11, 12, 10, 11, 12, 10]
    assert torch.allclose(lens, torch.tensor([1.0, 0.7]))


def test_encoders_build_from_hyperpyyaml():
    hparams = load_hyperpyyaml(
        """
        encoder: !new:xmodal_diar.models.ECAPATurnEncoder
            channels: [32, 32, 32, 32, 96]
            attention_channels: 16
            se_channels: 16
            dimension: 40
        """
    )
    assert hparams["encoder"].dimension == 40
    assert hparams["encoder"].eval()(torch.randn(1, 4000)).shape == (1, 40)


def test_unknown_encoder_name():
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        build_encoder("resnet")


def test_ge2e_starts_as_resemblyzer_on_long_turns(librispeech_test):
    """With its identity-initialised head, the GE2E encoder is Resemblyzer's network."""
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    from xmodal_diar.audio import load_audio

    wav = load_audio(sorted(librispeech_test.glob("*/*.flac"))[0], start=0.0, end=4.0)
    ours = build_encoder("ge2e").eval()
    with torch.no_grad():
        a = ours(wav[None])[0].numpy()
    b = VoiceEncoder("cpu", verbose=False).embed_utterance(normalize_volume(wav.numpy(), -30, increase_only=True))
    assert float(a @ b) > 0.93
