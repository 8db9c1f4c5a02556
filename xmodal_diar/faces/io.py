"""The face tracks of one video and their file (``<stem>.faces.npz``).

One ``.npz`` per video, one row per detection (no pickle, so it loads anywhere):

==============  ===============  ============================================
key             shape / dtype    content
==============  ===============  ============================================
format          () str           ``"xmodal_diar.faces/1"``
meta            () str           JSON: video, fps, duration, detector, embedder,
                                 embedding_dim, quality_fields, shot_cuts
track_id        (N,) int32       track of the detection, -1 = in no kept track
frame, time     (N,) int64/f64   decoded-frame index, seconds
box, score      (N, 4), (N,)     x1 y1 x2 y2 pixels, detector confidence
landmarks       (N, K, 2) f32    NaN rows where a detection has none
embedding       (N, D) f32       NaN rows where a detection has none
quality         (N, 4) f32       score, size, sharpness, frontality (NaN: none)
aligned         (N, H, W, 3) u8  optional aligned crops (``save(aligned=True)``)
==============  ===============  ============================================
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from xmodal_diar.faces.types import FaceDetection, FaceQuality, FaceTrack

__all__ = ["FACES_FORMAT", "FaceTracks", "load_face_tracks"]

FACES_FORMAT = "xmodal_diar.faces/1"
PathLike = Union[str, Path]


@dataclass
class FaceTracks:
    """Everything :func:`xmodal_diar.faces.extract_face_tracks` found in one video."""

    video: str  #: path of the video
    fps: Optional[float]  #: sampling rate of the frames (None: every frame)
    tracks: List[FaceTrack] = field(default_factory=list)
    untracked: List[FaceDetection] = field(default_factory=list)  #: detections of dropped short tracks
    shot_cuts: List[float] = field(default_factory=list)  #: times (s) where a new shot starts
    duration: float = 0.0  #: of the video, seconds
    detector: str = ""
    embedder: str = ""

    @property
    def detections(self) -> List[FaceDetection]:
        return [d for t in self.tracks for d in t.detections] + list(self.untracked)

    @property
    def embedding_dim(self) -> int:
        """Dimension D of the face embeddings (0 when no detection has one)."""
        for d in self.detections:
            if d.embedding is not None:
                return int(np.asarray(d.embedding).shape[-1])
        return 0

    def dominant_track(self) -> Optional[FaceTrack]:
        """The track with the most detections (None when there is none)."""
        return max(self.tracks, key=lambda t: len(t.detections), default=None)

    def save(self, path: PathLike, *, aligned: bool = False) -> Path:
        """Write the ``.npz`` file (compressed); ``aligned=True`` also stores the crops."""
        path = Path(path)
        rows = [(t.track_id, d) for t in self.tracks for d in t.detections] + [(-1, d) for d in self.untracked]
        n = len(rows)
        dim = self.embedding_dim
        k = {len(d.landmarks) for _, d in rows if d.landmarks is not None}
        if len(k) > 1:
            raise ValueError(f"{path}: detections mix landmark counts {sorted(k)}; one file holds one kind")
        k_points = k.pop() if k else 0
        arrays: Dict[str, Any] = {
            "format": np.array(FACES_FORMAT),
            "track_id": np.array([i for i, _ in rows], dtype=np.int32),
            "frame": np.array([d.frame for _, d in rows], dtype=np.int64),
            "time": np.array([d.time for _, d in rows], dtype=np.float64),
            "box": np.array([np.asarray(d.box, dtype=np.float32) for _, d in rows], dtype=np.float32).reshape(n, 4),
            "score": np.array([d.score for _, d in rows], dtype=np.float32),
            "landmarks": np.full((n, k_points, 2), np.nan, dtype=np.float32),
            "embedding": np.full((n, dim), np.nan, dtype=np.float32),
            "quality": np.full((n, len(FaceQuality.FIELDS)), np.nan, dtype=np.float32),
        }
        for i, (_, d) in enumerate(rows):
            if d.landmarks is not None:
                arrays["landmarks"][i] = d.landmarks
            if d.embedding is not None:
                if np.asarray(d.embedding).shape != (dim,):
                    raise ValueError(f"{path}: embeddings of different dimensions ({dim} and {np.shape(d.embedding)})")
                arrays["embedding"][i] = d.embedding
            if d.quality is not None:
                arrays["quality"][i] = d.quality.as_vector()
        if aligned and n and all(d.aligned is not None for _, d in rows):
            shapes = {d.aligned.shape for _, d in rows}
            if len(shapes) == 1:
                arrays["aligned"] = np.stack([d.aligned for _, d in rows]).astype(np.uint8)
        meta = {
            "video": str(self.video),
            "fps": self.fps,
            "duration": float(self.duration),
            "detector": self.detector,
            "embedder": self.embedder,
            "embedding_dim": dim,
            "quality_fields": list(FaceQuality.FIELDS),
            "shot_cuts": [float(c) for c in self.shot_cuts],
        }
        arrays["meta"] = np.array(json.dumps(meta))
        from xmodal_diar.outputs import atomic_write

        with atomic_write(path, "wb") as f:  # a file object: numpy would append ".npz" to a str
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: PathLike, *, embedding_dim: Optional[int] = None) -> "FaceTracks":
        """Read a file written by :meth:`save`; ``embedding_dim`` checks the dimension D."""
        return load_face_tracks(path, embedding_dim=embedding_dim)


def _nan_to_none(row: np.ndarray) -> Optional[np.ndarray]:
    return None if row.size == 0 or np.isnan(row).any() else row


def load_face_tracks(path: PathLike, *, embedding_dim: Optional[int] = None) -> FaceTracks:
    """The :class:`FaceTracks` stored in ``path`` (ValueError if it is not such a file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such face-track file")
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not an .npz face-track file ({exc})") from exc
    with data:
        if "format" not in files or str(data["format"]) != FACES_FORMAT:
            found = str(data["format"]) if "format" in files else f"no 'format' entry, keys {sorted(files)}"
            raise ValueError(f"{path}: not an xmodal-diar face-track file (expected format {FACES_FORMAT!r}, {found})")
        arrays = {key: data[key] for key in files}
    meta = json.loads(str(arrays["meta"]))
    n = len(arrays["track_id"])
    dim = arrays["embedding"].shape[1]
    if dim != meta["embedding_dim"] or any(len(arrays[k]) != n for k in ("frame", "time", "box", "embedding")):
        raise ValueError(f"{path}: inconsistent file (embedding dimension {dim}, meta says {meta['embedding_dim']})")
    if embedding_dim is not None and dim != embedding_dim:
        raise ValueError(f"{path}: face embeddings are {dim}-D, expected {embedding_dim}-D")
    fields = meta["quality_fields"]
    if tuple(fields) != FaceQuality.FIELDS:
        raise ValueError(f"{path}: quality fields {fields} differ from {list(FaceQuality.FIELDS)}")

    by_track: Dict[int, List[FaceDetection]] = {}
    untracked: List[FaceDetection] = []
    aligned = arrays.get("aligned")
    for i in range(n):
        q = _nan_to_none(arrays["quality"][i])
        det = FaceDetection(
            frame=int(arrays["frame"][i]),
            time=float(arrays["time"][i]),
            box=arrays["box"][i].copy(),
            score=float(arrays["score"][i]),
            landmarks=_nan_to_none(arrays["landmarks"][i].copy()),
            embedding=_nan_to_none(arrays["embedding"][i].copy()),
            quality=None if q is None else FaceQuality(**{f: float(v) for f, v in zip(fields, q)}),
            aligned=None if aligned is None else aligned[i],
        )
        track_id = int(arrays["track_id"][i])
        (untracked if track_id < 0 else by_track.setdefault(track_id, [])).append(det)
    tracks = [FaceTrack(track_id=k, detections=sorted(v, key=lambda d: d.frame)) for k, v in sorted(by_track.items())]
    return FaceTracks(
        video=meta["video"],
        fps=meta["fps"],
        tracks=tracks,
        untracked=untracked,
        shot_cuts=meta["shot_cuts"],
        duration=meta["duration"],
        detector=meta["detector"],
        embedder=meta["embedder"],
    )
