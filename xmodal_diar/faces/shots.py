"""Shot-cut detection from colour histograms of EVERY decoded frame.

The classic histogram-difference detector: each frame ``f_t`` (a small thumbnail is
enough: :func:`xmodal_diar.faces.video.iter_frames` hands one per decoded frame to
``on_frame``) gets a joint RGB histogram ``h_t`` (``bins`` levels per channel, normalised
to sum 1); the distance between consecutive frames is the total variation

    D_t = 1/2 * sum_k |h_t[k] - h_{t-1}[k]|  in [0, 1],

and a cut is declared before frame ``t`` when ``D_t >= threshold`` and the previous cut
is at least ``min_shot`` seconds earlier. Hard cuts only (a slow dissolve spread over
several frames stays below the threshold). Comparing consecutive decoded frames, not
5 fps samples, puts each cut on its exact frame and keeps camera motion between samples
from looking like a cut. :data:`DEFAULT_THRESHOLD` lies between the largest
within-shot and the smallest across-cut distance of real clips, measured by
``python -m xmodal_diar.faces.calibrate --shots`` (faces README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

__all__ = ["ShotCut", "ShotCutDetector", "color_histogram", "detect_shot_cuts", "video_shot_cuts", "DEFAULT_THRESHOLD"]

#: Histogram distance of a cut between consecutive decoded frames (faces README, "Shot cuts").
DEFAULT_THRESHOLD = 0.22


@dataclass(frozen=True)
class ShotCut:
    """The first frame of a new shot."""

    frame: int  #: index of that frame in the video
    time: float  #: its time (s); the cut lies between the previous frame and this one
    distance: float  #: histogram distance ``D_t`` that triggered it


def color_histogram(image: np.ndarray, bins: int = 8) -> np.ndarray:
    """Joint RGB histogram of an (H, W, 3) uint8 image (grey (H, W) accepted), ``bins**3`` values summing to 1."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey frame, got shape {image.shape}")
    q = (image.astype(np.uint16) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=bins**3).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


class ShotCutDetector:
    """Incremental form of :func:`detect_shot_cuts`: feed samples with :meth:`update`."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, min_shot: float = 0.5, bins: int = 8):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"shot-cut threshold must be in (0, 1], got {threshold}")
        self.threshold, self.min_shot, self.bins = threshold, min_shot, bins
        self.cuts: List[ShotCut] = []
        self._previous: Optional[np.ndarray] = None
        self._last_cut = -np.inf

    def update(self, frame: int, time: float, image: np.ndarray) -> Optional[ShotCut]:
        """Take the next sample; return the cut it starts, if any."""
        hist = color_histogram(image, self.bins)
        previous, self._previous = self._previous, hist
        if previous is None:
            return None
        distance = 0.5 * float(np.abs(hist - previous).sum())
        if distance < self.threshold or time - self._last_cut < self.min_shot:
            return None
        self._last_cut = time
        self.cuts.append(ShotCut(int(frame), float(time), distance))
        return self.cuts[-1]


def detect_shot_cuts(
    frames: Iterable[Tuple[int, float, np.ndarray]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_shot: float = 0.5,
    bins: int = 8,
) -> List[ShotCut]:
    """Cuts in a stream of ``(frame_index, time, rgb)`` frames (every frame, for exact cuts), in time order."""
    detector = ShotCutDetector(threshold, min_shot, bins)
    for frame, time, image in frames:
        detector.update(frame, time, image)
    return detector.cuts


def video_shot_cuts(video, **kwargs) -> List[ShotCut]:
    """:func:`detect_shot_cuts` on every frame of ``video`` (64x64 thumbnails)."""
    from xmodal_diar.faces.video import iter_frames

    return detect_shot_cuts(iter_frames(video, None, size=(64, 64)), **kwargs)
