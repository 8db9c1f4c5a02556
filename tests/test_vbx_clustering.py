"""VBx clustering of turn embeddings with the PLDA made by recipes/SharedData/PLDA.

Real embeddings: the packaged PLDA's trunk on the first SECONDS s of UTTERANCES utterances
of each of the 10 held-out speakers of librispeech/test-other-10x10, computed once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal_diar.pipelines.vbx_clustering import DEFAULT_PLDA_DIR, DEFAULT_PLDA_TRUNK, VBxClustering, load_plda

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "SharedData" / "PLDA"
SECONDS = 3.0
UTTERANCES = 6


def _recipe():
    sys.path.insert(0, str(RECIPE))
    try:
        import train_plda
    finally:
        sys.path.pop(0)
    return train_plda


@pytest.fixture(scope="session")
def test_other_embeddings(librispeech_test):
    """(embeddings (10 x UTTERANCES, D), speaker labels), speakers interleaved."""
    from xmodal_diar.audio import load_audio

    recipe = _recipe()
    speakers = recipe.librispeech_speakers(librispeech_test)
    labels, waveforms = [], []
    for speaker, files in sorted(speakers.items()):
        for path in files[:UTTERANCES]:
            labels.append(speaker)
            waveforms.append(load_audio(path, start=0.0, end=SECONDS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embeddings = recipe.load_encoder(DEFAULT_PLDA_TRUNK)(waveforms)
    finally:
        torch.set_num_threads(threads)
    order = np.random.default_rng(0).permutation(len(labels))  # speakers interleaved
    return embeddings[order].astype(np.float64), np.array(labels)[order]


def _purity_coverage(labels, clusters):
    from xmodal_diar.eval.clustering import purity_coverage

    return purity_coverage(labels, clusters)


def test_packaged_plda_loads_with_pyannote(test_other_embeddings):
    from pyannote.audio.core.plda import PLDA

    plda = PLDA.from_pretrained(str(DEFAULT_PLDA_DIR))  # pyannote's own loader
    embeddings, _ = test_other_embeddings
    features = plda(embeddings)
    assert features.shape == (len(embeddings), len(plda.phi))
    assert np.isfinite(features).all()
    assert (plda.phi > 0).all() and (np.diff(plda.phi) <= 0).all()


def test_vbx_recovers_held_out_speakers(test_other_embeddings):
    embeddings, labels = test_other_embeddings
    clustering = VBxClustering()
    clustering.instantiate(clustering.default_parameters())
    clusters, centroids = clustering(embeddings)
    assert centroids.shape == (len(np.unique(clusters)), embeddings.shape[1])
    purity, coverage = _purity_coverage(labels, clusters)
    assert purity >= 0.9 and coverage >= 0.9, (purity, coverage)
    assert abs(len(np.unique(clusters)) - 10) <= 1
    # numbered by first appearance
    _, first = np.unique(clusters, return_index=True)
    assert clusters[0] == 0 and (np.diff(first) > 0).all()


def test_vbx_honours_speaker_counts(test_other_embeddings):
    embeddings, labels = test_other_embeddings
    clustering = VBxClustering()
    clustering.instantiate(clustering.default_parameters())
    assert len(np.unique(clustering(embeddings, num_clusters=10)[0])) == 10
    assert len(np.unique(clustering(embeddings, max_clusters=4)[0])) == 4
    assert len(np.unique(clustering(embeddings, min_clusters=14)[0])) == 14
    clusters, centroids = clustering(embeddings[:1])
    assert list(clusters) == [0] and centroids.shape == (1, embeddings.shape[1])


def test_vbx_distance_offset_shapes_the_initialisation(test_other_embeddings):
    embeddings, labels = test_other_embeddings
    embeddings, labels = embeddings[:30], labels[:30]
    n = len(embeddings)
    clustering = VBxClustering()
    clustering.instantiate(clustering.default_parameters())
    # an offset that pushes every pair apart keeps AHC from merging, and a forced count of
    # n clusters returns one cluster per turn
    clusters, _ = clustering(embeddings, distance_offset=np.full((n, n), 0.5), num_clusters=n)
    assert len(np.unique(clusters)) == n
    with pytest.raises(ValueError, match="distance_offset"):
        clustering(embeddings, distance_offset=np.zeros((n, n + 1)))
    # face evidence "same person" (negative offset) between one speaker's turns
    same = np.flatnonzero(labels == labels[0])
    offset = np.zeros((n, n))
    offset[np.ix_(same, same)] = -1.0
    clusters, _ = clustering(embeddings, distance_offset=offset)
    assert len(np.unique(clusters[same])) == 1


def test_recipe_plda_loads_with_pyannote_and_clusters(test_other_embeddings, tmp_path):
    """The recipe's LDA + PLDA estimate, written in pyannote's format (here fitted on the
    test speakers themselves, only to check the format and the algebra)."""
    recipe = _recipe()
    embeddings, labels = test_other_embeddings
    transform, model = recipe.train_lda_plda(embeddings, labels, lda_dimension=9, iterations=3)
    recipe.write_npz(tmp_path / "xvec_transform.npz", transform)
    recipe.write_npz(tmp_path / "plda.npz", model)
    plda = load_plda(tmp_path, lda_dimension=9)
    features = plda(embeddings)
    assert features.shape == (len(embeddings), 9)
    # pyannote's vbx_setup recovers W = I, B = diag(psi) in the PLDA space: the within-speaker
    # scatter of the training features is close to identity in scale
    within = np.mean([np.var(features[labels == s], axis=0).mean() for s in np.unique(labels)])
    between = np.var([features[labels == s].mean(axis=0) for s in np.unique(labels)], axis=0).mean()
    assert between > 3 * within
    clustering = VBxClustering(plda)
    clustering.instantiate(clustering.default_parameters())
    purity, coverage = _purity_coverage(labels, clustering(embeddings)[0])
    assert purity > 0.9 and coverage > 0.9


def test_plda_files_missing_or_of_the_wrong_kind(tmp_path):
    np.savez(tmp_path / "xvec_transform.npz", mean1=np.zeros(4), mean2=np.zeros(2), lda=np.zeros((4, 2)))
    with pytest.raises(FileNotFoundError, match="plda.npz"):
        VBxClustering(tmp_path)
    np.savez(tmp_path / "plda.npz", means=np.zeros(2))
    with pytest.raises(ValueError, match=r"plda\.npz.*missing array"):
        load_plda(tmp_path)
    (tmp_path / "plda.npz").write_text("not a PLDA\n")
    with pytest.raises(ValueError, match=r"plda\.npz"):
        load_plda(tmp_path)


def test_plda_of_another_dimension(tmp_path, test_other_embeddings):
    recipe = _recipe()
    embeddings, labels = test_other_embeddings
    transform, model = recipe.train_lda_plda(embeddings[:, :20], labels, lda_dimension=5, iterations=1)
    recipe.write_npz(tmp_path / "xvec_transform.npz", transform)
    recipe.write_npz(tmp_path / "plda.npz", model)
    clustering = VBxClustering(tmp_path, lda_dimension=5)
    clustering.instantiate(clustering.default_parameters())
    with pytest.raises(ValueError, match="do not fit this PLDA"):
        clustering(embeddings)


def test_pipeline_with_vbx_diarizes_pyannote_sample():
    """BroadcastDiarization(clustering="vbx") with the default model finds the 2 speakers
    of pyannote's sample."""
    import importlib.util

    import soundfile as sf

    from xmodal_diar.pipelines import DEFAULT_MODEL_DIR, BroadcastDiarization
    from xmodal_diar.pipelines.vbx_clustering import VBxClustering

    sample = Path(importlib.util.find_spec("pyannote.audio").origin).parent / "sample" / "sample.wav"
    audio, sample_rate = sf.read(sample, dtype="float32", always_2d=True)
    assert sample_rate == 16000
    waveform = torch.from_numpy(audio.mean(axis=1)).unsqueeze(0)
    pipeline = BroadcastDiarization(embedding=DEFAULT_MODEL_DIR / "pytorch_model.bin", clustering="vbx")
    assert isinstance(pipeline.clustering, VBxClustering)
    output = pipeline({"waveform": waveform, "sample_rate": 16000, "uri": "sample"})
    diarization = getattr(output, "speaker_diarization", output)
    assert len(diarization.labels()) == 2, diarization
