"""Speaker-change detection inside speech regions: a score curve, then peak picking.

Inside each speech region, boundaries ``b`` lie on a grid of ``step`` seconds, at least
``window`` seconds away from the region's edges, and get a change score comparing the
``window`` seconds before ``b`` with the ``window`` seconds after it:

- ``"embedding"`` (default): ``s(b) = 1 - cos(e([b - w, b]), e([b, b + w]))``, the cosine
  distance between the turn encoder's embeddings of the two adjacent windows (as in
  embedding-based change detection of broadcast diarization, e.g. Bredin 2017).
  Every window of the grid is embedded once, in batches, block by block
  (``block_windows`` windows at a time): only the scores are kept, so memory does not
  grow with the recording.
- ``"bic"``: the classical Bayesian information criterion on MFCCs (Chen & Gopalakrishnan
  1998). With ``N = N1 + N2`` frames and full-covariance Gaussians,
  ``R(b) = N/2 log|S| - N1/2 log|S1| - N2/2 log|S2|`` and
  ``P = 1/2 (d + d(d+1)/2) log N``; the score is ``s(b) = R(b) / P`` so that
  ``ΔBIC = P (s(b) - λ) > 0`` exactly when ``s(b) > λ``: the threshold *is* the penalty
  weight ``λ``.

Changes are the peaks of ``s`` (``scipy.signal.find_peaks``) higher than ``threshold``
and at least ``min_duration`` seconds apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from pyannote.core import Segment, Timeline
from pyannote.pipeline import Pipeline
from pyannote.pipeline.parameter import Uniform
from scipy.signal import find_peaks

SAMPLE_RATE = 16000
CHANGE_METHODS = ("embedding", "bic")
#: Default hyper-parameters of each method.
DEFAULT_PARAMETERS = {
    "embedding": {"threshold": 0.5, "min_duration": 1.0},
    "bic": {"threshold": 1.0, "min_duration": 1.0},
}

#: ``embed(windows (B, T)) -> (B, D)`` unit-norm numpy embeddings.
WindowEmbedder = Callable[[torch.Tensor], np.ndarray]


@dataclass
class ChangeScores:
    """Change score curve of one speech region: ``values[k]`` at time ``times[k]``."""

    region: Segment
    times: np.ndarray
    values: np.ndarray


def boundary_grid(region: Segment, window: float, step: float) -> np.ndarray:
    """Candidate boundaries of ``region``: ``start + window + k * step`` up to ``end - window``."""
    if region.duration < 2 * window:
        return np.zeros(0)
    count = int(np.floor((region.duration - 2 * window) / step + 1e-9)) + 1
    return region.start + window + step * np.arange(count)


def _crop(waveform: torch.Tensor, start: float, duration: float) -> torch.Tensor:
    s = int(round(start * SAMPLE_RATE))
    n = int(round(duration * SAMPLE_RATE))
    piece = waveform[s : s + n]
    if piece.shape[-1] < n:
        piece = torch.nn.functional.pad(piece, (0, n - piece.shape[-1]))
    return piece


def embedding_change_scores(
    waveform: torch.Tensor,
    region: Segment,
    embed: WindowEmbedder,
    window: float,
    step: float,
    block_windows: int = 256,
) -> ChangeScores:
    """Cosine distance between embeddings of adjacent windows (see module docstring)."""
    times = boundary_grid(region, window, step)
    if len(times) == 0:
        return ChangeScores(region, times, np.zeros(0))
    lag = int(round(window / step))  # window j + lag starts where window j ends
    if abs(lag * step - window) > 1e-6:
        raise ValueError(f"change detection: window ({window}) must be a multiple of step ({step})")
    n_windows = len(times) + lag  # window j starts at region.start + j * step
    values = np.empty(len(times), dtype=np.float32)
    for first in range(0, len(times), block_windows):
        last = min(n_windows, first + block_windows + lag)
        starts = region.start + step * np.arange(first, last)
        batch = torch.stack([_crop(waveform, s, window) for s in starts])
        emb = embed(batch)
        count = min(block_windows, len(times) - first)
        values[first : first + count] = 1.0 - np.sum(emb[:count] * emb[lag : lag + count], axis=1)
    return ChangeScores(region, times, values)


def _mfcc(waveform: torch.Tensor) -> np.ndarray:
    import torchaudio

    transform = torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE, n_mfcc=13, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40}
    )
    return transform(waveform).T.double().numpy()  # (frames, 13) at 100 frames/s


def bic_change_scores(
    waveform: torch.Tensor, region: Segment, window: float, step: float, block_duration: float = 120.0
) -> ChangeScores:
    """Normalised ΔBIC on MFCCs between adjacent windows (see module docstring)."""
    times = boundary_grid(region, window, step)
    values = np.empty(len(times), dtype=np.float32)
    rate = SAMPLE_RATE / 160
    w = int(round(window * rate))
    d = 13
    penalty = 0.5 * (d + d * (d + 1) / 2) * np.log(2 * w)
    ridge = 1e-6 * np.eye(d)
    done = 0
    while done < len(times):
        # one block of boundaries with the frames they need, so memory stays bounded
        block = times[done:][times[done:] < times[done] + block_duration]
        start = block[0] - window
        feats = _mfcc(_crop(waveform, start, block[-1] - block[0] + 2 * window + 0.05))
        s1 = np.concatenate([np.zeros((1, d)), np.cumsum(feats, 0)])
        s2 = np.concatenate([np.zeros((1, d, d)), np.cumsum(feats[:, :, None] * feats[:, None, :], 0)])

        def logdet(a: int, b: int) -> float:
            n = b - a
            mean = (s1[b] - s1[a]) / n
            cov = (s2[b] - s2[a]) / n - np.outer(mean, mean) + ridge
            return np.linalg.slogdet(cov)[1]

        for k, t in enumerate(block):
            c = int(round((t - start) * rate))
            a, b = max(0, c - w), min(len(feats), c + w)
            r = 0.5 * ((b - a) * logdet(a, b) - (c - a) * logdet(a, c) - (b - c) * logdet(c, b))
            values[done + k] = r / penalty
        done += len(block)
    return ChangeScores(region, times, values)


class SpeakerChangeDetection(Pipeline):
    """Cut speech regions into speaker turns at the peaks of a change score.

    Parameters
    ----------
    method : {"embedding", "bic"}
    window : float
        Length (s) of each of the two compared windows.
    step : float
        Spacing (s) of candidate boundaries; ``window`` must be a multiple of it.

    Hyper-parameters
    ----------------
    threshold : minimum peak height (a cosine distance in [0, 2] for "embedding",
        the BIC penalty weight λ for "bic").
    min_duration : minimum distance (s) between two changes.
    """

    def __init__(self, method: str = "embedding", window: float = 1.5, step: float = 0.25):
        super().__init__()
        if method not in CHANGE_METHODS:
            raise ValueError(f"change_detection={method!r}: expected one of {CHANGE_METHODS}")
        if window <= 0 or step <= 0 or abs(round(window / step) * step - window) > 1e-6:
            raise ValueError(f"change detection: window ({window}) must be a positive multiple of step ({step})")
        self.method = method
        self.window = window
        self.step = step
        self.threshold = Uniform(0.0, 2.0) if method == "embedding" else Uniform(0.0, 5.0)
        self.min_duration = Uniform(0.25, 5.0)

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS[self.method])

    def scores(
        self, waveform: torch.Tensor, speech: Timeline, embed: Optional[WindowEmbedder] = None
    ) -> Iterator[ChangeScores]:
        """Change scores of every speech region, one region at a time."""
        for region in speech:
            if self.method == "bic":
                yield bic_change_scores(waveform, region, self.window, self.step)
            else:
                if embed is None:
                    raise ValueError("embedding change detection needs an embedding function")
                yield embedding_change_scores(waveform, region, embed, self.window, self.step)

    def changes(self, scores: ChangeScores) -> np.ndarray:
        """Times of the detected changes in one region."""
        if len(scores.values) == 0:
            return np.zeros(0)
        distance = max(1, int(round(self.min_duration / self.step)))
        # pad with a lower value so a maximum on the first or last candidate is a peak too
        low = float(np.min(scores.values)) - 1.0
        padded = np.concatenate([[low], scores.values, [low]])
        peaks, _ = find_peaks(padded, height=self.threshold, distance=distance)
        return scores.times[peaks - 1]

    def turns(self, scores: ChangeScores) -> List[Segment]:
        """The region cut at its changes."""
        cuts = [scores.region.start, *self.changes(scores).tolist(), scores.region.end]
        return [Segment(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
