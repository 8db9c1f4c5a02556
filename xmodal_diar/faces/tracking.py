"""Face tracking: link per-frame detections into tracks (one person, one shot).

Tracking-by-detection on sampled frames. Between the open tracks and the detections
of the next sampled frame, the affinity is

    a(T, d) = w * IoU(box_T, box_d) + (1 - w) * cos(e_T, e_d)

with ``box_T`` the track's last box, ``e_T`` the normalised mean embedding of its last
few detections and ``w`` = ``iou_weight`` (``a = IoU`` when an embedding is missing).
The assignment maximising the total affinity is found by the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`); a pair is linked only when
``a >= min_affinity`` and ``cos >= min_cosine`` (two different people never merge even
when their boxes cross). A track is closed at a shot cut and after ``max_gap`` seconds
without a detection; tracks shorter than ``min_detections`` / ``min_duration`` are
dropped. Track quality is the mean of its detections' qualities (VGSR's QAW input).

Track purity: a missed shot cut (or two people swapping places) can still chain two
identities. :func:`split_identity_jumps` cuts a track where its identity jumps: at the
first embedded detection whose cosine distance to the mean of the track so far (since
its last cut) exceeds
``max_distance`` and is confirmed by the next embedded detection (one odd frame, a blur
or a profile, does not split a track); among the detections without embedding just
before it, the cut goes where the box moves most (``1 - IoU``): a split is only as
precise as the embedded faces (``embed_every``); hard cuts are found to the frame by
:mod:`~xmodal_diar.faces.shots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from xmodal_diar.faces.types import FaceDetection, FaceQuality, FaceTrack

__all__ = ["box_iou", "link_detections", "split_identity_jumps", "split_short_tracks", "track_quality"]

_FORBIDDEN = 1e6  # cost of a pair that must not be linked


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class _OpenTrack:
    detections: List[FaceDetection] = field(default_factory=list)
    memory: int = 5  # detections whose embeddings form the track's appearance

    @property
    def last(self) -> FaceDetection:
        return self.detections[-1]

    def appearance(self) -> Optional[np.ndarray]:
        e = [d.embedding for d in self.detections[-self.memory :] if d.embedding is not None]
        if not e:
            return None
        m = np.mean(np.stack(e), axis=0)
        return m / max(float(np.linalg.norm(m)), 1e-12)


def _cosine(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
    if a is None or b is None:
        return None
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def link_detections(
    detections: Iterable[FaceDetection],
    *,
    shot_cuts: Sequence[float] = (),
    iou_weight: float = 0.5,
    min_affinity: float = 0.3,
    min_cosine: float = 0.5,
    max_gap: float = 1.0,
    min_detections: int = 3,
    min_duration: float = 0.0,
) -> List[FaceTrack]:
    """Link ``detections`` (any order; grouped by ``frame``) into :class:`FaceTrack` s.

    Parameters
    ----------
    shot_cuts : times (s) of the first frame of each new shot; no track spans one.
    iou_weight : ``w`` in the affinity above, in [0, 1].
    min_affinity : smallest affinity for a link.
    min_cosine : smallest embedding cosine similarity for a link (when both have one).
    max_gap : a track whose last detection is more than ``max_gap`` s old is closed.
    min_detections, min_duration : shorter tracks (in detections, in seconds
        between first and last detection) are dropped.

    Returns the tracks ordered by start time, with ids 0, 1, 2, ...
    """
    if not 0.0 <= iou_weight <= 1.0:
        raise ValueError(f"iou_weight must be in [0, 1], got {iou_weight}")
    if max_gap <= 0:
        raise ValueError(f"max_gap must be positive (seconds), got {max_gap}")
    if min_detections < 1:
        raise ValueError(f"min_detections must be at least 1, got {min_detections}")
    by_frame: dict = {}
    for d in detections:
        by_frame.setdefault(int(d.frame), []).append(d)
    cuts = np.sort(np.asarray(list(shot_cuts), dtype=np.float64))

    open_tracks: List[_OpenTrack] = []
    closed: List[_OpenTrack] = []
    for frame in sorted(by_frame):
        current = by_frame[frame]
        now = float(current[0].time)
        # close tracks across a shot cut or after too long a gap
        still_open = []
        for t in open_tracks:
            crossed_cut = np.any((cuts > t.last.time) & (cuts <= now))
            (closed if crossed_cut or now - t.last.time > max_gap else still_open).append(t)
        open_tracks = still_open

        assigned = set()
        if open_tracks:
            iou = box_iou(np.stack([t.last.box for t in open_tracks]), np.stack([d.box for d in current]))
            cost = np.full(iou.shape, _FORBIDDEN)
            for i, t in enumerate(open_tracks):
                e_t = t.appearance()
                for j, d in enumerate(current):
                    cos = _cosine(e_t, d.embedding)
                    if cos is None:
                        affinity = iou[i, j]
                    elif cos < min_cosine:
                        continue
                    else:
                        affinity = iou_weight * iou[i, j] + (1.0 - iou_weight) * cos
                    if affinity >= min_affinity:
                        cost[i, j] = 1.0 - affinity
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < _FORBIDDEN:
                    open_tracks[i].detections.append(current[j])
                    assigned.add(j)
        open_tracks += [_OpenTrack([d]) for j, d in enumerate(current) if j not in assigned]

    linked = sorted((t.detections for t in closed + open_tracks), key=lambda ds: (ds[0].time, float(ds[0].box[0])))
    kept, _ = split_short_tracks(
        [FaceTrack(track_id=k, detections=ds) for k, ds in enumerate(linked)], min_detections, min_duration
    )
    for k, track in enumerate(kept):
        track.track_id = k
    return kept


def split_short_tracks(
    tracks: Sequence[FaceTrack], min_detections: int = 3, min_duration: float = 0.0
) -> Tuple[List[FaceTrack], List[FaceTrack]]:
    """``(kept, dropped)``: tracks with at least ``min_detections`` detections spanning
    ``min_duration`` seconds, and the others."""
    kept, dropped = [], []
    for t in tracks:
        long_enough = len(t.detections) >= min_detections and t.end - t.start >= min_duration
        (kept if long_enough else dropped).append(t)
    return kept, dropped


def track_quality(track: FaceTrack) -> Optional[FaceQuality]:
    """Mean of the detections' :class:`FaceQuality` fields (None when no detection has one)."""
    q = [d.quality.as_vector() for d in track.detections if d.quality is not None]
    if not q:
        return None
    mean = np.mean(np.stack(q), axis=0)
    return FaceQuality(**{f: float(v) for f, v in zip(FaceQuality.FIELDS, mean)})


