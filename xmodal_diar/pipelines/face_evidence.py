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
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pyannote.core import Segment
from pyannote.pipeline import Pipeline
from pyannote.pipeline.parameter import Uniform

from xmodal_diar.faces.calibration import FaceCalibration, cosine_distances

DEFAULT_PARAMETERS = {"min_confidence": 0.1, "weight": 1.0}

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


def pairings_from_face_tracks(turns: Sequence[Segment], face_tracks: Sequence, uri: str = "video") -> list:
    """Pair ``turns`` with ``face_tracks`` (:class:`~xmodal_diar.faces.types.FaceTrack`)."""
    from pyannote.core import Annotation

    from xmodal_diar.faces.pairing import pair_turns_with_tracks

    annotation = Annotation(uri=uri)
    for i, turn in enumerate(turns):
        annotation[turn, i] = f"turn{i}"
    return pair_turns_with_tracks(annotation, face_tracks)


class FaceEvidence(Pipeline):
    """Turn-level face evidence as an additive offset to the turns' cosine distances.

    ``calibration`` overrides the face embedder's own (by default read from the
    ``FaceTracks``' embedder name, see :func:`xmodal_diar.faces.embedding.embedder_calibration`).

    Hyper-parameters
    ----------------
    min_confidence : pairings less confident than this are ignored.
    weight : largest offset (cosine-distance units) that certain evidence gives.
    """

    def __init__(self, calibration: Optional[FaceCalibration] = None):
        super().__init__()
        self.calibration = calibration
        self.min_confidence = Uniform(0.0, 1.0)
        self.weight = Uniform(0.0, 2.0)

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
        """The ``(N, N)`` distance offset of the N ``turns``.

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
            evidence = pairings_from_face_tracks(turns, evidence, uri=uri)
            tracks, confidences = turn_face_tracks(turns, evidence)
        else:  # explicit pairings: track ids are identities
            tracks, confidences = turn_face_tracks(turns, evidence)
            track_ids = list(dict.fromkeys(k for k in tracks if k is not None))
            matrix = np.where(np.equal.outer(np.arange(len(track_ids)), np.arange(len(track_ids))), 1.0, -1.0)
        return distance_offset(tracks, confidences, track_ids, matrix, self.weight, self.min_confidence)
