"""Montages of real talking-head clips with a known truth: test and benchmark videos.

A montage is a sequence of :class:`Shot` s. A shot shows one or more clips side by side
(``panels``, left to right); one panel speaks: its clip plays (video and audio), the
others stay still on their current frame (listeners). Each clip keeps its own play
position across shots, so a two-face montage whose speaker changes has no cut, and a
sequence of different clips has a hard cut at each new shot. The result is an mp4 (H.264
25 fps, AAC 16 kHz mono, written with PyAV) and its truth: the reference speaker turns
(the speaking clip's identity over each shot), the frames of the hard cuts, and the
identity shown in each panel.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pyannote.core import Annotation, Segment

__all__ = ["Shot", "Montage", "build_montage", "clip_identities"]

FPS = 25
SAMPLE_RATE = 16000
PathLike = Union[str, Path]


@dataclass(frozen=True)
class Shot:
    """``panels`` (clip paths, left to right); ``speaking`` indexes the panel that talks
    for ``duration`` seconds (None: the rest of its clip)."""

    panels: Tuple[PathLike, ...]
    speaking: int = 0
    duration: Optional[float] = None


@dataclass
class Montage:
    path: Path
    reference: Annotation  #: speaking identity over each shot
    cut_frames: List[int]  #: first frame of each shot that starts with a hard cut
    shot_frames: List[int]  #: first frame of every shot
    panels: List[Tuple[str, ...]] = field(default_factory=list)  #: identities shown, per shot, left to right
    duration: float = 0.0

    @property
    def cut_times(self) -> List[float]:
        return [f / FPS for f in self.cut_frames]


def clip_identities(folder: PathLike) -> Dict[str, str]:
    """``{clip stem: identity}`` from ``folder/identities.csv``."""
    with open(Path(folder) / "identities.csv") as f:
        return {row["clip"]: row["identity"] for row in csv.DictReader(f)}


def _decode(path: Path) -> Tuple[List[np.ndarray], np.ndarray]:
    from xmodal_diar.audio import load_audio
    from xmodal_diar.faces.video import iter_frames

    frames = [rgb for _, _, rgb in iter_frames(path, None)]
    audio = load_audio(path).numpy().reshape(-1)
    return frames, audio


def build_montage(shots: Sequence[Shot], out: PathLike, identities: Optional[Mapping[str, str]] = None) -> Montage:
    """Write the montage of ``shots`` to ``out`` (mp4) and return it with its truth.

    ``identities`` maps clip stems to identities (default: ``identities.csv`` beside the
    first clip). Panels of a shot must have the same height.
    """
    import av

    if not shots:
        raise ValueError(f"{out}: a montage needs at least one shot")
    out = Path(out)
    clips: Dict[Path, Tuple[List[np.ndarray], np.ndarray]] = {}
    position: Dict[Path, int] = {}
    for shot in shots:
        if not 0 <= shot.speaking < len(shot.panels):
            raise ValueError(f"{out}: shot {shot} has no panel {shot.speaking} to speak")
        for clip in shot.panels:
            clip = Path(clip)
            if clip not in clips:
                clips[clip] = _decode(clip)
                position[clip] = 0
    if identities is None:
        identities = clip_identities(Path(shots[0].panels[0]).parent)

    video_frames: List[np.ndarray] = []
    audio_parts: List[np.ndarray] = []
    reference = Annotation(uri=out.stem)
    cut_frames, shot_frames, shown = [], [], []
    previous: Optional[Tuple[Path, ...]] = None
    samples_per_frame = SAMPLE_RATE // FPS
    for shot in shots:
        panels = tuple(Path(p) for p in shot.panels)
        live = panels[shot.speaking]
        frames, audio = clips[live]
        start = position[live]
        count = len(frames) - start if shot.duration is None else int(round(shot.duration * FPS))
        count = min(count, len(frames) - start)
        if count <= 0:
            raise ValueError(f"{out}: clip {live.name} has no frames left for shot {shot}")
        first = len(video_frames)
        shot_frames.append(first)
        if previous is not None and previous != panels:
            cut_frames.append(first)
        previous = panels
        for k in range(count):
            row = []
            for clip in panels:
                clip_frames = clips[clip][0]
                index = start + k if clip == live else min(position[clip], len(clip_frames) - 1)
                row.append(clip_frames[index])
            video_frames.append(np.concatenate(row, axis=1))
        segment_audio = audio[start * samples_per_frame : (start + count) * samples_per_frame]
        audio_parts.append(np.pad(segment_audio, (0, count * samples_per_frame - len(segment_audio))))
        position[live] = start + count
        reference[Segment(first / FPS, (first + count) / FPS)] = identities[live.stem]
        shown.append(tuple(identities[p.stem] for p in panels))

    height = {f.shape[0] for f in video_frames}
    width = {f.shape[1] for f in video_frames}
    if len(height) != 1 or len(width) != 1:
        raise ValueError(f"{out}: shots of different frame sizes {sorted(width)}x{sorted(height)}; use clips of one size")
    audio = np.concatenate(audio_parts).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        vstream = container.add_stream("libx264", rate=FPS)
        vstream.width, vstream.height = width.pop(), height.pop()
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": "18", "preset": "veryfast"}
        astream = container.add_stream("aac", rate=SAMPLE_RATE)
        astream.layout = "mono"
        for frame in video_frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        chunk = 1024
        for start in range(0, len(audio), chunk):
            block = audio[start : start + chunk]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    return Montage(out, reference, cut_frames, shot_frames, shown, len(video_frames) / FPS)
