"""CAM++ speaker embedding (Wang et al., Interspeech 2023, arXiv:2303.00332).

Front-end: 80-bin Kaldi fbank (``torchaudio.compliance.kaldi.fbank``, 25 ms / 10 ms,
no dither) with per-utterance mean normalisation. Network:

- FCM, a 2-D ResNet over (frequency, time): conv3x3(1->32) + 2 stages of 2 basic blocks,
  each stage halving the frequency axis, + conv3x3 with frequency stride 2; the
  (32 channels x 10 bins) map is flattened into 320 channels per frame.
- D-TDNN: a TDNN (k=5, time stride 2, 128 ch), then 3 dense blocks of 12/24/16
  layers (growth 32, bottleneck 128, k=3, dilation 1/2/2) each followed by a transit
  layer halving the channels. Every dense layer ends in context-aware masking (CAM)::

      y = conv_k(x) * sigmoid(W2 relu(W1 (mean_t(x) + segavg_100(x))))

  where ``segavg_100`` averages 100-frame segments and broadcasts each back over its frames.
- BN-ReLU, statistics pooling (mean and unbiased std over time), and a 1x1 dense layer
  with a non-affine batch norm: the 192-D embedding.

The module and parameter names follow the released 3D-Speaker state dicts, so
:data:`WEIGHTS_NAME` (``speech_campplus_sv_zh_en_16k-common_advanced``) loads as it is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.compliance import kaldi

from xmodal_diar.models.base import EmbeddingModel, TurnEncoder
from xmodal_diar.models.pretrained import freeze_in_state_dict, load_pretrained

#: Registry name (:mod:`xmodal_diar.weights`) of the released zh/en common-advanced model.
WEIGHTS_NAME = "campplus"


class KaldiFbank(nn.Module):
    """``(B, T)`` waveforms at 16 kHz -> ``(B, L, n_mels)`` Kaldi log mel filterbanks.

    Each row goes through ``torchaudio.compliance.kaldi.fbank`` (waveform in [-1, 1],
    ``dither=0``); rows shorter than one 25 ms window are zero-padded to one window.
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000):
        super().__init__()
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.window = int(0.025 * sample_rate)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        if wavs.shape[-1] < self.window:
            wavs = F.pad(wavs, (0, self.window - wavs.shape[-1]))
        return torch.stack(
            [kaldi.fbank(w[None], num_mel_bins=self.n_mels, sample_frequency=self.sample_rate, dither=0.0) for w in wavs]
        )


def bn_relu(channels: int, affine: bool = True, relu: bool = True) -> nn.Sequential:
    """``batchnorm`` (+ ``relu``) as a named sequence (the released key names)."""
    layers = nn.Sequential()
    layers.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    if relu:
        layers.add_module("relu", nn.ReLU(inplace=True))
    return layers


class ResBlock2d(nn.Module):
    """Basic 2-D residual block; ``stride`` applies to the frequency axis only."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu_(self.bn1(self.conv1(x)))))
        return F.relu_(y.add_(self.shortcut(x)))


class FCM(nn.Module):
    """Front-end convolution module: ``(B, F, L)`` -> ``(B, channels * F / 8, L)``."""

    def __init__(self, n_mels: int = 80, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels))
        self.layer2 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (n_mels // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x[:, None])))
        x = F.relu_(self.bn2(self.conv2(self.layer2(self.layer1(x)))))
        return x.flatten(1, 2)


class TDNN(nn.Module):
    """1-D convolution (same padding) + BN-ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_ch, out_ch, kernel_size, stride, padding, dilation, bias=False)
        self.nonlinear = bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class ContextAwareMasking(nn.Module):
    """CAM: a local convolution scaled by a mask predicted from utterance + segment context."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, segment: int = 100, reduction: int = 2):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(in_ch, in_ch // reduction, 1)
        self.linear2 = nn.Conv1d(in_ch // reduction, out_ch, 1)
        self.segment = segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the context is constant over each segment: its mask is computed once per segment
        seg = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
        mask = torch.sigmoid(self.linear2(F.relu_(self.linear1(x.mean(-1, keepdim=True) + seg))))
        return self.linear_local(x).mul_(mask.repeat_interleave(self.segment, dim=-1)[..., : x.shape[-1]])


class DenseTDNNLayer(nn.Module):
    """BN-ReLU, 1x1 bottleneck, BN-ReLU, CAM; its output is concatenated to its input."""

    def __init__(self, in_ch: int, growth: int, bottleneck: int, kernel_size: int, dilation: int):
        super().__init__()
        self.nonlinear1 = bn_relu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bottleneck, 1, bias=False)
        self.nonlinear2 = bn_relu(bottleneck)
        self.cam_layer = ContextAwareMasking(bottleneck, growth, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))], dim=1)


class Transit(nn.Module):
    """BN-ReLU + 1x1 convolution (channel reduction between dense blocks)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.nonlinear = bn_relu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPooling(nn.Module):
    """Mean and unbiased standard deviation over time, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1)], dim=-1)


class EmbeddingLayer(nn.Module):
    """1x1 projection of the pooled statistics + non-affine batch norm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = bn_relu(out_ch, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x[..., None])[..., 0])


