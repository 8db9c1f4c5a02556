"""Audio input: whatever a user passes, as a mono 16 kHz float32 tensor.

Accepted sources
----------------
- a path to an audio or video file. ``wav``/``flac``/``ogg`` are read with libsndfile
  (seekable: cropping reads only the requested frames); anything else (``mp3``, ``mp4``,
  ``mkv``, ``m4a``, ...) is decoded with PyAV, whose wheels carry their own FFmpeg, and
  seeks to the nearest key frame before the crop instead of decoding the whole file;
- a pyannote dict: ``{"waveform": (channel, time) tensor, "sample_rate": int}`` or a
  pyannote.database ``ProtocolFile``-like mapping with an ``"audio"`` path;
- a ``torch.Tensor`` / ``numpy.ndarray`` of shape ``(time,)`` or ``(channel, time)`` with
  ``input_sample_rate`` (default 16 kHz).

Stereo is down-mixed (channel mean), other rates are resampled with
:func:`torchaudio.functional.resample`. Every failure raises :class:`AudioError` naming
the source and the problem: missing, unreadable or truncated file, no audio stream,
zero-length audio, NaN or infinite samples, samples beyond :data:`MAX_AMPLITUDE` (not audio
at any known scale). A WAV written to a pipe (sizes 0xFFFFFFFF) reads to the end of the
file, as libsndfile and sox read it; a decoded stream shorter than its container announces
(half-truncated MP3) loads with an :class:`AudioWarning`. Audio that decodes but is mostly at full
scale (clipped, or not audio at all) loads as it is, with an :class:`AudioWarning`, since
anything computed on it is unreliable.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000
#: Extensions read through libsndfile (exact, seekable); everything else goes through PyAV.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".sph"}

#: RIFF/data chunk size written by streaming writers (ffmpeg, sox to a pipe).
STREAMED_SIZE = 0xFFFFFFFF
#: Largest accepted |sample|. Float audio is nominally within ±1 and integer PCM stored as
#: float within ±32768; larger samples are not audio at any known scale (corrupt float
#: data) and overflow float32 once squared in the features (NaN embeddings downstream).
MAX_AMPLITUDE = 65536.0

AudioSource = Union[str, Path, Mapping, torch.Tensor, np.ndarray]


class AudioError(ValueError):
    """An audio input that cannot be turned into a usable waveform."""


class AudioWarning(UserWarning):
    """An audio input that loads but whose content is suspect (e.g. heavily clipped)."""


#: Fraction of samples at full scale (|x| >= :data:`FULL_SCALE`) above which a source is
#: reported as clipped. Real speech, even loud, stays well below 1 %.
CLIPPED_FRACTION = 0.01
FULL_SCALE = 1.0 - 1.0 / 32768
#: samples per block of :func:`_finalise`'s checks
CHECK_BLOCK = 1 << 22


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: int
    channels: int


def describe(source: AudioSource) -> str:
    """A short human name for ``source`` to put in messages."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, Mapping):
        if "audio" in source:
            return str(source["audio"])
        return f"waveform dict (uri={source.get('uri', '?')})"
    return f"{type(source).__name__} of shape {tuple(getattr(source, 'shape', ()))}"


def _check_path(path: Path) -> Path:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio or video file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return path


def audio_info(source: AudioSource) -> AudioInfo:
    """Duration, native sample rate and channel count, without decoding the samples."""
    if isinstance(source, Mapping) and "audio" in source and "waveform" not in source:
        source = source["audio"]
    if isinstance(source, (str, Path)):
        path = _check_path(Path(source))
        if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
            import soundfile as sf

            try:
                info = sf.info(str(path))
            except Exception as exc:  # libsndfile's own message says what is wrong
                raise AudioError(f"{path}: unreadable audio ({exc})") from exc
            return AudioInfo(info.frames / info.samplerate, int(info.samplerate), int(info.channels))
        return _av_info(path)
    waveform, sr = _array_input(source, None)
    return AudioInfo(waveform.shape[-1] / sr, sr, waveform.shape[0])