def _unit_mean(vectors: List[np.ndarray]) -> np.ndarray:
    m = np.mean(np.stack(vectors), axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def split_identity_jumps(tracks: Sequence[FaceTrack], max_distance: float) -> List[FaceTrack]:
    """Tracks cut where the face identity jumps (see the module docstring), renumbered 0, 1, ...

    ``max_distance``: cosine distance between one face and the mean of all the embedded
    faces of the track so far (since the last cut) above which the identity has changed.
    The mean of a few recent faces would be too noisy a reference: a face that stays still
    (a listener) gives identical embeddings, from which the next moving frame is far.
    """
    if max_distance <= 0:
        raise ValueError(f"max_distance must be a positive cosine distance, got {max_distance}")
    pieces: List[List[FaceDetection]] = []
    for track in tracks:
        detections = track.detections
        embedded = [k for k, d in enumerate(detections) if d.embedding is not None]
        start, reference, cuts = 0, [], []
        for n, k in enumerate(embedded):
            e = np.asarray(detections[k].embedding, dtype=np.float64)
            if reference:
                mean = _unit_mean(reference)
                far = 1.0 - float(e @ mean) / max(float(np.linalg.norm(e)), 1e-12) > max_distance
                if far and n + 1 < len(embedded):
                    nxt = np.asarray(detections[embedded[n + 1]].embedding, dtype=np.float64)
                    confirmed = 1.0 - float(nxt @ mean) / max(float(np.linalg.norm(nxt)), 1e-12) > max_distance
                    if confirmed:
                        # between the last face that matched and this one, cut where the box jumps most
                        last = embedded[n - 1]
                        jumps = [1.0 - box_iou(detections[p - 1].box, detections[p].box)[0, 0] for p in range(last + 1, k + 1)]
                        cuts.append(last + 1 + int(np.argmax(jumps)))
                        reference = [e]
                        continue
                if far:
                    continue  # an odd frame: neither a cut nor part of the appearance
            reference.append(e)
        for cut in cuts + [len(detections)]:
            if cut > start:
                pieces.append(detections[start:cut])
            start = cut
    pieces.sort(key=lambda ds: (ds[0].time, float(ds[0].box[0])))
    return [FaceTrack(track_id=k, detections=list(ds)) for k, ds in enumerate(pieces)]
