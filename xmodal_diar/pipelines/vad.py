"""Voice activity detection: frame speech scores, then hysteresis thresholding.

Two scorers give one speech score in [0, 1] per 32 ms frame (512 samples at 16 kHz):

- ``"silero"``: the pretrained silero-vad network, whose weights ship inside its wheel
  (``silero_vad/data/silero_vad.jit``), so it runs offline. Long recordings are cut in
  blocks of ``block_duration`` seconds (each with 2 s of preceding context) that run
  side by side as one batch (the model is stateful; its state restarts at each block),
  so memory stays bounded and hours of audio take seconds. Measured on 300 s of AMI:
  60 s blocks are 9x faster than one stream, with 98 % agreement of the speech regions.
- ``"energy"``: normalised log energy ``clip((e_t - e_10) / (e_95 - e_10), 0, 1)`` with
  ``e_t`` the frame energy in dB and ``e_p`` its p-th percentile over the file; frames
  below ``-60`` dBFS score 0, so digital silence is never speech.

Scores become speech regions with pyannote's :class:`~pyannote.audio.utils.signal.Binarize`
(onset/offset hysteresis, Gelly & Gauvain 2015), whose four thresholds are the tunable
hyper-parameters of :class:`VoiceActivityDetection`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from pyannote.audio.core.pipeline import Pipeline
from pyannote.audio.utils.signal import Binarize
from pyannote.core import SlidingWindow, SlidingWindowFeature, Timeline
from pyannote.pipeline.parameter import Uniform

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  #: silero-vad's frame at 16 kHz (32 ms); the energy scorer uses the same
FRAME_STEP = FRAME_SAMPLES / SAMPLE_RATE
SILENCE_DB = -60.0

VAD_METHODS = ("silero", "energy")
#: Default hyper-parameters of each method.
DEFAULT_PARAMETERS = {
    "silero": {"onset": 0.5, "offset": 0.35, "min_duration_on": 0.25, "min_duration_off": 0.3},
    "energy": {"onset": 0.4, "offset": 0.3, "min_duration_on": 0.25, "min_duration_off": 0.3},
}


def frame_window() -> SlidingWindow:
    """The frames on which speech scores are given."""
    return SlidingWindow(start=0.0, duration=FRAME_STEP, step=FRAME_STEP)


def load_silero() -> torch.nn.Module:
    """silero-vad's TorchScript model, from the weights inside its wheel (offline).

    Importing ``silero_vad`` calls ``torch.set_num_threads(1)``; the caller's thread
    count is restored.
    """
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    finally:
        torch.set_num_threads(threads)
    model = load_silero_vad()
    torch.set_num_threads(threads)
    return model.eval()


def _single_threaded(fn, *args):
    """Run ``fn`` with one intra-op thread (silero's 32 ms steps are tiny: with more
    threads, synchronisation dominates; measured 30x slower with 2 threads on a busy
    2-core CPU), then restore the caller's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def silero_speech_scores(
    model: torch.nn.Module,
    waveform: torch.Tensor,
    block_duration: float = 60.0,
    blocks_per_batch: int = 16,
    context_frames: int = 64,
) -> SlidingWindowFeature:
    """Per-frame speech probability of a mono 16 kHz ``(time,)`` waveform.

    Each block is preceded by ``context_frames`` frames (2 s) of the audio before it,
    whose scores are discarded, so the model's state has warmed up at the block start.
    """
    n_frames = -(-waveform.shape[-1] // FRAME_SAMPLES)
    block = max(1, int(block_duration * SAMPLE_RATE) // FRAME_SAMPLES) * FRAME_SAMPLES
    block = min(block, n_frames * FRAME_SAMPLES)  # a short file is not padded to a whole block
    context = context_frames * FRAME_SAMPLES
    device = next(iter(model.parameters()), torch.empty(0)).device
    scores = np.zeros(n_frames, dtype=np.float32)
    starts = list(range(0, waveform.shape[-1], block))
    for b in range(0, len(starts), blocks_per_batch):
        group = starts[b : b + blocks_per_batch]
        lead = context if len(starts) > 1 else 0
        batch = torch.zeros(len(group), lead + block)
        for i, s in enumerate(group):
            piece = waveform[max(0, s - lead) : s + block]
            offset = lead - min(lead, s)  # the first block has no audio before it
            batch[i, offset : offset + piece.shape[-1]] = piece
        probs = _single_threaded(model.audio_forward, batch.to(device), SAMPLE_RATE).float().cpu().numpy()
        probs = probs[:, lead // FRAME_SAMPLES :]
        for i, s in enumerate(group):
            first = s // FRAME_SAMPLES
            count = min(probs.shape[1], n_frames - first)
            scores[first : first + count] = probs[i, :count]
    return SlidingWindowFeature(scores[:, None], frame_window())


def energy_speech_scores(waveform: torch.Tensor) -> SlidingWindowFeature:
    """Normalised log energy per 32 ms frame (see module docstring)."""
    n_frames = -(-waveform.shape[-1] // FRAME_SAMPLES)
    padded = torch.nn.functional.pad(waveform, (0, n_frames * FRAME_SAMPLES - waveform.shape[-1]))
    power = padded.reshape(n_frames, FRAME_SAMPLES).double().pow(2).mean(dim=1)
    db = (10.0 * torch.log10(power + 1e-12)).numpy()
    floor, peak = np.percentile(db, 10), np.percentile(db, 95)
    if peak - floor < 1e-6:
        scores = np.where(db > SILENCE_DB, 1.0, 0.0)
    else:
        scores = np.clip((db - floor) / (peak - floor), 0.0, 1.0)
    scores[db <= SILENCE_DB] = 0.0
    return SlidingWindowFeature(scores.astype(np.float32)[:, None], frame_window())


class VoiceActivityDetection(Pipeline):
    """Speech regions from frame scores by hysteresis thresholding.

    Parameters
    ----------
    method : {"silero", "energy"}
        Frame scorer (see module docstring).
    block_duration : float
        silero-vad block length in seconds (memory bound for long inputs).

    Hyper-parameters
    ----------------
    onset, offset : speech starts when the score goes above ``onset`` and stops when it
        falls below ``offset``.
    min_duration_on : speech regions shorter than this (s) are removed.
    min_duration_off : non-speech gaps shorter than this (s) are filled.
    """

    def __init__(self, method: str = "silero", block_duration: float = 60.0):
        super().__init__()
        if method not in VAD_METHODS:
            raise ValueError(f"vad={method!r}: expected one of {VAD_METHODS}")
        self.method = method
        self.block_duration = block_duration
        if method == "silero":
            self.silero = load_silero()
        self.onset = Uniform(0.05, 0.95)
        self.offset = Uniform(0.05, 0.95)
        self.min_duration_on = Uniform(0.0, 1.0)
        self.min_duration_off = Uniform(0.0, 1.0)

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS[self.method])

    def speech_scores(self, waveform: torch.Tensor) -> SlidingWindowFeature:
        """One speech score in [0, 1] per 32 ms frame."""
        if self.method == "silero":
            return silero_speech_scores(self.silero, waveform, self.block_duration)
        return energy_speech_scores(waveform)

    def speech_regions(self, scores: SlidingWindowFeature, duration: Optional[float] = None) -> Timeline:
        """Speech regions (a Timeline), cropped to ``[0, duration]``."""
        binarize = Binarize(
            onset=self.onset,
            offset=min(self.offset, self.onset),
            min_duration_on=self.min_duration_on,
            min_duration_off=self.min_duration_off,
        )
        speech = binarize(scores).get_timeline().support()
        if duration is not None:
            from pyannote.core import Segment

            speech = speech.crop(Segment(0.0, duration), mode="intersection")
        return speech
