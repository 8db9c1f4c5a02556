"""Speech quality: a blind SNR estimate, for VGSR's quality-based adaptive weights.

VGSR (Jin et al., AAAI 2023) weights each sample's distillation loss by its data
quality; on the speech side that quality is the signal-to-noise ratio.

The estimate is the classical frame-energy percentile method (no reference, no
voice activity detector): frame the waveform (25 ms frames, 10 ms hop), take the
mean power ``E_f`` of every frame, and read

    P_noise  = percentile_p(E_f)          (quietest frames: noise only; p = 10 %)
    P_speech = mean_f(E_f) - P_noise      (speech power over the whole signal)
    SNR      = 10 log10(P_speech / P_noise)   [dB]

so it estimates the global SNR ``10 log10(mean s^2 / sigma^2)`` for stationary
noise. Measured on LibriSpeech test-other with added white noise (see
tests/test_losses_vgsr.py): within 1.2 dB of the true SNR (the recording's own
noise included) from -5 to 30 dB; white noise alone reads about -10 dB. It
needs pauses: when fewer than ``p`` % of the frames are noise only, the noise
floor is over-estimated and the SNR under-estimated. Powers are floored at
-100 dB, so digital silence gives 0 dB and noise-free speech with digital-zero
pauses about 80 dB, never inf or NaN.
"""

from __future__ import annotations

import torch

_EPS_POWER = 1e-10  # -100 dB re full scale: the floor of any frame power


def _check_waveform(waveform: torch.Tensor, frame: int) -> torch.Tensor:
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform: expected a torch.Tensor, got {type(waveform).__name__}")
    if waveform.ndim not in (1, 2):
        raise ValueError(f"waveform: expected shape (time,) or (batch, time), got {tuple(waveform.shape)}")
    if waveform.shape[-1] < frame:
        raise ValueError(
            f"waveform: {waveform.shape[-1]} samples is shorter than one analysis frame ({frame} samples)"
        )
    if not torch.isfinite(waveform).all():
        raise ValueError("waveform: contains NaN or infinite samples")
    return waveform.to(torch.float64)


def estimate_snr(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    frame_duration: float = 0.025,
    hop_duration: float = 0.010,
    noise_percentile: float = 10.0,
) -> torch.Tensor:
    """Blind SNR estimate in dB by the frame-energy percentile method (see module docstring).

    Parameters
    ----------
    waveform : (time,) or (batch, time) tensor
    sample_rate : sampling rate in Hz.
    frame_duration, hop_duration : analysis frame and hop, in seconds.
    noise_percentile : percentile (0-100) of frame power read as the noise floor.

    Returns
    -------
    snr : float32 tensor of shape () for a (time,) input, (batch,) for a batch.
    """
    if not 0.0 <= noise_percentile < 100.0:
        raise ValueError(f"noise_percentile: expected a value in [0, 100), got {noise_percentile}")
    frame = int(round(frame_duration * sample_rate))
    hop = int(round(hop_duration * sample_rate))
    if frame < 1 or hop < 1:
        raise ValueError(f"frame_duration/hop_duration: too short for sample_rate={sample_rate}")
    x = _check_waveform(waveform, frame)
    power = x.unfold(-1, frame, hop).pow(2).mean(-1)  # (..., n_frames)
    noise_floor = torch.quantile(power, noise_percentile / 100.0, dim=-1)
    noise = noise_floor.clamp_min(_EPS_POWER)
    speech = (power.mean(-1) - noise_floor).clamp_min(_EPS_POWER)
    return (10.0 * torch.log10(speech / noise)).to(torch.float32)


def snr_to_quality(snr_db: torch.Tensor, snr_floor: float = 0.0, snr_ceiling: float = 30.0) -> torch.Tensor:
    """Map SNR (dB) linearly to a quality in [0, 1]: 0 at ``snr_floor`` or below, 1 at ``snr_ceiling`` or above."""
    if not snr_ceiling > snr_floor:
        raise ValueError(f"snr_ceiling ({snr_ceiling}) must be greater than snr_floor ({snr_floor})")
    return ((snr_db - snr_floor) / (snr_ceiling - snr_floor)).clamp(0.0, 1.0)


def speech_quality(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    snr_floor: float = 0.0,
    snr_ceiling: float = 30.0,
    **snr_options,
) -> torch.Tensor:
    """Speech quality in [0, 1]: :func:`snr_to_quality` of :func:`estimate_snr`.

    A column of the quality matrix given to
    :class:`xmodal_diar.losses.vgsr.QualityAdaptiveWeights`.
    """
    snr = estimate_snr(waveform, sample_rate=sample_rate, **snr_options)
    return snr_to_quality(snr, snr_floor=snr_floor, snr_ceiling=snr_ceiling)