def load_audio(
    source: AudioSource,
    *,
    start: Optional[float] = None,
    end: Optional[float] = None,
    sample_rate: int = SAMPLE_RATE,
    input_sample_rate: Optional[int] = None,
) -> torch.Tensor:
    """Load ``source`` (optionally cropped to ``[start, end]`` seconds) as mono float32 ``(time,)``.

    ``end`` beyond the end of the recording is clipped to it; a crop that starts at or
    after the end, or that is empty, raises :class:`AudioError`.
    """
    name = describe(source)
    if start is not None and start < 0:
        raise AudioError(f"{name}: negative crop start {start}")
    if start is not None and end is not None and end <= start:
        raise AudioError(f"{name}: empty crop [{start}, {end}] s")
    if isinstance(source, Mapping) and "audio" in source and "waveform" not in source:
        source = source["audio"]
    if isinstance(source, (str, Path)):
        path = _check_path(Path(source))
        if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
            waveform, sr = _read_soundfile(path, start, end)
        else:
            waveform, sr = _read_av(path, start, end)
        crop_done = True
    else:
        waveform, sr = _array_input(source, input_sample_rate)
        crop_done = False
    if not crop_done and (start is not None or end is not None):
        s = int(round((start or 0.0) * sr))
        e = waveform.shape[-1] if end is None else min(int(round(end * sr)), waveform.shape[-1])
        if s >= waveform.shape[-1]:
            raise AudioError(
                f"{name}: crop starts at {start} s, after the end ({waveform.shape[-1] / sr:.3f} s)"
            )
        waveform = waveform[:, s:e]
    return _finalise(waveform, sr, sample_rate, name)


def _finalise(waveform: torch.Tensor, sr: int, sample_rate: int, name: str) -> torch.Tensor:
    if waveform.numel() == 0 or waveform.shape[-1] == 0:
        raise AudioError(f"{name}: zero-length audio")
    # checked block by block: no whole-length temporaries (3 h of float32 is 0.69 GB)
    bad, peak, clipped = 0, 0.0, 0
    for s in range(0, waveform.shape[-1], CHECK_BLOCK):
        block = waveform[..., s : s + CHECK_BLOCK]
        bad += int((~torch.isfinite(block)).sum())
        if not bad:
            magnitude = block.abs()
            peak = max(peak, float(magnitude.max()))
            clipped += int((magnitude >= FULL_SCALE).sum())
    if bad:
        raise AudioError(f"{name}: {bad} NaN or infinite samples")
    if peak > MAX_AMPLITUDE:
        raise AudioError(
            f"{name}: samples up to {peak:.3g} in absolute value, beyond {MAX_AMPLITUDE:g}: not audio at any "
            "known scale (float audio is within ±1, integer PCM within ±32768); corrupt float data?"
        )
    clipped = clipped / waveform.numel()
    if clipped > CLIPPED_FRACTION:
        warnings.warn(
            f"{name}: {100 * clipped:.1f} % of samples are at full scale (clipped audio, or "
            "not audio at all); results computed on it are unreliable",
            AudioWarning,
            stacklevel=3,
        )
    # mono already: no copy (a float32 mono input comes back as a view of it; nothing here writes to it)
    mono = waveform[0].float() if waveform.shape[0] == 1 else waveform.float().mean(dim=0)
    if sr != sample_rate:
        mono = AF.resample(mono, sr, sample_rate)
    return mono.contiguous()


def _array_input(source, input_sample_rate: Optional[int]) -> tuple[torch.Tensor, int]:
    name = describe(source)
    if isinstance(source, Mapping):
        if "waveform" not in source:
            raise AudioError(f"{name}: a dict input needs 'waveform' and 'sample_rate' (or 'audio')")
        data = source["waveform"]
        sr = source.get("sample_rate")
        if sr is None:
            raise AudioError(f"{name}: waveform dict without 'sample_rate'")
    else:
        data, sr = source, input_sample_rate or SAMPLE_RATE
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise AudioError(f"{name}: unsupported audio input type {type(data).__name__}")
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(f"{name}: expected (time,) or (channel, time), got shape {tuple(data.shape)}")
    if data.shape[0] > 16 and data.shape[1] <= 16:
        raise AudioError(
            f"{name}: shape {tuple(data.shape)} looks like (time, channel); pass (channel, time)"
        )
    return data.float(), int(sr)