class CAMPPlus(nn.Module):
    """CAM++ network: ``(B, L, n_mels)`` mean-normalised fbank -> ``(B, dimension)`` (not normalised).

    ``L`` must be at least 2 frames (statistics pooling after the stride-2 TDNN).
    """

    def __init__(
        self,
        n_mels: int = 80,
        dimension: int = 192,
        growth: int = 32,
        bottleneck: int = 128,
        init_channels: int = 128,
        blocks: Sequence[Sequence[int]] = ((12, 3, 1), (24, 3, 2), (16, 3, 2)),
    ):
        super().__init__()
        self.head = FCM(n_mels)
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TDNN(self.head.out_channels, init_channels, 5, stride=2))
        channels = init_channels
        for b, (n_layers, kernel_size, dilation) in enumerate(blocks, start=1):
            block = nn.Sequential()
            for i in range(n_layers):
                block.add_module(
                    f"tdnnd{i + 1}", DenseTDNNLayer(channels + i * growth, growth, bottleneck, kernel_size, dilation)
                )
            self.xvector.add_module(f"block{b}", block)
            channels += n_layers * growth
            self.xvector.add_module(f"transit{b}", Transit(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", bn_relu(channels))
        self.xvector.add_module("stats", StatsPooling())
        self.xvector.add_module("dense", EmbeddingLayer(2 * channels, dimension))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(feats.transpose(1, 2)))


class CAMPPlusEmbedding(EmbeddingModel):
    """:class:`CAMPPlus` with repeat padding and L2 norm, optionally the released weights.

    ``pretrained``: a :mod:`xmodal_diar.weights` name (default ``campplus``) loaded at
    construction, or ``None`` (random init). ``frozen``: the network's weights are not
    trained and are left out of ``state_dict()`` (a checkpoint names them instead; they
    are reloaded from the model cache). Rows with different valid lengths are embedded
    one by one (statistics and CAM context never see padding).
    """

    def __init__(
        self,
        n_mels: int = 80,
        dimension: int = 192,
        pretrained: Optional[str] = WEIGHTS_NAME,
        frozen: bool = True,
        min_frames: int = 50,
    ):
        super().__init__(dimension, min_frames)
        self.campplus = CAMPPlus(n_mels=n_mels, dimension=dimension)
        if pretrained is not None:
            load_pretrained(self.campplus, pretrained)
        if frozen:
            freeze_in_state_dict(self, "campplus")

    def backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = (lengths * feats.shape[1]).round().long().clamp(2, feats.shape[1])
        if bool((valid == feats.shape[1]).all()):
            return self.campplus(feats)
        return torch.cat([self.campplus(feats[i : i + 1, : int(n)]) for i, n in enumerate(valid)])


class CAMPPlusTurnEncoder(TurnEncoder):
    """CAM++ on Kaldi fbank with sentence mean normalisation (the 3D-Speaker front-end)."""

    rowwise_padding = True

    def __init__(
        self,
        n_mels: int = 80,
        dimension: int = 192,
        pretrained: Optional[str] = WEIGHTS_NAME,
        frozen: bool = True,
        min_frames: int = 50,
    ):
        embedding_config = dict(n_mels=n_mels, dimension=dimension, pretrained=pretrained, frozen=frozen,
                                min_frames=min_frames)
        super().__init__("kaldi_fbank", {"n_mels": n_mels}, CAMPPlusEmbedding(**embedding_config))
        self.embedding_config = embedding_config
        self.config = dict(embedding_config)
