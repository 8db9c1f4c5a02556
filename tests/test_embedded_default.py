"""The model embedded in the package: loads offline three ways, agrees with itself, diarizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from pyannote.core import Annotation
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

import xmodal_diar
from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder
from xmodal_diar.audio import load_audio
from xmodal_diar.pipelines import DEFAULT_MODEL_DIR, BroadcastDiarization

SAMPLE_DIR = Path(importlib.util.find_spec("pyannote.audio").origin).parent / "sample"


def test_model_dir_is_complete_and_small():
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"config.yaml", "pytorch_model.bin", "hyperparams.yaml", "embedding_model.ckpt", "README.md"} <= names
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()) < 25 * 2**20
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "train-clean-100-1utt" in card and "EER" in card
    tuning = json.loads((DEFAULT_MODEL_DIR / "tuning.json").read_text())  # recipes/SharedData/Diarization
    assert tuning["after"]["train"]["der_full"]["value"] < tuning["before"]["train"]["der_full"]["value"]


def test_speechbrain_and_pipeline_embeddings_agree(tmp_path, librispeech_test):
    pipeline = xmodal_diar.load_pipeline()
    assert isinstance(pipeline, BroadcastDiarization)
    classifier = load_speechbrain_encoder(DEFAULT_MODEL_DIR, savedir=tmp_path)
    wav = load_audio(sorted(librispeech_test.glob("*/*.flac"))[0], start=0.0, end=2.0)
    model = pipeline._embedding_model
    with torch.no_grad():
        ours = model(wav[None, None])
        theirs = classifier.encode_batch(wav[None])[:, 0]
    assert ours.shape == (1, model.dimension)
    assert (ours - theirs).abs().max() < 1e-5


def test_diarizes_the_pyannote_sample():
    """Neither the sample nor its speakers were used for training or tuning."""
    reference = load_rttm(SAMPLE_DIR / "sample.rttm")["sample"]
    hypothesis = xmodal_diar.load_pipeline()({"uri": "sample", "audio": str(SAMPLE_DIR / "sample.wav")})
    assert isinstance(hypothesis, Annotation)
    assert len(hypothesis.labels()) >= 2
    der = DiarizationErrorRate()(reference, hypothesis, uem=reference.get_timeline().extent())
    # measured 0.511 (2 speakers found); a merge-everything output scores about 0.50-0.53
    assert der < 0.6, f"DER {der:.3f} on the pyannote sample"
