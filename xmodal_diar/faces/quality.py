"""Per-detection face quality, each term in [0, 1] (1 = best): the inputs of VGSR's QAW.

Jin et al. 2023 (VGSR) weight each training sample by the quality of its face; the terms
(inferred, see DESIGN.md) are:

- ``score``: the detector's confidence, clipped to [0, 1];
- ``size``: ``min(1, sqrt(w h) / reference_size)`` of the box (112 px: the ArcFace crop);
- ``sharpness``: ``v / (v + v0)`` with ``v`` the variance of the Laplacian of the grey
  aligned crop (Pech-Pacheco et al. 2000) and ``v0`` the variance at which it is 0.5;
- ``frontality``: ``(1 - |yaw| / 90°)(1 - |roll| / 90°)`` with the pose of
  :func:`estimate_pose`.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from xmodal_diar.faces.alignment import eyes_and_nose
from xmodal_diar.faces.types import FaceQuality

#: Depth of the nose in front of the eye plane, in half inter-ocular distances (anthropometric,
#: about 20 mm for 32 mm): under orthographic projection the nose shifts sideways from the
#: eyes' midpoint by ``NOSE_DEPTH * tan(yaw)`` half inter-ocular distances.
NOSE_DEPTH = 0.7
#: Variance of the Laplacian (grey levels 0..255) that maps to sharpness 0.5.
SHARPNESS_REFERENCE = 100.0


def estimate_pose(landmarks: np.ndarray) -> Tuple[float, float]:
    """``(yaw, roll)`` in degrees from a 5- or 68-point landmark set.

    ``roll`` is the angle of the line through the eye centres; ``yaw`` is
    ``atan(r / NOSE_DEPTH)`` with ``r`` the nose's offset from the eyes' midpoint along
    that line, in half inter-ocular distances (0 for a frontal face, growing towards a profile).
    """
    left_eye, right_eye, nose = eyes_and_nose(landmarks).astype(np.float64)
    eye_line = right_eye - left_eye
    distance = float(np.linalg.norm(eye_line))
    if distance < 1e-6:  # eyes on top of each other: a full profile
        return 90.0, 0.0
    direction = eye_line / distance
    roll = math.degrees(math.atan2(direction[1], direction[0]))
    offset = float(np.dot(nose - (left_eye + right_eye) / 2, direction)) / (distance / 2)
    yaw = math.degrees(math.atan(offset / NOSE_DEPTH))
    return yaw, roll


def frontality(landmarks: np.ndarray) -> float:
    """``(1 - |yaw| / 90°)(1 - |roll| / 90°)`` clipped to [0, 1]: 1 for an upright frontal face."""
    yaw, roll = estimate_pose(landmarks)
    return float(np.clip(1 - abs(yaw) / 90, 0, 1) * np.clip(1 - abs(roll) / 90, 0, 1))


def laplacian_variance(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (0..255 levels): low when blurred."""
    from scipy.ndimage import laplace

    crop = np.asarray(crop, dtype=np.float32)
    grey = crop.mean(axis=2) if crop.ndim == 3 else crop
    return float(laplace(grey).var())


def sharpness(crop: np.ndarray, reference: float = SHARPNESS_REFERENCE) -> float:
    """``v / (v + reference)`` with ``v`` the variance of the Laplacian, in [0, 1)."""
    variance = laplacian_variance(crop)
    return variance / (variance + reference)


def face_quality(
    score: float,
    box: np.ndarray,
    aligned_crop: np.ndarray,
    landmarks: np.ndarray,
    reference_size: float = 112.0,
) -> FaceQuality:
    """Quality of one detection: detector score, face size, sharpness and frontality."""
    box = np.asarray(box, dtype=np.float64)
    side = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
    return FaceQuality(
        score=float(np.clip(score, 0.0, 1.0)),
        size=float(min(1.0, side / reference_size)),
        sharpness=sharpness(aligned_crop),
        frontality=frontality(landmarks),
    )
