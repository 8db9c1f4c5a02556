"""Face evidence for turn clustering: a soft, calibrated offset to the turns' distances.

When the recording is a video, its face tracks say who is on screen while a turn is
spoken. Each turn ``i`` gets the face track ``k_i`` paired with it and a pairing
confidence ``c_i`` in [0, 1] (:func:`xmodal_diar.faces.pairing.pair_turns_with_tracks`:
coverage, prominence and who-is-speaking from mouth motion), or no track. Two face tracks
``k, l`` carry identity evidence ``E_kl`` in (-1, 1):

- the same track: ``E = tanh(LLR(0) / 2)`` (a track is one person, up to tracking errors);
- two tracks on screen at the same time: ``E = -1`` (two faces at once are two people);
- otherwise, from the embedder's calibration (:class:`~xmodal_diar.faces.calibration.FaceCalibration`)
  at the cosine distance ``d_kl`` of the tracks' mean face embeddings:
  ``E = 2 P(same | d_kl) - 1 = tanh(LLR(d_kl) / 2)``; 0 without embeddings.

The clustering adds to the cosine distance of turns ``i, j`` (Le & Odobez 2017 pair turns
with face tracks this way; soft evidence instead of hard must-links, which merged two
people whenever a threshold was wrong)

    offset_ij = - weight * c_i * c_j * E_{k_i k_j}     (0 when either turn has no track)

negative for the same person, positive for different people, at most ``weight`` (in
cosine-distance units) either way. The default ``weight = 1`` lets certain evidence (``c = 1``,
``|E| = 1``) move a distance across the whole useful range of the stopping threshold.
Explicit pairings (``(segment, track_id, confidence)``) carry no embeddings: their track
ids are identities (``E = +1`` same id, ``-1`` different ids).

Where the evidence is strong it also decides which turns are clustered: a turn paired at
least ``anchor_confidence`` confidently is clustered (not only assigned to a centroid)
even when shorter than the clustering's ``min_turn_duration``
(:meth:`FaceEvidence.turn_evidence` returns the confidences; the turn clustering's
``anchored``), so that a face seen in several 1 s turns holds them together, and two faces
keep theirs apart, with the voices deciding the rest.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pyannote.core import Segment
from pyannote.pipeline import Pipeline
from pyannote.pipeline.parameter import Categorical, Uniform

from xmodal_diar.faces.calibration import FaceCalibration, cosine_distances

#: ``weight``, ``max_ratio``, ``anchor_confidence``: chosen on the tuning montages of
#: ``python benchmarks/video_tune.py`` (montages without the clips of the benchmark montage of the same kind); ``min_confidence``: not tuned.
DEFAULT_PARAMETERS = {"min_confidence": 0.1, "weight": 1.0, "max_ratio": 0.75, "anchor_confidence": 0.6, "split_turns": True}

#: A face pairing of a time span: anything with ``segment``, ``track_id``, ``confidence``
#: (e.g. :class:`xmodal_diar.faces.pairing.TurnPairing`), or a ``(segment, track_id,
#: confidence)`` tuple with ``segment`` a pyannote Segment or a ``(start, end)`` pair.
PairingLike = Union[object, Tuple]


def _as_triplet(pairing, index: int) -> Tuple[Segment, Optional[object], float]:
    if hasattr(pairing, "segment") and hasattr(pairing, "track_id"):
        segment, track, confidence = pairing.segment, pairing.track_id, getattr(pairing, "confidence", 1.0)
    elif isinstance(pairing, (tuple, list)) and len(pairing) == 3:
        segment, track, confidence = pairing
    else:
        raise ValueError(
            f"face_evidence[{index}]: expected a TurnPairing or a (segment, track_id, confidence) "
            f"tuple, got {pairing!r}"
        )
    if not isinstance(segment, Segment):
        segment = Segment(*segment)
    if not 0.0 <= float(confidence) <= 1.0:
        raise ValueError(f"face_evidence[{index}]: confidence must be in [0, 1], got {confidence}")
    return segment, track, float(confidence)


def turn_face_tracks(
    turns: Sequence[Segment], pairings: Sequence[PairingLike], min_overlap: float = 0.5
) -> Tuple[List[Optional[object]], np.ndarray]:
    """The face track of each turn and its confidence, from time-stamped pairings.

    A turn takes the track whose pairings cover most of it (weighted by confidence),
    provided they cover at least ``min_overlap`` of the turn; its confidence is the
    coverage-weighted mean confidence of that track's pairings over the turn.
    """
    spans = [_as_triplet(p, i) for i, p in enumerate(pairings)]
    tracks: List[Optional[object]] = []
    confidences = np.zeros(len(turns))
    for t, turn in enumerate(turns):
        cover: Dict[object, float] = {}
        weighted: Dict[object, float] = {}
        for segment, track, confidence in spans:
            if track is None:
                continue
            overlap = (segment & turn).duration if segment.intersects(turn) else 0.0
            if overlap > 0:
                cover[track] = cover.get(track, 0.0) + overlap
                weighted[track] = weighted.get(track, 0.0) + overlap * confidence
        if not cover:
            tracks.append(None)
            continue
        best = max(cover, key=lambda k: weighted[k])
        if cover[best] < min_overlap * turn.duration:
            tracks.append(None)
            continue
        tracks.append(best)
        confidences[t] = weighted[best] / cover[best]
    return tracks, confidences


def track_evidence(face_tracks: Sequence, calibration: Optional[FaceCalibration]) -> Tuple[list, np.ndarray]:
    """``(track_ids, E)``: identity evidence ``E`` in (-1, 1) between every two face tracks."""
    ids = [t.track_id for t in face_tracks]
    n = len(ids)
    evidence = np.zeros((n, n))
    if calibration is not None:
        with_embedding = [i for i, t in enumerate(face_tracks) if any(d.embedding is not None for d in t.detections)]
        if with_embedding:
            means = np.stack([face_tracks[i].mean_embedding() for i in with_embedding])
            evidence[np.ix_(with_embedding, with_embedding)] = calibration.evidence(cosine_distances(means, means))
    frames = [{int(d.frame) for d in t.detections} for t in face_tracks]
    for a in range(n):
        for b in range(a + 1, n):
            if frames[a] & frames[b]:  # on screen together: two people
                evidence[a, b] = evidence[b, a] = -1.0
    same = calibration.evidence(0.0) if calibration is not None else 1.0
    np.fill_diagonal(evidence, same)
    return ids, evidence


def effective_confidences(
    tracks: Sequence[Optional[object]], confidences: np.ndarray, track_ids: Sequence[object], min_confidence: float = 0.0
) -> np.ndarray:
    """Confidence of each turn's pairing as the offset uses it (0: unpaired, unknown track, or below ``min_confidence``)."""
    known = set(track_ids)
    c = np.asarray(confidences, dtype=np.float64)
    paired = np.array([k is not None and k in known for k in tracks], dtype=bool)
    return np.where(paired & (c >= min_confidence), c, 0.0)


