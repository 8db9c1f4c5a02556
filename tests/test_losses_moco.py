"""MoCo speaker embedding (Ding et al. 2020): InfoNCE, momentum encoder, queue, crops, SpecAugment."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from hypothesis import given, settings
from hypothesis import strategies as st
from speechbrain.lobes.features import Fbank
from torch import nn

from xmodal_diar.audio import load_audio
from xmodal_diar.losses.moco import MoCo, SpecAugment, TwoCropSampler

few = settings(max_examples=25, deadline=None)


class MeanLinearEncoder(nn.Module):
    """(B, L, F) features [+ relative lengths] -> L2-normalised (B, D): a linear map, masked time mean."""

    def __init__(self, n_features: int = 6, dim: int = 4):
        super().__init__()
        self.linear = nn.Linear(n_features, dim)
        self.seen_lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        self.seen_lengths = lengths
        h = self.linear(x)
        if lengths is None:
            return F.normalize(h.mean(1), dim=-1)
        mask = (torch.arange(x.shape[1])[None] < (lengths * x.shape[1]).round()[:, None]).float()
        return F.normalize((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)


# --------------------------------------------------------------------------- InfoNCE


def test_infonce_hand_computed():
    moco = MoCo(nn.Identity(), dim=2, queue_size=2, temperature=0.5)
    moco.queue.copy_(torch.tensor([[0.0, -1.0], [1.0, 0.0]]))  # negatives (0, 1) and (-1, 0)
    x = torch.tensor([[3.0, 0.0]])  # normalised to (1, 0)
    loss, logits = moco(x, x)
    assert torch.allclose(logits, torch.tensor([[2.0, 0.0, -2.0]]))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the key was enqueued at the pointer (training mode)
    assert torch.allclose(moco.queue[:, 0], torch.tensor([1.0, 0.0])) and moco.queue_pointer.item() == 1


def test_infonce_step_increases_query_positive_similarity():
    torch.manual_seed(0)
    moco = MoCo(MeanLinearEncoder(), dim=4, queue_size=16, momentum=0.99, temperature=0.1)
    x_q, x_k = torch.randn(5, 7, 6), torch.randn(5, 7, 6)
    optimizer = torch.optim.SGD(moco.parameters(), lr=0.05)
    loss, logits = moco(x_q, x_k)
    loss.backward()
    optimizer.step()
    moco.eval()  # no momentum update, no enqueue: the same keys as above
    queue_before = moco.queue.clone()
    _, logits_after = moco(x_q, x_k)
    assert logits_after[:, 0].mean() > logits[:, 0].mean()  # q . k+ grew
    assert torch.equal(moco.queue, queue_before)
    assert all(p.grad is None for p in moco.key_encoder.parameters())


# --------------------------------------------------------------------------- momentum update


def test_momentum_update_is_exact():
    moco = MoCo(nn.Linear(2, 2), dim=2, queue_size=3, momentum=0.75)
    with torch.no_grad():
        moco.encoder.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        moco.encoder.bias.copy_(torch.tensor([4.0, -4.0]))
        moco.key_encoder.weight.zero_()
        moco.key_encoder.bias.fill_(8.0)
    assert not any(p.requires_grad for p in moco.key_encoder.parameters())
    moco(torch.randn(2, 2), torch.randn(2, 2))  # training forward: one update
    assert torch.equal(moco.key_encoder.weight, torch.tensor([[0.25, 0.5], [0.75, 1.0]]))
    assert torch.equal(moco.key_encoder.bias, torch.tensor([7.0, 5.0]))
    moco.eval()
    moco(torch.randn(2, 2), torch.randn(2, 2))  # eval: unchanged
    assert torch.equal(moco.key_encoder.bias, torch.tensor([7.0, 5.0]))
    moco.update_key_encoder()
    assert torch.equal(moco.key_encoder.bias, torch.tensor([0.75 * 7.0 + 0.25 * 4.0, 0.75 * 5.0 - 0.25 * 4.0]))


# --------------------------------------------------------------------------- queue


def keys(n: int, dim: int = 2, offset: int = 0) -> torch.Tensor:
    """Distinguishable keys: key i is (offset + i, -(offset + i), ...)."""
    return torch.arange(offset, offset + n, dtype=torch.float32)[:, None] * torch.tensor([1.0, -1.0] * (dim // 2))


def test_queue_fifo_with_wrap_around():
    moco = MoCo(nn.Identity(), dim=2, queue_size=5)
    for step in range(3):
        moco.enqueue(keys(2, offset=2 * step))  # keys 0..5
    # pointer walked 0 -> 2 -> 4 -> 1; key 5 overwrote key 0, the oldest
    assert moco.queue[0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert moco.queue_pointer.item() == 1


def test_queue_smaller_than_batch_keeps_the_newest_keys():
    moco = MoCo(nn.Identity(), dim=2, queue_size=3)
    moco.enqueue(keys(1, offset=100))  # pointer at 1
    moco.enqueue(keys(5))  # keys 0..4 one at a time at 1, 2, 0, 1, 2: only 2, 3, 4 survive
    assert moco.queue[0].tolist() == [2.0, 3.0, 4.0]
    assert moco.queue_pointer.item() == (1 + 5) % 3


@few
@given(
    queue_size=st.integers(1, 9),
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_forward_enqueues_the_last_keys(queue_size, batches, seed):
    torch.manual_seed(seed)
    moco = MoCo(nn.Identity(), dim=3, queue_size=queue_size)
    all_keys = []
    for b in batches:
        x_k = torch.randn(b, 3)
        loss, logits = moco(torch.randn(b, 3), x_k)
        assert torch.isfinite(loss) and logits.shape == (b, 1 + queue_size)
        all_keys.append(F.normalize(x_k, dim=-1))
    all_keys = torch.cat(all_keys)
    total = all_keys.shape[0]
    assert moco.queue_pointer.item() == total % queue_size
    if total >= queue_size:  # the queue holds exactly the last K keys
        newest = all_keys[-queue_size:]
        index = (torch.arange(total - queue_size, total)) % queue_size
        assert torch.allclose(moco.queue[:, index], newest.T, atol=1e-6)


def test_single_sample_batch_is_defined():
    # one sample: its negatives all come from the queue, the loss is finite
    moco = MoCo(nn.Identity(), dim=2, queue_size=1, temperature=1.0)
    moco.queue.copy_(torch.tensor([[0.0], [1.0]]))
    loss, _ = moco(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_lengths_reach_the_encoders_and_bad_inputs_raise():
    moco = MoCo(MeanLinearEncoder(), dim=4, queue_size=4)
    lengths = torch.tensor([1.0, 0.5])
    moco(torch.randn(2, 8, 6), torch.randn(2, 8, 6), lengths, lengths)
    assert torch.equal(moco.encoder.seen_lengths, lengths) and torch.equal(moco.key_encoder.seen_lengths, lengths)
    with pytest.raises(ValueError, match="expected \\(batch, 5\\)"):
        MoCo(MeanLinearEncoder(), dim=5, queue_size=4)(torch.randn(2, 8, 6), torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match="batches differ"):
        moco(torch.randn(2, 8, 6), torch.randn(3, 8, 6))
    with pytest.raises(ValueError, match="queue_size"):
        MoCo(nn.Identity(), dim=2, queue_size=0)
    with pytest.raises(ValueError, match="momentum"):
        MoCo(nn.Identity(), dim=2, momentum=1.5)
    with pytest.raises(ValueError, match="temperature"):
        MoCo(nn.Identity(), dim=2, temperature=0.0)


# --------------------------------------------------------------------------- crops, SpecAugment


def test_two_crops_are_seeded_slices_of_the_utterance():
    waveform = torch.arange(48000, dtype=torch.float32)  # sample value == its index
    a = TwoCropSampler(0.5, 1.0, sample_rate=16000, seed=7)
    b = TwoCropSampler(0.5, 1.0, sample_rate=16000, seed=7)
    crops_a = [c for _ in range(10) for c in a(waveform)]
    crops_b = [c for _ in range(10) for c in b(waveform)]
    assert all(torch.equal(x, y) for x, y in zip(crops_a, crops_b))
    for crop in crops_a:
        assert 8000 <= crop.shape[0] <= 16000
        start = int(crop[0])
        assert torch.equal(crop, waveform[start : start + crop.shape[0]])
    assert len({int(c[0]) for c in crops_a}) > 1  # positions vary
    short = torch.arange(4000, dtype=torch.float32)
    assert all(torch.equal(c, short) for c in a(short))  # shorter than min: whole utterance
    with pytest.raises(ValueError, match="non-empty \\(time,\\)"):
        a(torch.zeros(0))
    with pytest.raises(ValueError, match="min_duration"):
        TwoCropSampler(2.0, 1.0)


def test_crop_batch_is_padded_with_relative_lengths():
    sampler = TwoCropSampler(0.25, 0.5, sample_rate=16000, seed=0)
    x_q, lengths_q, x_k, lengths_k = sampler.batch([torch.ones(16000), torch.ones(3000)])
    assert x_q.shape[0] == x_k.shape[0] == 2
    assert lengths_q[1].item() == pytest.approx(3000 / x_q.shape[1])
    assert lengths_q.max().item() == 1.0 and lengths_k.max().item() == 1.0
    assert x_q[1, 3000:].abs().sum() == 0  # zero padding


def test_spec_augment_masks_a_copy_and_is_identity_in_eval():
    torch.manual_seed(0)
    augment = SpecAugment(time_mask_length=(3, 6), freq_mask_length=(2, 4))
    features = torch.rand(4, 60, 20) + 1.0  # no zeros before masking
    original = features.clone()
    first, second = augment(features), augment(features)
    assert torch.equal(features, original)  # SpeechBrain's in-place masks hit a copy
    assert first.shape == features.shape
    assert (first == 0).any() and (second == 0).any()
    assert not torch.equal(first, second)  # each crop gets its own augmentation
    augment.eval()
    assert torch.equal(augment(features), features)
    with pytest.raises(ValueError, match="batch, frames, features"):
        augment(torch.rand(60, 20))


def test_moco_on_real_speech_crops(librispeech_test):
    torch.manual_seed(0)
    waveforms = [load_audio(p) for p in sorted(librispeech_test.glob("*/*.flac"))[::25][:4]]
    sampler = TwoCropSampler(1.0, 2.0, seed=0)
    fbank, augment = Fbank(n_mels=24), SpecAugment()
    x_q, lengths_q, x_k, lengths_k = sampler.batch(waveforms)
    feats_q, feats_k = augment(fbank(x_q)), augment(fbank(x_k))
    moco = MoCo(MeanLinearEncoder(n_features=24, dim=8), dim=8, queue_size=10)
    loss, logits = moco(feats_q, feats_k, lengths_q, lengths_k)
    assert torch.isfinite(loss)
    assert logits.shape == (4, 11)
    # two crops of one utterance are closer than the (random) queue
    assert (logits[:, 0] > logits[:, 1:].mean(1)).all()


def test_moco_and_augmenters_from_hyperpyyaml():
    hparams = load_hyperpyyaml(
        """
        dim: 3
        encoder: !new:torch.nn.Linear
            in_features: 4
            out_features: !ref <dim>
        moco: !new:xmodal_diar.losses.moco.MoCo
            encoder: !ref <encoder>
            dim: !ref <dim>
            queue_size: 7
            momentum: 0.99
            temperature: 0.2
        crops: !new:xmodal_diar.losses.moco.TwoCropSampler
            min_duration: 0.5
            max_duration: 1.0
            seed: 3
        spec_augment: !new:xmodal_diar.losses.moco.SpecAugment
            warp_window: 3
        """
    )
    moco = hparams["moco"]
    assert moco.encoder is hparams["encoder"] and moco.key_encoder is not moco.encoder
    assert moco.queue.shape == (3, 7) and moco.temperature == 0.2
    loss, logits = moco(torch.randn(2, 4), torch.randn(2, 4))
    assert torch.isfinite(loss) and logits.shape == (2, 8)
    assert hparams["crops"].min_samples == 8000
