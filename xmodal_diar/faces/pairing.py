"""Pair speech turns with the face track of their speaker (or with none).

For a turn ``s = [a, b]`` and each face track ``k`` of the same video, with ``h`` half
the sampling period (a detection at ``t`` stands for ``[t - h, t + h]``):

- coverage  ``c_k = |[start_k - h, end_k + h] ∩ s| / |s|``;
- prominence ``p_k``: weighted mean of cues, each relative to the best candidate of the
  turn: face size (mean box side), frontality (mean :class:`FaceQuality` frontality) and
  persistence (track duration);
- who speaks ``m_k``: mouth motion over the turn, the MEDIAN of the absolute change of the
  inner-lip opening (relative to the box height, from 68-point landmarks) between
  consecutive samples inside the turn (robust to a single landmark glitch, and it follows
  the part of the turn where most of the speech is), floored at ``mouth_floor`` (the
  landmark jitter of a still face), relative to the most moving candidate,
  ``m_k = (max(mouth_k, floor) / max_l max(mouth_l, floor)) ** w_mouth`` (1 when a
  candidate lacks 68 points or there is one candidate): with two faces on screen and one
  voice, the face whose lips move takes the turn, a still face loses it;
- score ``r_k = c_k * p_k * m_k``.

The turn goes to ``k* = argmax r_k`` with confidence ``c_k* * clip(1 - rho / max_ratio, 0, 1)``
in [0, 1], ``rho = max_{k != k*} r_k / r_k*`` (the runner-up relative to the winner; 0 for
one candidate): only a CLEAR winner gets confidence. Two faces whose mouths move alike
(or are both still), or a turn straddling two faces, give ~0 confidence, so the face
evidence leaves that turn to the voices. ``mouth_floor`` and ``max_ratio`` are measured on
real two-face montages by ``python benchmarks/video_tune.py`` (:data:`MOUTH_FLOOR`,
:data:`MAX_RATIO`). A turn whose best coverage is below
``min_coverage``, or confidence below ``min_confidence``, stays unpaired: off-screen
speakers are common in broadcast (Le & Odobez 2017 pair turns with face tracks this way
to get their face teacher).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from pyannote.core import Annotation, Segment

from xmodal_diar.faces.types import FaceDetection, FaceTrack

__all__ = ["TurnPairing", "PAIRING_CUES", "MOUTH_FLOOR", "MAX_RATIO", "load_turns", "mouth_opening", "mouth_motion",
           "pair_turns_with_tracks"]

#: Default weights of the prominence cues.
PAIRING_CUES: Dict[str, float] = {"size": 1.0, "frontality": 1.0, "persistence": 1.0, "mouth": 1.0}

#: Mouth motion (median |change| of the opening per 5 fps sample) below which a face counts as still:
#: the largest value of a still listener over the turns of the tuning two-face montages
#: (``python benchmarks/video_tune.py``, section "mouth").
MOUTH_FLOOR = 0.0026
#: A winner whose runner-up scores this fraction of its score or more gets no confidence
#: (``python benchmarks/video_tune.py``, grid ``face.max_ratio``).
MAX_RATIO = 0.75

_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # 68-point (iBUG) upper/lower inner lip


@dataclass(frozen=True)
class TurnPairing:
    """A speech turn and the face track paired with it (``track_id`` None: unpaired)."""

    segment: Segment
    label: str
    track_id: Optional[int]
    confidence: float  #: in [0, 1]; 0 when unpaired for lack of any face


def load_turns(turns: Union[Annotation, str, Path], uri: Optional[str] = None) -> Annotation:
    """``turns`` as an Annotation: itself, or the (``uri``) annotation of an RTTM file."""
    if isinstance(turns, Annotation):
        return turns
    path = Path(turns)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: speech turns must be a pyannote Annotation or an RTTM file")
    from pyannote.database.util import load_rttm

    try:
        by_uri = load_rttm(str(path))
    except Exception as exc:  # pandas parse errors
        raise ValueError(f"{path}: not a readable RTTM file ({exc})") from exc
    if uri is not None:
        if uri not in by_uri:
            raise ValueError(f"{path}: no turns for uri {uri!r} (it has {sorted(by_uri)})")
        return by_uri[uri]
    if len(by_uri) != 1:
        raise ValueError(f"{path}: holds {len(by_uri)} uris {sorted(by_uri)}; say which with uri=")
    return next(iter(by_uri.values()))


def mouth_opening(detection: FaceDetection) -> Optional[float]:
    """Inner-lip opening over box height, from 68-point landmarks (None without them)."""
    lm = detection.landmarks
    if lm is None or len(lm) != 68:
        return None
    gap = np.mean([np.linalg.norm(lm[u] - lm[v]) for u, v in _INNER_LIP_PAIRS])
    height = max(float(detection.box[3] - detection.box[1]), 1e-6)
    return float(gap / height)


def mouth_motion(detections: Sequence[FaceDetection]) -> Optional[float]:
    """Median absolute change of :func:`mouth_opening` between consecutive ``detections``
    (None with fewer than two, or when one lacks 68 landmarks)."""
    openings = [mouth_opening(d) for d in detections]
    if len(openings) < 2 or None in openings:
        return None
    return float(np.median(np.abs(np.diff(openings))))


def _sample_period(tracks: Sequence[FaceTrack]) -> float:
    steps = [np.diff([d.time for d in t.detections]) for t in tracks if len(t.detections) > 1]
    steps = np.concatenate(steps) if steps else np.array([])
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 0.0


def _cues(track: FaceTrack, turn: Segment, h: float) -> Dict[str, Optional[float]]:
    inside = [d for d in track.detections if turn.start - h <= d.time <= turn.end + h]
    if not inside:  # a turn shorter than the sampling period: its nearest detection
        inside = [min(track.detections, key=lambda d: abs(d.time - turn.middle))]
    boxes = np.stack([d.box for d in inside]).astype(np.float64)
    side = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    fronts = [d.quality.frontality for d in inside if d.quality is not None]
    return {
        "size": float(side.mean()),
        "frontality": float(np.mean(fronts)) if fronts else None,
        "persistence": track.end - track.start + 2 * h,
        "mouth": mouth_motion(inside),
    }


def pair_turns_with_tracks(
    turns: Union[Annotation, str, Path],
    tracks: Sequence[FaceTrack],
    *,
    uri: Optional[str] = None,
    sample_period: Optional[float] = None,
    min_coverage: float = 0.5,
    min_confidence: float = 0.0,
    cues: Optional[Dict[str, float]] = None,
    mouth_floor: float = MOUTH_FLOOR,
    max_ratio: float = MAX_RATIO,
) -> List[TurnPairing]:
    """Pair every turn of ``turns`` (Annotation or RTTM path) with one of ``tracks`` or none.

    ``sample_period`` (s) defaults to the median step between detections of a track.
    ``cues`` overrides :data:`PAIRING_CUES` (a weight of 0 switches a cue off).
    ``mouth_floor``, ``max_ratio``: see the module docstring.
    Returns one :class:`TurnPairing` per turn, in time order.
    """
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
    if not max_ratio > 0 or not mouth_floor >= 0:
        raise ValueError(f"max_ratio must be > 0 and mouth_floor >= 0, got {max_ratio}, {mouth_floor}")
    weights = dict(PAIRING_CUES, **(cues or {}))
    unknown = set(weights) - set(PAIRING_CUES)
    if unknown:
        raise ValueError(f"unknown pairing cues {sorted(unknown)}; known: {sorted(PAIRING_CUES)}")
    annotation = load_turns(turns, uri)
    tracks = [t for t in tracks if t.detections]
    h = 0.5 * (_sample_period(tracks) if sample_period is None else float(sample_period))

    pairings: List[TurnPairing] = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        duration = max(segment.duration, 1e-9)
        coverage, candidates = [], []
        for t in tracks:
            c = max(0.0, min(segment.end, t.end + h) - max(segment.start, t.start - h)) / duration
            if c > 0:
                coverage.append(min(c, 1.0))
                candidates.append(t)
        if not candidates:
            pairings.append(TurnPairing(segment, str(label), None, 0.0))
            continue
        cues_k = [_cues(t, segment, h) for t in candidates]
        prominence = np.zeros(len(candidates))
        total_weight = 0.0
        for name, w in weights.items():
            if name == "mouth":
                continue
            values = [c[name] for c in cues_k]
            if w <= 0 or any(v is None for v in values):
                continue  # a cue counts only when every candidate has it
            values = np.asarray(values, dtype=np.float64)
            top = values.max()
            prominence += w * (values / top if top > 0 else np.ones_like(values))
            total_weight += w
        prominence = prominence / total_weight if total_weight > 0 else np.ones(len(candidates))
        speaking = np.ones(len(candidates))
        mouths = [c["mouth"] for c in cues_k]
        if len(candidates) > 1 and weights["mouth"] > 0 and None not in mouths:
            moving = np.maximum(np.asarray(mouths), mouth_floor)
            if moving.max() > 0:
                speaking = (moving / moving.max()) ** weights["mouth"]
        score = np.asarray(coverage) * prominence * speaking
        best = int(np.argmax(score))
        if score[best] > 0:
            runner_up = float(np.delete(score, best).max() / score[best]) if len(score) > 1 else 0.0
            confidence = float(coverage[best] * np.clip(1.0 - runner_up / max_ratio, 0.0, 1.0))
        else:
            confidence = 0.0
        paired = coverage[best] >= min_coverage and confidence >= min_confidence
        track_id = candidates[best].track_id if paired else None
        pairings.append(TurnPairing(segment, str(label), track_id, float(np.clip(confidence, 0.0, 1.0))))
    return pairings