def distance_offset(
    tracks: Sequence[Optional[object]],
    confidences: np.ndarray,
    track_ids: Sequence[object],
    evidence: np.ndarray,
    weight: float = 1.0,
    min_confidence: float = 0.0,
) -> np.ndarray:
    """``offset_ij = -weight * c_i * c_j * E[k_i, k_j]`` (symmetric, zero diagonal)."""
    index = {k: a for a, k in enumerate(track_ids)}
    n = len(tracks)
    rows = np.array([index.get(k, -1) if k is not None else -1 for k in tracks], dtype=int)
    c = np.where((rows >= 0) & (np.asarray(confidences) >= min_confidence), np.asarray(confidences, float), 0.0)
    offset = np.zeros((n, n))
    paired = np.flatnonzero(c > 0)
    if len(paired):
        e = evidence[np.ix_(rows[paired], rows[paired])]
        offset[np.ix_(paired, paired)] = -weight * np.outer(c[paired], c[paired]) * e
    offset = 0.5 * (offset + offset.T)
    np.fill_diagonal(offset, 0.0)
    return offset


def pairings_from_face_tracks(turns: Sequence[Segment], face_tracks: Sequence, uri: str = "video", **options) -> list:
    """Pair ``turns`` with ``face_tracks`` (:class:`~xmodal_diar.faces.types.FaceTrack`);
    ``options`` go to :func:`~xmodal_diar.faces.pairing.pair_turns_with_tracks`."""
    from pyannote.core import Annotation

    from xmodal_diar.faces.pairing import pair_turns_with_tracks

    annotation = Annotation(uri=uri)
    for i, turn in enumerate(turns):
        annotation[turn, i] = f"turn{i}"
    return pair_turns_with_tracks(annotation, face_tracks, **options)


