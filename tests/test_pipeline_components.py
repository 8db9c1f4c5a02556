"""Building blocks of BroadcastDiarization: VAD, change detection, turn merging,
constrained clustering, turn embedding (small synthetic inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyannote.core import Segment, Timeline

from xmodal_diar.pipelines.broadcast_diarization import (
    TurnEmbedder,
    face_distance_offset,
    load_embedding_model,
    merge_short_turns,
    validate_num_speakers,
)
from xmodal_diar.pipelines.change_detection import (
    SpeakerChangeDetection,
    bic_change_scores,
    boundary_grid,
    embedding_change_scores,
)
from xmodal_diar.pipelines.turn_clustering import TurnClustering
from xmodal_diar.pipelines.vad import VoiceActivityDetection, energy_speech_scores

SR = 16000


def tone(seconds: float, freq: float, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return amp * torch.sin(2 * torch.pi * freq * t)


def two_voice_signal() -> torch.Tensor:
    """4 s of a 200 Hz 'voice', then 4 s of a 1500 Hz one."""
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(8 * SR, generator=g)
    return torch.cat([tone(4, 200), tone(4, 1500)]) + noise


class TwoToneEncoder(torch.nn.Module):
    """A 2-D 'speaker' embedding: magnitudes at 200 Hz and 1500 Hz (the two 'voices')."""

    def forward(self, wavs, wav_lens=None):
        spec = torch.fft.rfft(wavs).abs()
        bins = [round(f * wavs.shape[-1] / SR) for f in (200, 1500)]
        return spec[:, bins] + 1e-3


# ---------------------------------------------------------------------------- VAD
def test_energy_vad_finds_the_burst_and_nothing_in_silence():
    wav = torch.cat([torch.zeros(2 * SR), tone(3, 300), torch.zeros(2 * SR)])
    vad = VoiceActivityDetection("energy")
    vad.instantiate(vad.default_parameters())
    speech = vad.speech_regions(vad.speech_scores(wav), duration=7.0)
    assert len(speech) == 1
    region = speech[0]
    assert abs(region.start - 2.0) < 0.1 and abs(region.end - 5.0) < 0.1
    silent = vad.speech_regions(energy_speech_scores(torch.zeros(3 * SR)), 3.0)
    assert len(silent) == 0


def test_silero_vad_keeps_thread_count_and_rejects_unknown_method():
    torch.set_num_threads(2)
    vad = VoiceActivityDetection("silero")
    scores = vad.speech_scores(torch.zeros(SR))
    assert torch.get_num_threads() == 2
    assert scores.data.shape == (32, 1) and float(scores.data.max()) < 0.5
    with pytest.raises(ValueError, match="vad='webrtc'"):
        VoiceActivityDetection("webrtc")


# ------------------------------------------------------------------ change detection
def test_boundary_grid_keeps_a_window_from_each_edge():
    grid = boundary_grid(Segment(10.0, 14.0), window=1.5, step=0.25)
    assert grid[0] == pytest.approx(11.5) and grid[-1] == pytest.approx(12.5)
    assert len(boundary_grid(Segment(0, 2.9), window=1.5, step=0.25)) == 0


def test_embedding_change_peak_at_the_true_change():
    wav = two_voice_signal()
    embedder = TurnEmbedder(TwoToneEncoder(), batch_size=7)
    region = Segment(0.0, 8.0)
    scores = embedding_change_scores(wav, region, embedder.windows, window=1.0, step=0.25, block_windows=5)
    assert scores.times[np.argmax(scores.values)] == pytest.approx(4.0)
    scd = SpeakerChangeDetection("embedding", window=1.0, step=0.25)
    scd.instantiate({"threshold": 0.5, "min_duration": 1.0})
    assert scd.turns(scores) == [Segment(0.0, 4.0), Segment(4.0, 8.0)]
    scd.instantiate({"threshold": 2.0, "min_duration": 1.0})  # nothing that high: one turn
    assert scd.turns(scores) == [region]


def test_bic_change_peak_at_the_true_change():
    g = torch.Generator().manual_seed(1)
    white = 0.1 * torch.randn(3 * SR, generator=g)
    low = torch.nn.functional.avg_pool1d((0.3 * torch.randn(3 * SR, generator=g))[None, None], 9, 1, 4)[0, 0]
    scores = bic_change_scores(torch.cat([white, low]), Segment(0.0, 6.0), window=1.0, step=0.25)
    assert scores.times[np.argmax(scores.values)] == pytest.approx(3.0, abs=0.25)
    assert scores.values.max() > 1.0  # ΔBIC > 0 at λ = 1


def test_change_detection_rejects_window_not_multiple_of_step():
    with pytest.raises(ValueError, match="multiple of step"):
        SpeakerChangeDetection(window=1.0, step=0.3)


def test_merge_short_turns_goes_across_the_weaker_boundary():
    turns = [Segment(0, 3), Segment(3, 3.2), Segment(3.2, 6)]
    assert merge_short_turns(turns, [0.9, 0.4], 0.5) == [Segment(0, 3), Segment(3, 6)]
    assert merge_short_turns(turns, [0.3, 0.8], 0.5) == [Segment(0, 3.2), Segment(3.2, 6)]
    assert merge_short_turns([Segment(0, 0.2)], [], 0.5) == [Segment(0, 0.2)]  # alone: kept


# ------------------------------------------------------------------------ clustering
def blobs(n_per: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8)
    e = np.concatenate([c + 0.05 * rng.standard_normal((n_per, 8)) for c in centres])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def clustering(threshold: float = 0.5, linkage: str = "average", method: str = "agglomerative", **params) -> TurnClustering:
    c = TurnClustering(method)
    base = {"threshold": threshold, "linkage": linkage} if method == "agglomerative" else {"pruning": 0.5}
    c.instantiate({**base, "min_turn_duration": 0.0, "min_cluster_duration": 0.0, **params})
    return c


def labels(c: TurnClustering, e: np.ndarray, **kwargs) -> list:
    clusters, centroids = c(e, **kwargs)
    assert len(centroids) == clusters.max() + 1 and np.allclose(np.linalg.norm(centroids, axis=1), 1)
    return clusters.tolist()


def test_clustering_threshold_and_speaker_counts():
    e = blobs()
    assert labels(clustering(), e) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(set(labels(clustering(), e, num_clusters=2))) == 2
    assert len(set(labels(clustering(), e, max_clusters=2))) == 2
    assert len(set(labels(clustering(threshold=1.9), e, min_clusters=3))) == 3
    assert set(labels(clustering(), e, num_clusters=1)) == {0}
    assert labels(clustering(), e[:1]) == [0]
    with pytest.raises(ValueError, match="finite"):
        clustering()(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="distance_offset"):
        clustering()(e, distance_offset=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="method"):
        TurnClustering("kmeans")


def test_spectral_eigengap_counts_the_speakers():
    e = blobs(n_per=6)
    assert labels(clustering(method="spectral"), e) == [0] * 6 + [1] * 6 + [2] * 6
    assert len(set(labels(clustering(method="spectral"), e, num_clusters=2))) == 2
    assert len(set(labels(clustering(method="spectral"), e, max_clusters=2))) <= 2


def test_short_fragments_make_no_ghost_speaker():
    e = blobs()
    odd = np.eye(1, 8, 7)  # a fragment unlike both speakers
    e = np.concatenate([e[:8], odd])
    durations = np.array([3.0] * 8 + [0.4])
    # clustered with everything, the fragment is a third speaker ...
    assert len(set(labels(clustering(), e))) == 3
    # ... too short to be clustered, it goes to the nearest centroid
    assert len(set(labels(clustering(min_turn_duration=1.0), e, durations=durations))) == 2
    # a long but rare voice (less than min_cluster_duration in all) is dissolved too
    durations[-1] = 2.0
    assert len(set(labels(clustering(min_turn_duration=1.0), e, durations=durations))) == 3
    assert len(set(labels(clustering(min_turn_duration=1.0, min_cluster_duration=3.0), e, durations=durations))) == 2


def test_short_turns_of_a_third_voice_make_a_speaker_only_together():
    """short_turns="cluster": short turns far from every centroid found a speaker when they
    total min_cluster_duration; "assign" (the old rule) puts them in the nearest cluster."""
    e = blobs()  # 3 voices x 4 turns
    durations = np.array([3.0] * 8 + [0.8] * 4)  # the third voice only speaks in short turns
    old = clustering(min_turn_duration=1.0, min_cluster_duration=3.0)
    assert len(set(labels(old, e, durations=durations))) == 2
    new = clustering(min_turn_duration=1.0, min_cluster_duration=3.0, short_turns="cluster")
    assert labels(new, e, durations=durations) == [0] * 4 + [1] * 4 + [2] * 4
    # one short odd fragment (0.8 s < 3 s) is still no speaker, nor is a forced count exceeded
    assert len(set(labels(new, e[:9], durations=durations[:9]))) == 2
    assert len(set(labels(new, e, durations=durations, max_clusters=2))) == 2
    assert len(set(labels(new, e, durations=durations, num_clusters=2))) == 2


def test_refine_ends_on_a_fixed_point_of_nearest_centroids():
    """refine=R: Lloyd iterations over all turns; the result assigns every turn to the nearest
    of the (duration-weighted) centroids it returns, which plain assignment need not do."""
    rng = np.random.default_rng(1)
    centres = np.eye(3, 8) + 0.35 * rng.standard_normal((3, 8))
    e = np.concatenate([c + 0.45 * rng.standard_normal((15, 8)) for c in centres])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    durations = rng.uniform(0.3, 4.0, len(e))

    def nearest(c):
        clusters, centroids = c(e, durations=durations)
        return clusters, np.argmax(e @ centroids.T, axis=1)

    clusters, closest = nearest(clustering(threshold=0.7, min_turn_duration=1.0, refine=5))
    assert (clusters == closest).all()
    clusters, closest = nearest(clustering(threshold=0.7, min_turn_duration=1.0, refine=0))
    assert (clusters != closest).any()  # the case where refinement has something to do


def test_duplicate_turns_of_overlapping_chunks_share_an_embedding():
    from xmodal_diar.pipelines.broadcast_diarization import duplicate_turns
    from xmodal_diar.pipelines.local_turns import LocalTurns

    spans = [(0, 1, Segment(1.0, 3.0)), (0, 0, Segment(4.0, 9.9)), (1, 1, Segment(5.0, 9.0)),
             (1, 0, Segment(4.02, 9.9)), (1, 2, Segment(9.0, 12.0)), (2, 0, Segment(9.01, 11.98))]
    turns = LocalTurns(chunk=np.array([c for c, _, _ in spans]), speaker=np.array([k for _, k, _ in spans]),
                       first=np.zeros(6, int), last=np.ones(6, int), segments=[s for _, _, s in spans],
                       clean=[[s] for _, _, s in spans], clean_duration=np.array([s.duration for _, _, s in spans]))
    # (4.02, 9.9) is (4.0, 9.9) of the previous chunk seen again; (5, 9) overlaps it too little;
    # (9.01, 11.98) of chunk 2 is (9, 12) of chunk 1; nothing matches within its own chunk
    assert duplicate_turns(turns, 0.9).tolist() == [0, 1, 2, 1, 4, 4]
    assert duplicate_turns(turns, 1.0).tolist() == list(range(6))


def test_distance_offset_changes_every_method():
    # turns 0 and 1 sound alike, turn 2 does not; face evidence (xmodal_diar.pipelines.
    # face_evidence, tested in test_faces_evidence.py) says 0/1 differ and 1/2 are one person
    e = np.array([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]])
    assert labels(clustering(), e) == [0, 0, 1]
    offset = np.zeros((3, 3))
    offset[0, 1] = offset[1, 0] = 0.9
    offset[1, 2] = offset[2, 1] = -0.9
    assert labels(clustering(), e, distance_offset=offset) == [0, 1, 1]
    assert labels(clustering(method="spectral"), e, distance_offset=offset, num_clusters=2) == [0, 1, 1]
    with pytest.raises(ValueError, match="distance offset"):
        face_distance_offset(np.zeros((2, 2)), 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_speakers": 0}, "num_speakers must be a positive integer"),
        ({"num_speakers": -1}, "num_speakers must be a positive integer"),
        ({"num_speakers": 2.5}, "num_speakers must be a positive integer"),
        ({"min_speakers": "2"}, "min_speakers must be a positive integer"),
        ({"num_speakers": 2, "min_speakers": 3}, "contradicts"),
        ({"min_speakers": 4, "max_speakers": 3}, "larger than max_speakers"),
    ],
)
def test_speaker_counts_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_num_speakers(**kwargs)


def test_valid_speaker_counts_pass_through_pyannote():
    assert validate_num_speakers(2.0) == (2, 2, 2)
    assert validate_num_speakers(min_speakers=2) == (None, 2, np.inf)


# ------------------------------------------------------------------------- embedding
class MeanAbs(torch.nn.Module):
    """Tiny deterministic encoder without ``wav_lens``: (mean |x|, 1)."""

    def forward(self, wavs):
        return torch.stack([wavs.abs().mean(-1), torch.ones(len(wavs))], -1)


def test_turn_embedder_chunks_pads_and_never_returns_nan():
    wav = torch.cat([0.1 * torch.ones(5 * SR), 0.3 * torch.ones(5 * SR)])
    emb = TurnEmbedder(MeanAbs(), batch_size=2, min_duration=0.5, max_duration=5.0)
    long, short, tiny = emb.segments(wav, [Segment(0, 10), Segment(6, 6.2), Segment(1, 1.0001)])
    # the 10 s turn: two 5 s chunks (0.1 and 0.3) averaged with equal weights
    expected = (np.array([0.1, 1]) / np.linalg.norm([0.1, 1]) + np.array([0.3, 1]) / np.linalg.norm([0.3, 1])) / 2
    assert long == pytest.approx(expected / np.linalg.norm(expected), abs=1e-4)
    # a 0.2 s turn is tiled (not zero-padded): its mean |x| stays 0.3
    assert short == pytest.approx(np.array([0.3, 1]) / np.linalg.norm([0.3, 1]), abs=1e-4)
    assert np.isfinite(tiny).all()


def test_turn_embedder_uses_wav_lens_when_the_model_takes_them():
    enc = TwoToneEncoder()
    emb = TurnEmbedder(enc, batch_size=4, min_duration=0.5)
    assert emb.takes_lengths
    wav = two_voice_signal()
    a, b = emb.segments(wav, [Segment(0, 1), Segment(4, 7)])
    assert a @ b < 0.9  # different "voices" stay apart


def test_load_embedding_model_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        load_embedding_model(tmp_path / "nothing.bin")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        load_embedding_model(tmp_path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.bin"):
        load_embedding_model(bad)
    with pytest.raises(ValueError, match="embedding"):
        load_embedding_model(None)
