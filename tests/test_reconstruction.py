"""Block reconstruction (local_turns.reconstruct + selection_annotation) against pyannote's
dense path (clustered_segmentations -> to_diarization -> to_annotation), and its memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from pyannote.audio.core.inference import Inference
from pyannote.audio.pipelines.utils.diarization import SpeakerDiarizationMixin
from pyannote.core import Segment, SlidingWindow, SlidingWindowFeature
from pyannote.metrics.diarization import DiarizationErrorRate

from xmodal_diar.pipelines.local_turns import clustered_segmentations, local_turns, reconstruct, selection_annotation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = SlidingWindow(start=0.0, duration=0.0619375, step=0.016875)  # segmentation-3.0's receptive field


def dense(segmentations, turns, clusters, num_clusters, count, min_duration_off=0.0):
    """What the pipeline did before: pyannote's own functions on the dense activities."""
    activity = clustered_segmentations(segmentations, turns, clusters, num_clusters)
    out = []
    for frame_count in (count, SlidingWindowFeature(np.minimum(count.data, 1).astype(np.int8), count.sliding_window)):
        discrete = SpeakerDiarizationMixin.to_diarization(activity, frame_count)
        out.append(SpeakerDiarizationMixin.to_annotation(discrete, min_duration_on=0.0, min_duration_off=min_duration_off))
    return out


def blocks(segmentations, turns, clusters, num_clusters, count, min_duration_off=0.0, block_elements=None):
    kwargs = {} if block_elements is None else {"block_elements": block_elements}
    selected = reconstruct(segmentations, turns, clusters, num_clusters, count, **kwargs)
    frames = SlidingWindow(start=segmentations.sliding_window.start, duration=count.sliding_window.duration,
                           step=count.sliding_window.step)
    return [selection_annotation(columns, frames, min_duration_off) for columns in (selected, selected[:, :1])]


def capped_count(segmentations, frames, num_clusters):
    count = SpeakerDiarizationMixin.speaker_count(segmentations, frames, warm_up=(0.0, 0.0))
    return SlidingWindowFeature(np.minimum(count.data, min(num_clusters, 127)).astype(np.int8), count.sliding_window)


def assert_same(expected, got):
    for e, g in zip(expected, got):
        assert e.labels() == g.labels()
        assert list(e.itertracks(yield_label=True)) == list(g.itertracks(yield_label=True))
        if e.get_timeline():
            der = DiarizationErrorRate()(e, g, uem=e.get_timeline().extent())
            assert der < 0.005


def synthetic(num_chunks, step, seed=0, speakers=3):
    """Binarized (chunks, 589 frames, 3) segmentations with random local turns."""
    rng = np.random.default_rng(seed)
    data = np.zeros((num_chunks, 589, speakers), dtype=np.float32)
    for c in range(num_chunks):
        for k in range(speakers):
            for _ in range(rng.integers(0, 4)):
                a = int(rng.integers(0, 589))
                data[c, a : a + int(rng.integers(5, 300)), k] = 1.0
    return SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=10.0, step=step * 10.0))


@pytest.fixture(scope="module")
def real_segmentations(ami_debug):
    """segmentation-3.0 on ~2.5 minutes of ami-debug (5 excerpts end to end), chunk step 1.0 and 0.5."""
    from xmodal_diar.audio import load_audio
    from xmodal_diar.pipelines.broadcast_diarization import load_segmentation_model

    waveform = torch.cat([load_audio(ami_debug / f"{name}.wav") for name in ("dev00", "trn01", "trn03", "trn05", "trn08")])
    model = load_segmentation_model(None)
    out = {}
    for step in (1.0, 0.5):
        inference = Inference(model, duration=10.0, step=step * 10.0, skip_aggregation=True, batch_size=8)
        out[step] = inference({"waveform": waveform[None], "sample_rate": 16000, "uri": "concat"})
    return out, model.receptive_field


@pytest.mark.parametrize("step", [1.0, 0.5])
@pytest.mark.parametrize("num_clusters", [4, 40, None])  # None: one cluster per turn
def test_same_output_as_the_dense_path_on_real_segmentations(real_segmentations, step, num_clusters):
    segs, frames = real_segmentations
    segmentations = segs[step]
    turns = local_turns(segmentations, frames)
    rng = np.random.default_rng(1)
    clusters = np.arange(len(turns)) if num_clusters is None else rng.integers(0, num_clusters, len(turns))
    k = int(clusters.max()) + 1
    count = capped_count(segmentations, frames, k)
    for min_duration_off in (0.0, 0.3):
        expected = dense(segmentations, turns, clusters, k, count, min_duration_off)
        assert expected[0].get_timeline().duration() > 30.0
        assert_same(expected, blocks(segmentations, turns, clusters, k, count, min_duration_off))
        # tiny blocks (a few frames each) give the same
        assert_same(expected, blocks(segmentations, turns, clusters, k, count, min_duration_off, block_elements=7 * k))


