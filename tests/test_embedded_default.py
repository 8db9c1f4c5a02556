"""The model embedded in the package: complete, tuned, and its pipeline uses the encoder its config names."""

from __future__ import annotations

import json

import torch
import yaml

import xmodal_diar
from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder
from xmodal_diar.audio import load_audio
from xmodal_diar.pipelines import DEFAULT_MODEL_DIR, BroadcastDiarization

def test_model_dir_is_complete_and_small():
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"config.yaml", "pytorch_model.bin", "hyperparams.yaml", "embedding_model.ckpt", "README.md"} <= names
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()) < 25 * 2**20
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "train-clean-100-1utt" in card and "EER" in card and "segmentation-3.0" in card
    tuning = json.loads((DEFAULT_MODEL_DIR / "tuning.json").read_text())  # recipes/SharedData/Diarization
    # the written values are the point the grid search on the train files kept: the lowest
    # loss, or (``--flat``) the best at the median threshold of the flat range, within it
    best = min(point["der"] for point in tuning["points"])
    assert tuning["after"]["train"] in [point["der"] for point in tuning["points"]]
    assert best <= tuning["after"]["train"] <= best + (0.001 if "--flat 0.001" in tuning["command"] else 0.0)
    assert tuning["params"] == yaml.safe_load((DEFAULT_MODEL_DIR / "config.yaml").read_text())["params"]

def test_pipeline_encoder_is_the_one_its_config_names(tmp_path, librispeech_test):
    """``$model/pytorch_model.bin``: the same as SpeechBrain's view of the dir; a trunk name:
    that registered pretrained encoder."""
    from xmodal_diar.adapters.pyannote import TurnEmbeddingModel

    pipeline = xmodal_diar.load_pipeline()
    assert isinstance(pipeline, BroadcastDiarization)
    embedding = yaml.safe_load((DEFAULT_MODEL_DIR / "config.yaml").read_text())["pipeline"]["params"]["embedding"]
    wav = load_audio(sorted(librispeech_test.glob("*/*.flac"))[0], start=0.0, end=2.0)
    with torch.no_grad():
        ours = pipeline._embedding_model(wav[None, None])
        if embedding.startswith("$model/"):
            theirs = load_speechbrain_encoder(DEFAULT_MODEL_DIR, savedir=tmp_path).encode_batch(wav[None])[:, 0]
        else:
            theirs = TurnEmbeddingModel(encoder=embedding).eval()(wav[None, None])
    assert ours.shape == theirs.shape and ours.shape[0] == 1
    assert (ours - theirs).abs().max() < 1e-4