class FaceEvidence(Pipeline):
    """Turn-level face evidence as an additive offset to the turns' cosine distances.

    ``calibration`` overrides the face embedder's own (by default read from the
    ``FaceTracks``' embedder name, see :func:`xmodal_diar.faces.embedding.embedder_calibration`).

    Hyper-parameters
    ----------------
    min_confidence : pairings less confident than this are ignored.
    weight : largest offset (cosine-distance units) that certain evidence gives.
    max_ratio : who speaks; a pairing whose runner-up face scores this fraction of the
        winner's score gets no confidence (see :mod:`xmodal_diar.faces.pairing`).
    anchor_confidence : turns paired at least this confidently are clustered whatever
        their duration (above 1: never).
    split_turns : default path, with ``FaceTracks``: split local turns at the hard cuts where
        the face changes identity (:func:`face_change_cuts`, :func:`split_turns_at_cuts`).
    """

    def __init__(self, calibration: Optional[FaceCalibration] = None):
        super().__init__()
        self.calibration = calibration
        self.min_confidence = Uniform(0.0, 1.0)
        self.weight = Uniform(0.0, 2.0)
        self.max_ratio = Uniform(0.05, 1.0)
        self.anchor_confidence = Uniform(0.0, 1.01)
        self.split_turns = Categorical([True, False])

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS)

    def _calibration(self, embedder: str) -> Optional[FaceCalibration]:
        from xmodal_diar.faces.embedding import embedder_calibration

        if self.calibration is not None:
            return self.calibration
        calibration = embedder_calibration(embedder)
        if calibration is None:
            warnings.warn(
                f"face embedder {embedder!r} declares no calibration: face evidence uses tracks only "
                f"(same track, faces on screen together), not face identities; pass FaceEvidence(calibration=...)"
            )
        return calibration

    def __call__(self, turns: Sequence[Segment], evidence, uri: str = "video") -> np.ndarray:
        """The ``(N, N)`` distance offset of the N ``turns`` (see :meth:`turn_evidence`)."""
        return self.turn_evidence(turns, evidence, uri=uri)[0]

    def turn_evidence(self, turns: Sequence[Segment], evidence, uri: str = "video") -> Tuple[np.ndarray, np.ndarray]:
        """``(offset, confidences)``: the ``(N, N)`` distance offset of the N ``turns`` and the
        ``(N,)`` confidence of each turn's pairing as the offset uses it (0: none).

        ``evidence``: a sequence of face pairings (see :data:`PairingLike`), of
        :class:`~xmodal_diar.faces.types.FaceTrack` (then paired with the turns here by
        :func:`~xmodal_diar.faces.pairing.pair_turns_with_tracks`; dlib's calibration),
        or the ``FaceTracks`` that :func:`xmodal_diar.faces.extract_face_tracks` returns.
        """
        embedder = "dlib"
        if hasattr(evidence, "tracks"):  # a FaceTracks (xmodal_diar.faces.extract_face_tracks)
            embedder = evidence.embedder or embedder
            evidence = evidence.tracks
        evidence = list(evidence)
        turns = list(turns)
        if evidence and hasattr(evidence[0], "detections"):
            track_ids, matrix = track_evidence(evidence, self._calibration(embedder))
            evidence = pairings_from_face_tracks(turns, evidence, uri=uri, max_ratio=self.max_ratio)
            tracks, confidences = turn_face_tracks(turns, evidence)
        else:  # explicit pairings: track ids are identities
            tracks, confidences = turn_face_tracks(turns, evidence)
            track_ids = list(dict.fromkeys(k for k in tracks if k is not None))
            matrix = np.where(np.equal.outer(np.arange(len(track_ids)), np.arange(len(track_ids))), 1.0, -1.0)
        offset = distance_offset(tracks, confidences, track_ids, matrix, self.weight, self.min_confidence)
        return offset, effective_confidences(tracks, confidences, track_ids, self.min_confidence)