@pytest.mark.parametrize("step", [1.0, 0.5, 0.3])
def test_same_output_as_the_dense_path_on_synthetic_segmentations(step):
    segmentations = synthetic(30, step, seed=int(step * 10))
    turns = local_turns(segmentations, FRAMES)
    clusters = np.random.default_rng(2).integers(0, 25, len(turns))
    k = int(clusters.max()) + 1
    count = capped_count(segmentations, FRAMES, k)
    expected = dense(segmentations, turns, clusters, k, count)
    assert_same(expected, blocks(segmentations, turns, clusters, k, count, block_elements=1000 * k))


def test_memory_does_not_grow_with_the_number_of_clusters():
    """400 chunks (1 h 7 min at step 1.0): the dense activities alone would be
    400 x 589 x clusters float32 (1.3 GB for its ~1,300 turns); the block path stays
    within the same small bound with 10 clusters or one per turn."""
    segmentations = synthetic(400, 1.0, seed=3)
    turns = local_turns(segmentations, FRAMES)
    count = SpeakerDiarizationMixin.speaker_count(segmentations, FRAMES, warm_up=(0.0, 0.0))
    peaks = {}
    for name, clusters in (("few", np.arange(len(turns)) % 10), ("one per turn", np.arange(len(turns)))):
        k = int(clusters.max()) + 1
        capped = SlidingWindowFeature(np.minimum(count.data, min(k, 127)).astype(np.int8), count.sliding_window)
        tracemalloc.start()
        selected = reconstruct(segmentations, turns, clusters, k, capped)
        selection_annotation(selected, FRAMES)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    dense_bytes = segmentations.data.shape[0] * segmentations.data.shape[1] * len(turns) * 4
    assert len(turns) > 1000 and dense_bytes > 1e9
    # 16 MB blocks + the (frames, 3) selection + the annotation's Python objects
    assert peaks["one per turn"] < 64e6, peaks
    assert peaks["one per turn"] < 2 * peaks["few"] + 20e6, peaks


class _MeanStd(torch.nn.Module):
    """A tiny turn encoder (B, T) -> (B, 2) that sees every sample."""

    def forward(self, wavs):
        return torch.stack([wavs.mean(dim=1), wavs.std(dim=1) + 1.0], dim=1)


def test_turn_pieces_are_cut_when_embedded_and_equal_the_eager_ones():
    from xmodal_diar.pipelines.broadcast_diarization import TurnEmbedder, TurnPieces

    waveform = torch.randn(16000 * 40, generator=torch.Generator().manual_seed(0))
    parts = [[Segment(0.5, 2.0), Segment(2.5, 9.0)], [Segment(10.0, 10.2)], [Segment(12.0, 35.0)], [Segment(36.0, 36.5), Segment(37.0, 39.0)]]
    embedder = TurnEmbedder(_MeanStd(), batch_size=2, max_duration=10.0)
    for cap in (None, 4 * 16000):
        lazy = TurnPieces(waveform, parts, cap)
        eager = [TurnEmbedder.cut(waveform, p) for p in parts]
        if cap:
            eager = [p[max(0, (len(p) - cap) // 2) :][:cap] for p in eager]
        assert len(lazy) == len(eager) and all(torch.equal(lazy[i], eager[i]) for i in range(len(eager)))
        assert np.array_equal(embedder.pieces(lazy), embedder.pieces(eager))


def test_mono_float32_input_is_not_copied_when_loaded():
    from xmodal_diar.audio import load_audio

    data = torch.rand(1, 16000 * 5) - 0.5
    loaded = load_audio({"waveform": data, "sample_rate": 16000})
    assert loaded.shape == (16000 * 5,) and loaded.data_ptr() == data.data_ptr()
    stereo = load_audio({"waveform": torch.stack([data[0], -data[0]]), "sample_rate": 16000})
    assert torch.allclose(stereo, torch.zeros_like(stereo))
