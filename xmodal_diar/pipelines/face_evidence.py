"""Face evidence for turn clustering: must-link and cannot-link constraints.

When the recording is a video, its face tracks say who is on screen while a turn is
spoken. Each turn gets the face track paired with it, if any (a
:class:`~xmodal_diar.faces.pairing.TurnPairing`: ``segment``, ``track_id``,
``confidence``), either given by the caller or computed from face tracks with
:func:`xmodal_diar.faces.pairing.pair_turns_with_tracks`. Then, for two turns ``i, j``
both paired with confidence at least ``min_confidence`` (Le & Odobez 2017 use such
turn/face-track pairs as their teacher's supervision):

- same face identity  -> **must-link**: their distance is set to 0;
- different identities -> **cannot-link**: their distance is set to
  :data:`CANNOT_LINK_DISTANCE` (far above any cosine distance, so no linkage merges
  them below the stopping threshold; with a forced number of speakers, the merge is
  made only when nothing else is left).

Two face tracks are the same identity when they are the same track or, when their face
embeddings are known, when the cosine distance of their mean face embeddings is below
``same_face_threshold`` (a person filmed in two shots gives two tracks).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pyannote.core import Segment
from pyannote.pipeline import Pipeline
from pyannote.pipeline.parameter import Uniform
from scipy.sparse.csgraph import connected_components

CANNOT_LINK_DISTANCE = 1e6
DEFAULT_PARAMETERS = {"min_confidence": 0.5, "same_face_threshold": 0.3}

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


def face_identities(
    track_ids: Sequence[object],
    embeddings: Optional[Mapping[object, np.ndarray]] = None,
    same_face_threshold: float = 0.0,
) -> Dict[object, int]:
    """Group face tracks into identities (connected components of close face embeddings)."""
    ids = list(dict.fromkeys(t for t in track_ids if t is not None))
    if not ids:
        return {}
    adjacency = np.eye(len(ids), dtype=bool)
    if embeddings and same_face_threshold > 0:
        known = [i for i, t in enumerate(ids) if t in embeddings]
        if len(known) > 1:
            e = np.stack([np.asarray(embeddings[ids[i]], dtype=np.float64) for i in known])
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            close = (1.0 - e @ e.T) < same_face_threshold
            adjacency[np.ix_(known, known)] |= close
    _, component = connected_components(adjacency, directed=False)
    return {t: int(c) for t, c in zip(ids, component)}


def link_constraints(
    tracks: Sequence[Optional[object]],
    confidences: np.ndarray,
    min_confidence: float,
    identities: Optional[Mapping[object, int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean ``(N, N)`` must-link and cannot-link matrices between the N turns."""
    n = len(tracks)
    identities = identities if identities is not None else face_identities(tracks)
    label = np.full(n, -1)
    for i, (track, confidence) in enumerate(zip(tracks, confidences)):
        if track is not None and confidence >= min_confidence:
            label[i] = identities[track]
    paired = label >= 0
    both = paired[:, None] & paired[None, :]
    same = label[:, None] == label[None, :]
    must = both & same
    np.fill_diagonal(must, False)
    cannot = both & ~same
    return must, cannot


def constrain_distances(distances: np.ndarray, must_link: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """Square distance matrix with must-links at 0 and cannot-links at CANNOT_LINK_DISTANCE."""
    constrained = np.array(distances, dtype=np.float64, copy=True)
    constrained[must_link] = 0.0
    constrained[cannot_link] = CANNOT_LINK_DISTANCE
    return constrained


def pairings_from_face_tracks(turns: Sequence[Segment], face_tracks: Sequence, uri: str = "video") -> list:
    """Pair ``turns`` with ``face_tracks`` (:class:`~xmodal_diar.faces.types.FaceTrack`)."""
    from pyannote.core import Annotation

    from xmodal_diar.faces.pairing import pair_turns_with_tracks

    annotation = Annotation(uri=uri)
    for i, turn in enumerate(turns):
        annotation[turn, i] = f"turn{i}"
    return pair_turns_with_tracks(annotation, face_tracks)


def track_embeddings(face_tracks: Sequence) -> Dict[object, np.ndarray]:
    """Mean face embedding of every track that has embeddings."""
    out = {}
    for track in face_tracks:
        if any(d.embedding is not None for d in track.detections):
            out[track.track_id] = track.mean_embedding()
    return out


class FaceEvidence(Pipeline):
    """Turn-level face evidence as clustering constraints.

    Hyper-parameters
    ----------------
    min_confidence : pairings less confident than this are ignored.
    same_face_threshold : cosine distance between two tracks' mean face embeddings below
        which they are the same person (0 switches it off: one track, one identity).
    """

    def __init__(self):
        super().__init__()
        self.min_confidence = Uniform(0.0, 1.0)
        self.same_face_threshold = Uniform(0.0, 1.0)

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS)

    def __call__(
        self, turns: Sequence[Segment], evidence, uri: str = "video"
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Must-link and cannot-link matrices for ``turns``.

        ``evidence``: a sequence of face pairings (see :data:`PairingLike`), of
        :class:`~xmodal_diar.faces.types.FaceTrack` (then paired with the turns here by
        :func:`~xmodal_diar.faces.pairing.pair_turns_with_tracks`), or the
        ``FaceTracks`` that :func:`xmodal_diar.faces.extract_face_tracks` returns.
        """
        if hasattr(evidence, "tracks"):  # a FaceTracks (xmodal_diar.faces.extract_face_tracks)
            evidence = evidence.tracks
        evidence = list(evidence)
        embeddings = None
        if evidence and hasattr(evidence[0], "detections"):
            embeddings = track_embeddings(evidence)
            evidence = pairings_from_face_tracks(turns, evidence, uri=uri)
        tracks, confidences = turn_face_tracks(turns, evidence)
        identities = face_identities(tracks, embeddings, self.same_face_threshold)
        return link_constraints(tracks, confidences, self.min_confidence, identities)
