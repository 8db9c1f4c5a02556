"""Data types of the face side: detections, qualities and tracks (shared by every faces module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


@dataclass
class FaceQuality:
    """Per-detection quality, each in [0, 1] (1 = best); feeds VGSR's QAW weights."""

    score: float  #: detector confidence
    size: float  #: face size relative to a reference (e.g. box side / 112 px, clipped)
    sharpness: float  #: variance of the Laplacian of the aligned crop, squashed to [0, 1]
    frontality: float  #: 1 - normalised yaw/roll estimated from landmarks

    FIELDS = ("score", "size", "sharpness", "frontality")

    def as_vector(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in self.FIELDS], dtype=np.float32)


@dataclass
class FaceDetection:
    """One face in one sampled video frame."""

    frame: int  #: index of the decoded frame in the video (not of the sampled frame)
    time: float  #: seconds from the start of the video
    box: np.ndarray  #: (4,) float32 x1, y1, x2, y2 in pixels
    score: float  #: detector confidence
    landmarks: Optional[np.ndarray] = None  #: (K, 2) float32 pixels (K = 5 or 68)
    embedding: Optional[np.ndarray] = None  #: (D,) float32, L2-normalised
    quality: Optional[FaceQuality] = None
    aligned: Optional[np.ndarray] = None  #: aligned RGB crop (H, W, 3) uint8, for contact sheets


@dataclass
class FaceTrack:
    """Detections of one face linked across sampled frames (one person, one shot)."""

    track_id: int
    detections: List[FaceDetection] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.detections[0].time

    @property
    def end(self) -> float:
        return self.detections[-1].time

    def mean_embedding(self) -> np.ndarray:
        """L2-normalised mean of the detections' embeddings (the teacher's ``t``)."""
        e = np.stack([d.embedding for d in self.detections if d.embedding is not None])
        m = e.mean(0)
        return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)
