"""Ecosystem adapters: pyannote Model checkpoints and SpeechBrain EncoderClassifier export."""

from __future__ import annotations

import os

import pytest
import torch
from pyannote.audio import Inference, Model

from xmodal_diar.adapters.pyannote import TurnEmbeddingModel, load_turn_embedding_model, save_pyannote_checkpoint
from xmodal_diar.adapters.speechbrain import export_speechbrain, load_speechbrain_encoder
from xmodal_diar.audio import load_audio
from xmodal_diar.models import build_encoder

SMALL_ECAPA = {"channels": [32, 32, 32, 32, 96], "attention_channels": 16, "se_channels": 16, "dimension": 24}


@pytest.fixture(scope="module")
def ecapa():
    torch.manual_seed(0)
    return build_encoder("ecapa", **SMALL_ECAPA).eval()


@pytest.mark.parametrize("name", ["tristounet", "ecapa", "xvector", "ge2e"])
def test_speechbrain_round_trip_on_real_audio(tmp_path, librispeech_test, name):
    torch.manual_seed(0)
    encoder = build_encoder(name, **(SMALL_ECAPA if name == "ecapa" else {})).eval()
    export_speechbrain(encoder, tmp_path / "model")
    hparams = (tmp_path / "model" / "hyperparams.yaml").read_text()
    assert "paths:" not in hparams and "speechbrain/" not in hparams
    classifier = load_speechbrain_encoder(tmp_path / "model", savedir=tmp_path / "savedir")
    files = sorted(librispeech_test.glob("*/*.flac"))[:3]
    wavs = [load_audio(f, start=0.0, end=d) for f, d in zip(files, (1.0, 2.5, 0.3))]
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lens = torch.tensor([len(w) for w in wavs], dtype=torch.float32) / batch.shape[1]
    with torch.no_grad():
        ours = encoder(batch, lens)
        theirs = classifier.encode_batch(batch, lens)
    assert theirs.shape == (3, 1, encoder.dimension)
    assert (ours - theirs[:, 0]).abs().max() < 1e-5


def test_pyannote_checkpoint_loads_with_model_from_pretrained(tmp_path, ecapa):
    path = save_pyannote_checkpoint(ecapa, tmp_path)
    assert path.name == "pytorch_model.bin"
    ckpt = torch.load(path, weights_only=False)
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version", "pyannote.audio"} <= set(ckpt)
    model = Model.from_pretrained(path)
    assert isinstance(model, TurnEmbeddingModel) and model.dimension == 24
    x = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ecapa(x[:, 0]), atol=1e-6)


def test_pyannote_inference_whole_file(tmp_path, ecapa, ami_debug):
    model = load_turn_embedding_model(save_pyannote_checkpoint(ecapa, tmp_path))
    inference = Inference(model, window="whole")
    wav = load_audio(ami_debug / "dev00.wav", start=0, end=5)
    emb = inference({"waveform": wav[None], "sample_rate": 16000})
    assert emb.shape == (24,)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(emb), ecapa(wav[None])[0], atol=1e-5)


def test_weights_drop_masked_frames(ecapa):
    model = TurnEmbeddingModel.from_encoder(ecapa).eval()
    speech = torch.randn(1, 1, 16000) * 0.1
    noise = torch.randn(1, 1, 16000)
    both = torch.cat([speech, noise], -1)
    weights = torch.cat([torch.ones(1, 50), torch.zeros(1, 50)], 1)
    with torch.no_grad():
        assert torch.allclose(model(both, weights=weights), model(speech), atol=1e-4)
        assert not torch.allclose(model(both), model(speech), atol=1e-2)


def test_wrong_kind_of_checkpoint_is_rejected(tmp_path):
    bogus = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match="not a pyannote.audio checkpoint"):
        load_turn_embedding_model(bogus)
    other = tmp_path / "other.bin"
    torch.save({"pyannote.audio": {"architecture": {"module": "pyannote.audio.models.segmentation", "class": "PyanNet"}}}, other)
    with pytest.raises(ValueError, match="PyanNet, not of a speaker-turn embedding model"):
        load_turn_embedding_model(other)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_turn_embedding_model(garbage)
    with pytest.raises(FileNotFoundError, match="missing hyperparams.yaml"):
        load_speechbrain_encoder(tmp_path)
