"""Written as a pyannote.audio 4 user would: our exported Model in ``Inference`` with sliding
windows, and our SpeechBrain export inside pyannote's STOCK ``SpeakerDiarization``.

The stock pipeline gets the real segmentation-3.0 weights shipped in the package; it
always loads a PLDA, which cannot be downloaded here, so the PLDA files are built with
valid shapes by ``benchmarks/stock_pyannote.py`` (random: the clustering numbers are
meaningless, the computation is pyannote's). ``DiarizeOutput`` of our own pipeline is
tested with the pipeline (tests/test_pipeline_*).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # pyannote warns at import that torchcodec cannot decode here
    warnings.simplefilter("ignore")
    from pyannote.audio import Inference
    from pyannote.audio.pipelines import SpeakerDiarization
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
    from pyannote.core import Annotation, SlidingWindowFeature

from xmodal_diar.adapters.pyannote import TurnEmbeddingModel
from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder
from xmodal_diar.audio import SAMPLE_RATE, load_audio
from xmodal_diar.pipelines import DEFAULT_MODEL_DIR
from xmodal_diar.weights import weights_path


def _stock():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stock_pyannote.py"
    spec = importlib.util.spec_from_file_location("stock_pyannote", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    return TurnEmbeddingModel.from_speechbrain(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def meeting(ami_debug):
    wav = ami_debug / "dev00.wav"
    return {"waveform": load_audio(wav)[None], "sample_rate": SAMPLE_RATE, "uri": "dev00"}


def test_from_speechbrain_equals_encoder_classifier(model, tmp_path, meeting):
    classifier = load_speechbrain_encoder(DEFAULT_MODEL_DIR, savedir=tmp_path)
    wavs = meeting["waveform"][:, : 2 * SAMPLE_RATE]
    with torch.inference_mode():
        ours = model(wavs[None])
        theirs = classifier.encode_batch(wavs).reshape(1, -1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not an xmodal-diar SpeechBrain export"):
        TurnEmbeddingModel.from_speechbrain(tmp_path)


def test_sliding_window_inference(model, meeting):
    file = {**meeting, "waveform": meeting["waveform"][:, : 10 * SAMPLE_RATE]}
    embeddings = Inference(model, window="sliding", duration=3.0, step=1.0)(file)
    assert isinstance(embeddings, SlidingWindowFeature)
    assert embeddings.data.shape == (8, model.dimension)  # 3 s windows every 1 s over 10 s
    assert embeddings.sliding_window.duration == 3.0 and embeddings.sliding_window.step == 1.0
    with torch.inference_mode():
        third = model(file["waveform"][None, :, 2 * SAMPLE_RATE : 5 * SAMPLE_RATE])[0].numpy()
    np.testing.assert_allclose(embeddings.data[2], third, rtol=1e-4, atol=1e-5)
    assert model.receptive_field.duration == 0.025 and model.receptive_field.step == 0.01


def test_stock_speaker_diarization_with_our_speechbrain_export(model, meeting, tmp_path):
    """``SpeakerDiarization(embedding=TurnEmbeddingModel.from_speechbrain(dir))``: no ``token=``
    reaches SpeechBrain, no library is patched."""
    stock = _stock()
    pipeline = SpeakerDiarization(
        segmentation=str(weights_path("segmentation-3.0")),
        embedding=model,
        plda=str(stock.write_plda(tmp_path / "plda", dimension=model.dimension)),
        **stock.STOCK_PIPELINE_KWARGS,
    ).instantiate(stock.STOCK_PIPELINE_PARAMS)
    steps = {}
    output = pipeline(meeting, hook=lambda step, artefact, **kw: steps.__setitem__(step, artefact))
    assert isinstance(output, DiarizeOutput)
    assert isinstance(output.speaker_diarization, Annotation) and output.speaker_diarization.uri == "dev00"
    assert len(output.speaker_diarization.labels()) >= 1
    embeddings = steps["embeddings"]
    assert embeddings.shape[-1] == model.dimension and np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-4)  # ours are unit-norm


def test_our_pipeline_returns_diarize_output(meeting):
    import xmodal_diar

    pipeline = xmodal_diar.load_pipeline()
    output = pipeline({**meeting, "waveform": meeting["waveform"][:, : 20 * SAMPLE_RATE]})
    assert isinstance(output, DiarizeOutput)
    labels = output.speaker_diarization.labels()
    assert output.exclusive_speaker_diarization.labels() == labels
    assert output.speaker_embeddings.shape[0] == len(labels)
