"""Measure the margins behind :mod:`xmodal_diar.audio`'s checks on the real shared data.

- truncation warning: for every file PyAV decodes (talking-heads mp4/AAC, and an MP3 and
  an AAC/m4a encoding of each ami-debug wav made here), the gap between the container's
  announced duration and the decoded length; the warning fires above
  ``max(0.5 s, 2 %)``, which must sit well above every gap of a complete file and below
  the gap of a truncated one (half of an MP3);
- ``MAX_AMPLITUDE``: the peak |sample| of every shared recording (float scale, <= 1).

Usage: ``python benchmarks/audio_margins.py [--data DIR]`` (prints one line per group).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from xmodal_diar.audio import MAX_AMPLITUDE, _announced_duration, load_audio
from xmodal_diar.shared_data import shared_data_root


def decoded_gap(path: Path) -> tuple[float, float]:
    """``(announced, announced - decoded)`` seconds of the first audio stream of ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        announced = _announced_duration(container, stream)
        first, n = None, 0
        for frame in container.decode(stream):
            if first is None and frame.pts is not None:
                first = float(frame.pts * frame.time_base)
            n += frame.samples
        return announced, announced - ((first or 0.0) + n / stream.rate)


def encode(wav: Path, out: Path, codec: str, fmt: str) -> Path:
    x, sr = sf.read(wav, dtype="float32")
    with av.open(str(out), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = "mono"
        sample_format = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(x[None], format="fltp", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=sr)
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    root = parser.parse_args().data or shared_data_root()
    torch.set_num_threads(1)
    groups: dict[str, list[Path]] = {"talking-heads mp4": sorted((root / "talking-heads").glob("*.mp4"))}
    wavs = sorted((root / "ami-debug").glob("*.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        groups["ami-debug as mp3"] = [encode(w, Path(tmp) / f"{w.stem}.mp3", "libmp3lame", "mp3") for w in wavs]
        groups["ami-debug as m4a"] = [encode(w, Path(tmp) / f"{w.stem}.m4a", "aac", "ipod") for w in wavs]
        half = Path(tmp) / "half.mp3"
        whole = groups["ami-debug as mp3"][0]
        half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        groups["half-truncated mp3"] = [half]
        for name, files in groups.items():
            gaps = [decoded_gap(f) for f in files]
            worst = max(gaps, key=lambda g: abs(g[1]))
            limit = max(0.5, 0.02 * worst[0])
            print(f"{name:>20}: {len(files):3d} files, announced - decoded: max |gap| {abs(worst[1]):.3f} s "
                  f"(of {worst[0]:.2f} s), warning above {limit:.2f} s -> "
                  f"{'warns' if worst[1] > limit else 'silent'}")
    peaks = {}
    for name, pattern in (("ami-debug", "ami-debug/*.wav"), ("librispeech test-other", "librispeech/test-other-10x10/*/*.flac"),
                          ("librispeech train 1utt", "librispeech/train-clean-100-1utt/*.flac"),
                          ("talking-heads", "talking-heads/*.mp4")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peaks[name] = max(float(load_audio(f).abs().max()) for f in sorted(root.glob(pattern)))
    print("peak |sample|: " + ", ".join(f"{k} {v:.3f}" for k, v in peaks.items())
          + f"; MAX_AMPLITUDE {MAX_AMPLITUDE:g} ({MAX_AMPLITUDE / max(peaks.values()):.0f} x the largest)")


if __name__ == "__main__":
    main()
