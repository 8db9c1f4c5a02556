"""Face tracks from video: the frozen face teacher of cross-modal transfer.

``extract_face_tracks(video)`` decodes frames sampled at ``fps`` (PyAV), detects, aligns,
embeds and scores every face (:class:`FaceExtractor`), finds shot cuts on the same
frames, links the detections into tracks and returns a :class:`FaceTracks` (saved as one
``.npz`` per video). :func:`pair_turns_with_tracks` then gives each speech turn the track
of its speaker, or none (Le & Odobez 2017; Jin et al. 2023 weight samples by the quality
stored with each detection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from xmodal_diar.faces.contact_sheet import contact_sheet, save_contact_sheet
from xmodal_diar.faces.embedding import (
    FaceEmbedder,
    FaceExtractor,
    build_embedder,
    detect_and_embed,
    iter_frame_detections,
)
from xmodal_diar.faces.detection import FaceDetector, build_detector
from xmodal_diar.faces.alignment import Landmarker, build_landmarker
from xmodal_diar.faces.io import FaceTracks, load_face_tracks
from xmodal_diar.faces.pairing import TurnPairing, load_turns, pair_turns_with_tracks
from xmodal_diar.faces.calibration import FaceCalibration
from xmodal_diar.faces.shots import DEFAULT_THRESHOLD as SHOT_THRESHOLD
from xmodal_diar.faces.shots import ShotCut, ShotCutDetector, detect_shot_cuts
from xmodal_diar.faces.tracking import link_detections, split_identity_jumps, split_short_tracks, track_quality
from xmodal_diar.faces.types import FaceDetection, FaceQuality, FaceTrack
from xmodal_diar.faces.video import VideoError, iter_frames, video_info  # noqa: F401 (re-exported)

__all__ = [
    "FaceDetection", "FaceQuality", "FaceTrack", "FaceTracks", "TurnPairing", "ShotCut", "VideoError", "FaceCalibration",
    "IDENTITY_JUMP_FACTOR", "SHOT_THRESHOLD",
    "FaceDetector", "Landmarker", "FaceEmbedder", "FaceExtractor",
    "build_detector", "build_landmarker", "build_embedder",
    "extract_face_tracks", "detect_and_embed", "detect_shot_cuts", "link_detections", "split_identity_jumps", "split_short_tracks", "track_quality",
    "pair_turns_with_tracks", "load_turns", "load_face_tracks", "contact_sheet", "save_contact_sheet",
]


#: Identity-jump threshold over the embedder's calibrated (track-mean) threshold (faces README).
IDENTITY_JUMP_FACTOR = 0.69


def extract_face_tracks(
    video: Union[str, Path],
    fps: Optional[float] = 5.0,
    *,
    detector: Union[str, FaceDetector] = "blazeface",
    landmarks: Union[str, Landmarker] = "dlib5",
    embedder: Union[str, FaceEmbedder] = "dlib",
    extractor: Optional[FaceExtractor] = None,
    shot_threshold: float = SHOT_THRESHOLD,
    min_detections: int = 3,
    min_duration: float = 0.0,
    max_gap: float = 1.0,
    keep_aligned: bool = True,
    embed_every: int = 15,
    detect_every: int = 10,
    embed_workers: int = 0,
    progress: bool = False,
    identity_threshold: Optional[float] = None,
    **tracking_options,
) -> FaceTracks:
    """Face tracks of ``video`` sampled at ``fps`` frames per second (None: every frame).

    One decoding pass: every decoded frame feeds the shot-cut detector
    (:class:`ShotCutDetector`, ``shot_threshold``: cuts to the frame), each sampled frame
    the face ``extractor`` (built from ``detector``/``landmarks``/``embedder`` unless given,
    to reuse loaded models across videos). The detector runs on every ``detect_every``-th
    sampled frame and on the first of each shot; in between, the faces are followed by
    template matching and their landmarks are fitted where they went (a lost face calls
    the detector). Each face is embedded on its first sampled frame and every
    ``embed_every``-th after (dlib's embedder dominates the cost, and a track's mean needs
    few faces); ``embed_workers=1`` embeds in a second process, see :class:`FaceExtractor`.
    Both defaults were chosen by measurement (faces README, "Speed"): with them the
    face tracks cost about a fifth of a CPU second per second of 25 fps video.
    ``detect_every=1`` and ``embed_every=3`` give the former behaviour.
    :func:`link_detections` (``min_detections``, ``min_duration``, ``max_gap``,
    ``tracking_options``) makes the tracks, and :func:`split_identity_jumps` cuts them where
    the face identity jumps (``identity_threshold``, a cosine distance; default:
    :data:`IDENTITY_JUMP_FACTOR` times the embedder's calibrated threshold, measured by
    ``python -m xmodal_diar.faces.calibrate``; none without a calibration). Detections of dropped short tracks are kept
    in ``untracked``. A video without faces gives no track; an unreadable one raises
    :class:`VideoError` naming the file.
    """
    info = video_info(video)
    if extractor is None:
        extractor = FaceExtractor(detector, landmarks, embedder, keep_aligned=keep_aligned, embed_workers=embed_workers)
    shots = ShotCutDetector(threshold=shot_threshold)
    detections = []
    for _, _, _, found in iter_frame_detections(
        video, fps, extractor, embed_every=embed_every, detect_every=detect_every, progress=progress,
        on_frame=shots.update,
    ):
        detections.extend(found)
    cuts = [c.time for c in shots.cuts]
    tracks = link_detections(
        detections, shot_cuts=cuts, min_detections=1, max_gap=max_gap, **tracking_options
    )
    calibration = extractor.embedder.calibration
    if identity_threshold is None and calibration is not None:
        identity_threshold = IDENTITY_JUMP_FACTOR * calibration.threshold
    if identity_threshold is not None:
        tracks = split_identity_jumps(tracks, identity_threshold)
    kept, dropped = split_short_tracks(tracks, min_detections, min_duration)
    untracked = [d for t in dropped for d in t.detections]
    for new_id, track in enumerate(kept):
        track.track_id = new_id
    return FaceTracks(
        video=str(video),
        fps=fps,
        tracks=kept,
        untracked=sorted(untracked, key=lambda d: d.frame),
        shot_cuts=cuts,
        duration=info.duration,
        detector=extractor.detector.name,
        embedder=extractor.embedder.name,
    )
