"""Local speaker turns of pyannote's overlap-aware segmentation, and their re-assembly.

pyannote's ``segmentation-3.0`` (Plaquet & Bredin, "Powerset multi-class cross entropy
loss for neural speaker diarization", Interspeech 2023) labels each frame of a 10 s chunk
with at most 2 of 3 *local* speakers. A **local turn** is one contiguous run of frames
where one local speaker of one chunk is active. Each turn gets ONE embedding, from its
frames where that speaker speaks alone (overlap excluded when at least
``min_clean_duration`` of them remain), instead of one per (chunk, local speaker) as in
the stock ``SpeakerDiarization``. After the turns are clustered, :func:`reconstruct` gives the overlapped diarization
that pyannote's ``Inference.aggregate`` + ``to_diarization`` (with the frame-level speaker
count) give of :func:`clustered_segmentations` (every turn's frame activity in the column
of its cluster), block of frames by block of frames: its memory does not grow with the
number of speakers (the dense ``(chunks, frames, clusters)`` activities, and pyannote's
``(frames, clusters)`` sums, argsort and binary copies, do), and
:func:`selection_annotation` turns it into the annotation pyannote's ``Binarize`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import List

import numpy as np
from pyannote.core import Annotation, Segment, SlidingWindow, SlidingWindowFeature
from pyannote.core.utils.generators import string_generator

#: float32 elements of one block of :func:`reconstruct` (``frames x clusters``; ~16 bytes each with its argsort).
BLOCK_ELEMENTS = 1 << 20


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

    The dense reference of :func:`reconstruct` (the pipeline does not build it any more:
    ``chunks x frames x clusters`` float32 is 1 GB for 3 hours and 400 speakers).

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


def reconstruct(
    segmentations: SlidingWindowFeature,
    turns: LocalTurns,
    clusters: np.ndarray,
    num_clusters: int,
    count: SlidingWindowFeature,
    block_elements: int = BLOCK_ELEMENTS,
) -> np.ndarray:
    """``(frames, max count)`` cluster indices active at each frame of ``count``'s grid (-1: none).

    The same frames as ``to_diarization(clustered_segmentations(...), count)`` sets to 1:
    row ``t`` holds its ``count[t]`` highest aggregated activities, in the order of
    pyannote's ``np.argsort(-activations)`` (the same float32 sums, added chunk after
    chunk, and the same full-width rows, so ties break the same way). Computed over blocks
    of ``block_elements // num_clusters`` frames: memory ``O(block_elements + frames x
    max count)``, whatever the number of clusters. Column ``0`` alone is the exclusive
    diarization (``count`` clipped to 1).
    """
    data, chunks = segmentations.data, segmentations.sliding_window
    num_chunks, chunk_frames, _ = data.shape
    counts = np.asarray(count.data).reshape(len(count.data), -1)[:, 0].astype(np.int64)
    # pyannote's Inference.aggregate: its frame grid and the first frame of each chunk
    frames = SlidingWindow(start=chunks.start, duration=count.sliding_window.duration, step=count.sliding_window.step)
    starts = np.array([frames.closest_frame(chunks[c].start + 0.5 * frames.duration) for c in range(num_chunks)], dtype=np.int64)
    num_frames = len(counts)
    width = max(int(num_clusters), int(counts.max(initial=0)))  # to_diarization pads to the largest count
    top = np.full((num_frames, int(counts.max(initial=0))), -1, dtype=np.int32)
    if top.shape[1] == 0 or num_frames == 0:
        return top
    by_chunk = np.argsort(turns.chunk, kind="stable")
    edges = np.searchsorted(turns.chunk[by_chunk], np.arange(num_chunks + 1))
    block = max(1, int(block_elements) // width)
    for f0 in range(0, num_frames, block):
        f1 = min(f0 + block, num_frames)
        sums = np.zeros((f1 - f0, width), dtype=np.float32)
        for c in range(int(np.searchsorted(starts + chunk_frames, f0, side="right")), int(np.searchsorted(starts, f1))):
            lo, hi = max(f0 - starts[c], 0), min(f1 - starts[c], chunk_frames)
            if lo >= hi:
                continue
            columns: dict = {}  # cluster -> its activity in chunk c, frames lo:hi (fmax over its turns)
            for i in by_chunk[edges[c] : edges[c + 1]]:
                column = columns.setdefault(int(clusters[i]), np.zeros(hi - lo, dtype=np.float32))
                a, b = max(turns.first[i], lo), min(turns.last[i], hi)
                if a < b:
                    np.fmax(column[a - lo : b - lo], data[c, a:b, turns.speaker[i]], out=column[a - lo : b - lo])
            for k, column in columns.items():
                sums[starts[c] + lo - f0 : starts[c] + hi - f0, k] += np.nan_to_num(column, nan=0.0)
        order = np.argsort(-sums, axis=-1)[:, : top.shape[1]]
        top[f0:f1] = np.where(np.arange(top.shape[1]) < counts[f0:f1, None], order, -1)
    return top


def selection_annotation(selected: np.ndarray, frames: SlidingWindow, min_duration_off: float = 0.0) -> Annotation:
    """What pyannote's ``Binarize(onset=offset=0.5, min_duration_off=...)`` gives of the
    ``(frames, clusters)`` 0/1 diarization whose active entries ``selected`` lists
    (output of :func:`reconstruct`), without building that array: labels are cluster
    indices, track names, segment bounds (frame middles) as Binarize makes them."""
    active = Annotation()
    num_frames = len(selected)
    t, slot = np.nonzero(selected >= 0)
    if len(t) == 0:
        return active
    k = selected[t, slot].astype(np.int64)
    order = np.lexsort((t, k))
    t, k = t[order], k[order]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1] + 1)
    firsts = np.flatnonzero(new)
    lasts = np.append(firsts[1:], len(t)) - 1
    tracks = list(islice(string_generator(), int(k.max()) + 1))
    middle = lambda i: frames[int(i)].middle
    for a, b in zip(firsts, lasts):
        start, end = t[a], t[b] + 1  # Binarize: from the first active frame's middle to the first inactive one's
        region = Segment(middle(start), middle(end) if end < num_frames else middle(num_frames - 1))
        active[region, tracks[k[a]]] = int(k[a])
    if min_duration_off > 0.0:
        active = active.support(collar=min_duration_off)
    return active
