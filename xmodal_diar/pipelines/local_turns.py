"""Local speaker turns of pyannote's overlap-aware segmentation, and their re-assembly.

pyannote's ``segmentation-3.0`` (Plaquet & Bredin, "Powerset multi-class cross entropy
loss for neural speaker diarization", Interspeech 2023) labels each frame of a 10 s chunk
with at most 2 of 3 *local* speakers. A **local turn** is one contiguous run of frames
where one local speaker of one chunk is active. Each turn gets ONE embedding, from its
frames where that speaker speaks alone (overlap excluded when at least
``min_clean_duration`` of them remain), instead of one per (chunk, local speaker) as in
the stock ``SpeakerDiarization``. After the turns are clustered, :func:`clustered_segmentations`
puts every turn's frame activity into the column of its cluster; pyannote's own
``Inference.aggregate`` + ``to_diarization`` (with the frame-level speaker count) then
give the overlapped diarization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np
from pyannote.core import Segment, SlidingWindow, SlidingWindowFeature


@dataclass
class LocalTurns:
    """Turns of a segmented file; arrays are aligned, one row per turn, in time order."""

    chunk: np.ndarray  # (N,) chunk index
    speaker: np.ndarray  # (N,) local speaker index within the chunk
    first: np.ndarray  # (N,) first frame (inclusive)
    last: np.ndarray  # (N,) last frame (exclusive)
    segments: List[Segment] = field(default_factory=list)  # whole turn, in seconds
    clean: List[List[Segment]] = field(default_factory=list)  # single-speaker parts
    clean_duration: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.chunk)


def _runs(active: np.ndarray) -> List[tuple]:
    """``[(first, last_exclusive), ...]`` of the True runs of a 1-D boolean array."""
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def local_turns(segmentations: SlidingWindowFeature, frames: SlidingWindow, min_clean_duration: float = 0.5) -> LocalTurns:
    """Local turns of binarized ``(chunks, frames, local speakers)`` segmentations.

    ``frames``: the model's ``receptive_field`` (frame ``j`` of the chunk starting at ``t``
    is centred on ``t + frames[j].middle``). A turn's ``clean`` parts are its frames with
    no other local speaker active; when they total less than ``min_clean_duration``, the
    whole turn is used instead.
    """
    data = np.nan_to_num(segmentations.data) > 0.5
    num_chunks, num_frames, num_speakers = data.shape
    middles = np.array([frames[j].middle for j in range(num_frames)])
    half = frames.step / 2
    alone = data.sum(axis=2) == 1
    rows = {key: [] for key in ("chunk", "speaker", "first", "last", "clean_duration")}
    segments, clean = [], []
    for c in range(num_chunks):
        t0 = segmentations.sliding_window[c].start
        for k in range(num_speakers):
            for a, b in _runs(data[c, :, k]):
                span = Segment(t0 + middles[a] - half, t0 + middles[b - 1] + half)
                parts = [Segment(t0 + middles[a + x] - half, t0 + middles[a + y - 1] + half) for x, y in _runs(alone[c, a:b])]
                duration = sum(p.duration for p in parts)
                if duration < min_clean_duration:
                    parts, duration = [span], span.duration
                rows["chunk"].append(c)
                rows["speaker"].append(k)
                rows["first"].append(a)
                rows["last"].append(b)
                rows["clean_duration"].append(duration)
                segments.append(span)
                clean.append(parts)
    order = np.argsort([s.start for s in segments], kind="stable")
    pick = lambda values, dtype: np.asarray(values, dtype=dtype)[order] if len(values) else np.zeros(0, dtype=dtype)
    return LocalTurns(
        chunk=pick(rows["chunk"], int),
        speaker=pick(rows["speaker"], int),
        first=pick(rows["first"], int),
        last=pick(rows["last"], int),
        segments=[segments[i] for i in order],
        clean=[clean[i] for i in order],
        clean_duration=pick(rows["clean_duration"], float),
    )


def clustered_segmentations(
    segmentations: SlidingWindowFeature, turns: LocalTurns, clusters: np.ndarray, num_clusters: int
) -> SlidingWindowFeature:
    """``(chunks, frames, num_clusters)`` activities: each turn's frames in its cluster's column.

    Clusters absent from a chunk stay NaN (no evidence), as in pyannote's
    ``SpeakerDiarization.reconstruct``, so that aggregation over overlapping chunks
    averages only the chunks where the cluster is present.
    """
    num_chunks, num_frames, _ = segmentations.data.shape
    out = np.full((num_chunks, num_frames, num_clusters), np.nan, dtype=np.float32)
    for i in range(len(turns)):
        c, k, a, b, cl = turns.chunk[i], turns.speaker[i], turns.first[i], turns.last[i], clusters[i]
        column = np.zeros(num_frames, dtype=np.float32)
        column[a:b] = segmentations.data[c, a:b, k]
        out[c, :, cl] = np.fmax(out[c, :, cl], column)
    return SlidingWindowFeature(out, segmentations.sliding_window)