def face_change_cuts(face_tracks, calibration: Optional[FaceCalibration], window: float = 0.5) -> List[float]:
    """Shot cuts (s) of a ``FaceTracks`` across which the face on screen changes identity.

    At each cut the longest track ending in the ``window`` s before it and the longest
    starting in the ``window`` s after it are compared: a cut counts when their identity
    evidence (:func:`track_evidence`) is negative (calibrated P(same) < 0.5). Without
    a track on either side, or without embeddings, the cut does not count.
    """
    cuts = list(getattr(face_tracks, "shot_cuts", []) or [])
    tracks = list(getattr(face_tracks, "tracks", []) or [])
    if not cuts or len(tracks) < 2 or calibration is None:
        return []
    ids, evidence = track_evidence(tracks, calibration)
    has_embedding = [any(d.embedding is not None for d in t.detections) for t in tracks]
    changes = []
    for cut in cuts:
        before = [a for a, t in enumerate(tracks) if has_embedding[a] and cut - window <= t.end < cut]
        after = [b for b, t in enumerate(tracks) if has_embedding[b] and cut <= t.start <= cut + window]
        if not before or not after:
            continue
        a = max(before, key=lambda k: tracks[k].end - tracks[k].start)
        b = max(after, key=lambda k: tracks[k].end - tracks[k].start)
        if evidence[a, b] < 0:
            changes.append(float(cut))
    return changes


def split_turns_at_cuts(turns, chunks, frames, cuts: Sequence[float], min_duration: float = 0.2, min_clean_duration: float = 0.5):
    """Split local turns (:class:`~xmodal_diar.pipelines.local_turns.LocalTurns`) at ``cuts`` (s).

    A local turn of the segmentation can run across a hard cut between two different faces
    (with more people than the model's local speakers in a chunk, it chains them); it is cut
    there into pieces of at least ``min_duration`` s, each with its own frames and clean
    parts (a piece with less than ``min_clean_duration`` s of clean speech uses its whole
    span). ``chunks``: the segmentations' sliding window; ``frames``: the model's receptive
    field. Returns ``(turns, origin, split)``: the new turns, the index of each one's
    original turn, and which were split (those need a new embedding).
    """
    from xmodal_diar.pipelines.local_turns import LocalTurns

    cuts = np.sort(np.asarray(list(cuts), dtype=np.float64))
    num_frames = int(max(turns.last.max(initial=0), 1))
    middles = np.array([frames[j].middle for j in range(num_frames)])
    half = frames.step / 2
    rows = {key: [] for key in ("chunk", "speaker", "first", "last", "clean_duration", "origin", "split")}
    segments, clean = [], []
    for i in range(len(turns)):
        c, a, b, span = int(turns.chunk[i]), int(turns.first[i]), int(turns.last[i]), turns.segments[i]
        t0 = chunks[c].start
        inner = cuts[(cuts > span.start + min_duration) & (cuts < span.end - min_duration)]
        bounds = [a]
        for cut in inner:
            j = int(np.searchsorted(t0 + middles[:b], cut))
            if (j - bounds[-1]) * frames.step >= min_duration and (b - j) * frames.step >= min_duration:
                bounds.append(j)
        bounds.append(b)
        pieces = list(zip(bounds[:-1], bounds[1:]))
        for x, y in pieces:
            if len(pieces) == 1:
                piece, parts, duration = span, turns.clean[i], float(turns.clean_duration[i])
            else:
                piece = Segment(t0 + middles[x] - half, t0 + middles[y - 1] + half)
                parts = [p & piece for p in turns.clean[i] if p.intersects(piece)]
                duration = sum(p.duration for p in parts)
                if duration < min_clean_duration:
                    parts, duration = [piece], piece.duration
            rows["chunk"].append(c)
            rows["speaker"].append(int(turns.speaker[i]))
            rows["first"].append(x)
            rows["last"].append(y)
            rows["clean_duration"].append(duration)
            rows["origin"].append(i)
            rows["split"].append(len(pieces) > 1)
            segments.append(piece)
            clean.append(parts)
    new = LocalTurns(
        chunk=np.asarray(rows["chunk"], dtype=int),
        speaker=np.asarray(rows["speaker"], dtype=int),
        first=np.asarray(rows["first"], dtype=int),
        last=np.asarray(rows["last"], dtype=int),
        segments=segments,
        clean=clean,
        clean_duration=np.asarray(rows["clean_duration"], dtype=float),
    )
    return new, np.asarray(rows["origin"], dtype=int), np.asarray(rows["split"], dtype=bool)
