"""Our turn-embedding checkpoint inside pyannote's STOCK ``SpeakerDiarization`` pipeline.

The stock pipeline needs a segmentation model and a PLDA that cannot be downloaded here:
``benchmarks/stock_pyannote.py`` builds an architecture-identical (random) PyanNet
segmentation checkpoint and PLDA files of valid shapes; the embedding is OUR
``TurnEmbeddingModel`` saved by ``save_pyannote_checkpoint`` (GE2E backbone, pretrained).
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
    import pyannote.audio
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import SpeakerDiarization
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
    from pyannote.core import Annotation

    from xmodal_diar.adapters.pyannote import TurnEmbeddingModel, save_pyannote_checkpoint

from xmodal_diar.audio import SAMPLE_RATE, load_audio
from xmodal_diar.models import build_encoder

SAMPLE_WAV = Path(pyannote.audio.__file__).resolve().parent / "sample" / "sample.wav"


def _load_stock_pyannote():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stock_pyannote.py"
    spec = importlib.util.spec_from_file_location("stock_pyannote", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stock = _load_stock_pyannote()


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE_WAV.is_file():
        pytest.skip(f"{SAMPLE_WAV} is absent from the installed pyannote.audio")
    waveform = load_audio(SAMPLE_WAV)
    return {"waveform": waveform[None], "sample_rate": SAMPLE_RATE, "uri": "sample"}


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """Our GE2E turn-embedding model and its pyannote checkpoint."""
    torch.manual_seed(0)
    model = TurnEmbeddingModel.from_encoder(build_encoder("ge2e")).eval()
    path = save_pyannote_checkpoint(model, tmp_path_factory.mktemp("ours") / "pytorch_model.bin")
    return model, path


def test_segmentation_model_is_a_powerset_pyannet_like_segmentation_3(tmp_path):
    model = stock.build_segmentation_model(seed=0)
    spec = model.specifications
    assert spec.powerset and spec.num_powerset_classes == 7  # {}, 3 singles, 3 pairs
    assert spec.duration == 10.0 and len(spec.classes) == 3
    assert model.lstm.num_layers == 4 and model.lstm.hidden_size == 128 and model.lstm.bidirectional
    assert [layer.out_features for layer in model.linear] == [128, 128]
    assert model.classifier.out_features == 7
    # powerset outputs are log-probabilities over the 7 classes for 589 frames of 10 s
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 160000))
    assert out.shape == (2, 589, 7)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 589), atol=1e-4)
    # biased towards one speaker per frame, so that the stock pipeline's steps all run
    single = out.argmax(-1).flatten()
    assert ((single >= 1) & (single <= 3)).float().mean() > 0.9


def test_plda_files_load_in_pyannote(tmp_path):
    folder = stock.write_plda(tmp_path, dimension=256)
    plda = PLDA.from_pretrained(str(folder))
    features = plda(np.random.default_rng(0).standard_normal((5, 256)))
    assert features.shape == (5, 128) and np.isfinite(features).all()
    assert plda.phi.shape == (128,) and (plda.phi > 0).all()
    assert np.all(np.diff(plda.phi) <= 0)  # eigenvalues sorted decreasingly
    with pytest.raises(ValueError, match="dimension"):
        stock.write_plda(tmp_path / "small", dimension=64)


def test_stock_embedding_wrapper_gets_our_embeddings(ours, sample):
    """``PretrainedSpeakerEmbedding(checkpoint)`` (what the stock pipeline calls) equals our
    model's ``forward(waveforms, weights=masks)``, and the masks select samples."""
    model, path = ours
    embedding = PretrainedSpeakerEmbedding(str(path))
    assert embedding.dimension == model.dimension == 256
    assert embedding.metric == "cosine"

    n = 3 * SAMPLE_RATE
    waveforms = torch.stack([sample["waveform"][:, i * n : (i + 1) * n] for i in (2, 3, 4)])  # (3, 1, 3 s)
    frames = 100
    masks = torch.zeros(3, frames)
    masks[0] = 1.0  # everything
    masks[1, : frames // 2] = 1.0  # first half
    masks[2, frames // 2 :] = 1.0  # second half
    stock_out = embedding(waveforms, masks=masks)
    with torch.inference_mode():
        ours_out = model(waveforms, weights=masks).numpy()
        first_half = model(waveforms[1:2, :, : n // 2]).numpy()
    alone = embedding(waveforms[1:2], masks=masks[1:2])
    assert stock_out.shape == (3, 256)
    np.testing.assert_allclose(stock_out, ours_out, rtol=1e-4, atol=1e-5)
    # a mask keeps only its frames: alone in its batch (no padding), the first-half mask
    # embeds exactly the first 1.5 s
    np.testing.assert_allclose(alone[0], first_half[0], rtol=1e-4, atol=1e-5)
    cosine = stock_out @ stock_out.T / np.outer(np.linalg.norm(stock_out, axis=1), np.linalg.norm(stock_out, axis=1))
    assert cosine[1, 2] < 0.999  # different halves give different embeddings


def test_stock_speaker_diarization_runs_with_our_embedding(ours, sample, tmp_path):
    model, path = ours
    paths = stock.build_stock_models(tmp_path, embedding=model)
    paths["embedding"] = str(path)  # the checkpoint saved by save_pyannote_checkpoint
    pipeline = SpeakerDiarization(**paths, **stock.STOCK_PIPELINE_KWARGS)
    pipeline.instantiate(pipeline.default_parameters())
    assert pipeline.parameters(instantiated=True)["clustering"]["threshold"] == 0.6

    steps = {}
    file = {**sample, "waveform": sample["waveform"][:, : 30 * SAMPLE_RATE]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. a NaN centroid when VBx gets < 2 embeddings
        output = pipeline(file, hook=lambda step, artefact, **kw: steps.__setitem__(step, artefact))

    embeddings = steps["embeddings"]
    num_chunks = 21  # 10 s windows every 1 s over 30 s
    assert embeddings.shape == (num_chunks, 3, 256)
    assert np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-4)  # ours are unit-norm
    # enough (chunk, speaker) pairs speak alone for VBx to cluster them (it skips below 2)
    train, _, _ = pipeline.clustering.filter_embeddings(embeddings, segmentations=steps["segmentation"])
    assert len(train) >= 10

    assert isinstance(output, DiarizeOutput)
    diarization = output.speaker_diarization
    assert isinstance(diarization, Annotation) and diarization.uri == "sample"
    assert len(diarization.labels()) >= 1 and all(label.startswith("SPEAKER_") for label in diarization.labels())
    extent = diarization.get_timeline().extent()
    assert 0.0 <= extent.start and extent.end <= 30.0 + 1e-6
    # VBx ran on our embeddings through the PLDA: one finite centroid per speaker
    assert output.speaker_embeddings.shape == (len(diarization.labels()), 256)
    assert np.isfinite(output.speaker_embeddings).all()
