"""xmodal_diar.audio: real files from the shared data, and broken files made here."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from xmodal_diar.audio import (
    CLIPPED_FRACTION,
    FULL_SCALE,
    AudioError,
    AudioWarning,
    audio_info,
    load_audio,
)


def _first_flac(librispeech_test):
    return sorted(librispeech_test.glob("*/*.flac"))[0]


def test_flac_full_and_crop_agree(librispeech_test):
    path = _first_flac(librispeech_test)
    full = load_audio(path)
    info = audio_info(path)
    assert full.dtype == torch.float32 and full.ndim == 1
    assert info.sample_rate == 16000 and info.channels == 1
    assert full.shape[0] == round(info.duration * 16000)
    crop = load_audio(path, start=1.0, end=1.5)
    assert crop.shape[0] == 8000
    assert torch.equal(crop, full[16000:24000])


def test_crop_end_beyond_file_is_clipped(librispeech_test):
    path = _first_flac(librispeech_test)
    info = audio_info(path)
    tail = load_audio(path, start=info.duration - 0.25, end=info.duration + 10)
    assert abs(tail.shape[0] - 4000) <= 1
    with pytest.raises(AudioError, match="after the end"):
        load_audio(path, start=info.duration + 1)


def test_mp4_audio_stream_matches_duration_and_crops(talking_heads):
    path = sorted(talking_heads.glob("*.mp4"))[0]
    info = audio_info(path)
    full = load_audio(path)
    assert abs(full.shape[0] / 16000 - info.duration) < 0.1
    crop = load_audio(path, start=1.0, end=2.0)
    assert abs(crop.shape[0] - 16000) <= 160
    # the crop is the same signal as the middle of the full decode (AAC frames align)
    ref = full[16000 : 16000 + crop.shape[0]]
    assert torch.corrcoef(torch.stack([crop, ref]))[0, 1] > 0.99


def test_ami_wav_and_pyannote_dict_and_protocol_file(ami_debug):
    path = ami_debug / "dev00.wav"
    wav = load_audio(path)
    as_dict = load_audio({"waveform": wav[None], "sample_rate": 16000}, start=2.0, end=3.0)
    assert torch.equal(as_dict, wav[32000:48000])
    assert torch.equal(load_audio({"uri": "dev00", "audio": str(path)}), wav)


def test_stereo_is_downmixed_and_rate_resampled(tmp_path):
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * math.pi * 440 * t), np.zeros_like(t)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, np.stack([left, right], 1).astype(np.float32), 44100)
    wav = load_audio(path)
    assert wav.shape[0] == 16000
    assert abs(wav.abs().max().item() - 0.5) < 0.02  # mean of the two channels
    # the 440 Hz tone survives resampling
    spectrum = torch.fft.rfft(wav).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1


def test_tensor_input_with_rate(tmp_path):
    x = torch.randn(2, 8000)
    y = load_audio(x, input_sample_rate=8000)
    assert y.shape == (16000,)
    with pytest.raises(AudioError, match=r"\(time, channel\)"):
        load_audio(torch.randn(8000, 2))


@pytest.mark.parametrize("kind", ["missing", "empty_file", "garbage", "truncated", "zero_length", "nan"])
def test_bad_files_raise_clear_errors(tmp_path, librispeech_test, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty_file":
        path.write_bytes(b"")
        expected = "empty file"
    elif kind == "garbage":
        path.write_bytes(b"this is not audio" * 100)
        expected = "unreadable audio"
    elif kind == "truncated":
        sf.write(path, np.random.randn(16000).astype(np.float32) * 0.1, 16000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expected = "truncated|unreadable"
    elif kind == "zero_length":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
        expected = "zero-length"
    elif kind == "nan":
        x = np.random.randn(1600).astype(np.float32)
        x[10] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
        expected = "NaN or infinite"
    else:
        expected = "no such file"
    with pytest.raises(AudioError, match=expected) as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_video_without_audio_stream(tmp_path):
    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(AudioError, match="no audio stream") as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_ami_debug_empty_wav_loads_sample_exact_and_clipping_is_reported(ami_debug):
    """``empty.wav`` is documented as silence; whatever it holds, we load it sample-exact
    and warn exactly when most of it sits at full scale (the copy seen in CI does)."""
    path = ami_debug / "empty.wav"
    expected = sf.read(str(path), dtype="float32")[0]
    clipped = float(np.mean(np.abs(expected) >= FULL_SCALE))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wav = load_audio(path)
    assert torch.equal(wav, torch.from_numpy(expected))
    reported = [w for w in caught if issubclass(w.category, AudioWarning)]
    assert bool(reported) == (clipped > CLIPPED_FRACTION)
    if reported:
        assert str(path) in str(reported[0].message) and f"{100 * clipped:.1f} %" in str(reported[0].message)


def test_clipped_speech_warns_and_clean_speech_does_not(librispeech_test):
    speech = load_audio(_first_flac(librispeech_test))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        load_audio(speech)
    saturated = (speech * 200).clamp(-1.0, 1.0)
    with pytest.warns(AudioWarning, match="at full scale"):
        out = load_audio(saturated)
    assert torch.equal(out, saturated)


def test_agrees_with_pyannote_audio_decoding_when_torchcodec_works():
    """pyannote.audio 4 decodes through torchcodec (system FFmpeg, which scripts/env.sh installs);
    our loader (libsndfile/PyAV) must give the same samples so both ecosystems see one signal."""
    import pyannote.audio
    from pyannote.audio import Audio

    sample = Path(pyannote.audio.__file__).resolve().parent / "sample" / "sample.wav"
    try:
        theirs, sr = Audio(sample_rate=16000, mono="downmix")(str(sample))
    except Exception as exc:  # torchcodec raises NameError/RuntimeError without FFmpeg
        pytest.skip(f"pyannote's torchcodec decoding is unavailable here (no FFmpeg libraries?): {exc}")
    ours = load_audio(sample)
    assert sr == 16000 and theirs.shape == (1, ours.shape[0])
    assert float((theirs[0] - ours).abs().max()) < 1e-4


# ------------------------------------------------------------------ reliability (issue 12, points 4 and 10)


def _mp3_from(waveform: np.ndarray, sr: int, path: Path) -> Path:
    """Encode real audio as MP3 with PyAV's own FFmpeg (LAME), Xing header included."""
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(waveform[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_wav_written_to_a_pipe_loads_whole(ami_debug, tmp_path):
    """ffmpeg/sox writing to a pipe cannot seek back: RIFF and data sizes stay 0xFFFFFFFF."""
    source = ami_debug / "dev00.wav"
    data, sr = sf.read(source, dtype="int16")
    path = tmp_path / "piped.wav"
    sf.write(path, data, sr, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[4:8] = raw[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    loaded = load_audio(path)
    assert loaded.shape[0] == len(data) == sf.info(path).frames
    assert torch.allclose(loaded, torch.from_numpy(data / 32768.0).float(), atol=1e-6)


def test_half_truncated_mp3_warns(ami_debug, tmp_path):
    x, sr = sf.read(ami_debug / "dev00.wav", dtype="float32")
    whole = _mp3_from(x, sr, tmp_path / "whole.mp3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(load_audio(whole).shape[0] / 16000 - 30.0) < 0.1
    half = tmp_path / "half.mp3"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.warns(AudioWarning, match=r"half\.mp3: decoded 1\d\.\d\d s of audio, the container announces 30"):
        load_audio(half)


def test_random_bytes_named_mp3_name_the_file(tmp_path):
    path = tmp_path / "noise.mp3"
    for seed in range(8):  # several of these open in FFmpeg with a 0-channel stream
        path.write_bytes(np.random.default_rng(seed).bytes(100_000))
        with pytest.raises(AudioError) as info:
            load_audio(path)
        assert str(path) in str(info.value)


def test_huge_finite_samples_are_refused_with_the_cause(librispeech_test, tmp_path):
    x, sr = sf.read(_first_flac(librispeech_test), dtype="float32")
    path = tmp_path / "huge.wav"
    sf.write(path, x * 1e30, sr, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"huge\.wav: samples up to .*not audio at any known scale"):
        load_audio(path)
    int_scaled = tmp_path / "int_scaled.wav"  # integer PCM stored as float: loads (with the clipping warning)
    sf.write(int_scaled, x * 32767, sr, subtype="FLOAT")
    with pytest.warns(AudioWarning):
        assert torch.isfinite(load_audio(int_scaled)).all()