def _read_soundfile(path: Path, start, end) -> tuple[torch.Tensor, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr, total = f.samplerate, f.frames
            s = int(round((start or 0.0) * sr))
            e = total if end is None else min(int(round(end * sr)), total)
            if total == 0:
                raise AudioError(f"{path}: zero-length audio")
            # libsndfile silently shortens a WAV whose data chunk runs past the end of the
            # file; its log says "data : N (should be M)".
            # A WAV written to a pipe announces 0xFFFFFFFF (size unknown when the header was
            # written): its data runs to the end of the file, as libsndfile and sox read it.
            short = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", f.extra_info, re.M)
            if short and int(short.group(1)) != STREAMED_SIZE:
                raise AudioError(
                    f"{path}: truncated file: header announces {short.group(1)} bytes of audio, "
                    f"only {short.group(2)} are there"
                )
            if s >= total:
                raise AudioError(f"{path}: crop starts at {start} s, after the end ({total / sr:.3f} s)")
            f.seek(s)
            data = f.read(e - s, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({exc})") from exc
    if data.shape[0] < e - s:
        raise AudioError(
            f"{path}: truncated file: header announces {total / sr:.3f} s, "
            f"only {(s + data.shape[0]) / sr:.3f} s could be read"
        )
    return torch.from_numpy(data.T.copy()), sr


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio or video file ({exc})") from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path}: no audio stream in this file")
    stream = container.streams.audio[0]
    if not stream.channels or not stream.rate:
        container.close()
        raise AudioError(
            f"{path}: not a valid audio file (its audio stream has {stream.channels} channels at "
            f"{stream.rate} Hz; random or corrupt bytes?)"
        )
    return container


def _announced_duration(container, stream) -> Optional[float]:
    """Duration (s) of the audio stream in the container's headers, None when absent."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _av_info(path: Path) -> AudioInfo:
    container = _open_av(path)
    with container:
        stream = container.streams.audio[0]
        duration = _announced_duration(container, stream)
        if duration is None:  # no duration in the headers: decode to count
            duration = sum(frame.samples for frame in container.decode(stream)) / stream.rate
        return AudioInfo(duration, int(stream.rate), int(stream.channels))


def _read_av(path: Path, start, end) -> tuple[torch.Tensor, int]:
    import av

    container = _open_av(path)
    chunks: list[np.ndarray] = []
    first_time: Optional[float] = None
    with container:
        stream = container.streams.audio[0]
        sr = int(stream.rate)
        # Planar float keeps the native layout and rate: timestamps stay exact.
        try:
            converter = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sr)
        except (ValueError, av.error.FFmpegError) as exc:
            raise AudioError(f"{path}: unsupported or corrupt audio stream ({exc})") from exc
        if start:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else None
                if end is not None and t is not None and t >= end:
                    break
                for out in converter.resample(frame):
                    if first_time is None:
                        first_time = t if t is not None else 0.0
                    chunks.append(out.to_ndarray())
            for out in converter.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise AudioError(f"{path}: corrupt or truncated audio stream ({exc})") from exc
        announced = _announced_duration(container, stream)
    if not chunks:
        raise AudioError(f"{path}: zero-length audio (no decodable audio frame)")
    data = np.concatenate(chunks, axis=1)
    decoded_end = (first_time or 0.0) + data.shape[1] / sr
    wanted_end = announced if end is None or announced is None else min(end, announced)
    if wanted_end is not None and decoded_end < wanted_end - max(0.5, 0.02 * wanted_end):
        warnings.warn(
            f"{path}: decoded {decoded_end:.2f} s of audio, the container announces {announced:.2f} s "
            "(truncated file?); the rest is missing",
            AudioWarning,
            stacklevel=3,
        )
    offset = int(round(((start or 0.0) - (first_time or 0.0)) * sr))
    offset = max(offset, 0)
    stop = data.shape[1] if end is None else min(data.shape[1], offset + int(round((end - (start or 0.0)) * sr)))
    if offset >= data.shape[1]:
        raise AudioError(f"{path}: crop starts at {start} s, after the end of the audio")
    return torch.from_numpy(np.ascontiguousarray(data[:, offset:stop], dtype=np.float32)), sr
