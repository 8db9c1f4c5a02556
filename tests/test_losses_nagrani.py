"""Nagrani et al. 2020: content, identity and confusion losses, and the two-head module."""

from __future__ import annotations

import math

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_diar.losses.nagrani import (
    ConfusionLoss,
    ContentMatchingLoss,
    DisentanglementHeads,
    IdentityMatchingLoss,
)

few = settings(max_examples=25, deadline=None)
MATCHING_LOSSES = [ContentMatchingLoss, IdentityMatchingLoss]


# --------------------------------------------------------------------------- scale and bias


@pytest.mark.parametrize("loss_class", MATCHING_LOSSES)
def test_scale_and_bias_initial_values_and_learnable(loss_class):
    loss = loss_class()
    assert loss.weight.item() == 10.0 and loss.bias.item() == -5.0
    assert {name for name, p in loss.named_parameters() if p.requires_grad} == {"weight", "bias"}
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    loss(video, audio).backward()
    assert loss.weight.grad.abs().item() > 0
    assert abs(loss.bias.grad.item()) < 1e-6  # b shifts a whole softmax row: it cancels


# --------------------------------------------------------------------------- content loss


def test_content_loss_hand_computed():
    video = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    audio = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    c = 1.0 / math.sqrt(2.0)
    # row 0 logits [10 - 5, 10c - 5], target 0; row 1 logits [-5, 10c - 5], target 1
    expected = 0.5 * (math.log1p(math.exp(10 * c - 10)) + math.log1p(math.exp(-10 * c)))
    assert ContentMatchingLoss()(video, audio).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_content_loss_perfect_and_uninformative_alignment(n):
    perfect = torch.eye(n).expand(4, n, n)  # orthogonal segments, audio == video
    assert ContentMatchingLoss()(perfect, perfect).item() == pytest.approx(math.log1p((n - 1) * math.exp(-10)), abs=1e-6)
    same = torch.ones(4, n, 3)  # every segment looks the same: chance level
    assert ContentMatchingLoss()(same, same).item() == pytest.approx(math.log(n), rel=1e-5)


def test_content_loss_negatives_come_from_the_same_track_only():
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    loss = ContentMatchingLoss()
    per_track = [loss(video[i : i + 1], audio[i : i + 1]) for i in range(2)]
    assert loss(video, audio).item() == pytest.approx((per_track[0] + per_track[1]).item() / 2, rel=1e-5)


def test_content_loss_sgd_step_increases_positive_similarity():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, 8, generator=g, requires_grad=True)
    audio = torch.randn(2, 4, 8, generator=g, requires_grad=True)
    loss_fn = ContentMatchingLoss()

    def positive_cos():
        return torch.cosine_similarity(video, audio, dim=-1).mean()

    before_loss, before_cos = loss_fn(video, audio), positive_cos().item()
    before_loss.backward()
    with torch.no_grad():
        video -= 0.5 * video.grad
        audio -= 0.5 * audio.grad
    assert loss_fn(video, audio).item() < before_loss.item()
    assert positive_cos().item() > before_cos


# --------------------------------------------------------------------------- identity loss


def test_identity_loss_hand_computed_with_segment_means():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # track 0's segments average to (1, 0); track 1's to (1, 1)
    audio = torch.tensor([[[2.0, 1.0], [0.0, -1.0]], [[1.0, 2.0], [1.0, 0.0]]])
    c = 1.0 / math.sqrt(2.0)
    expected = 0.5 * (math.log1p(math.exp(10 * c - 10)) + math.log1p(math.exp(-10 * c)))
    loss = IdentityMatchingLoss()
    assert loss(video, audio).item() == pytest.approx(expected, rel=1e-5)
    # (B, N, D) video is averaged too; (B, D) audio is taken as already averaged
    assert loss(video[:, None].expand(2, 3, 2), audio.mean(1)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("b", [2, 5])
def test_identity_loss_perfect_and_uninformative(b):
    video = torch.eye(b)
    audio = torch.eye(b)[:, None].expand(b, 3, b)
    assert IdentityMatchingLoss()(video, audio).item() == pytest.approx(math.log1p((b - 1) * math.exp(-10)), abs=1e-6)
    assert IdentityMatchingLoss()(torch.ones(b, 4), torch.ones(b, 3, 4)).item() == pytest.approx(math.log(b), rel=1e-5)


def test_identity_loss_sgd_step_increases_positive_similarity():
    g = torch.Generator().manual_seed(2)
    video = torch.randn(4, 6, generator=g, requires_grad=True)
    audio = torch.randn(4, 3, 6, generator=g, requires_grad=True)
    loss_fn = IdentityMatchingLoss()
    before = loss_fn(video, audio)
    cos_before = torch.cosine_similarity(video, audio.mean(1), dim=-1).mean().item()
    before.backward()
    with torch.no_grad():
        video -= 0.5 * video.grad
        audio -= 0.5 * audio.grad
    assert loss_fn(video, audio).item() < before.item()
    assert torch.cosine_similarity(video, audio.mean(1), dim=-1).mean().item() > cos_before


# --------------------------------------------------------------------------- shapes, degenerate batches


@few
@given(b=st.integers(2, 5), n=st.integers(2, 6), d=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_matching_losses_bounded_and_finite(b, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    video, audio = torch.randn(b, n, d, generator=g), torch.randn(b, n, d, generator=g)
    video[0, 0] = 0.0  # a zero embedding: cos = 0, never NaN
    for loss_fn, m in ((ContentMatchingLoss(), n), (IdentityMatchingLoss(), b)):
        value = loss_fn(video, audio).item()
        # 0 <= CE <= log M + (max logit - min logit) = log M + 2 w
        assert 0.0 <= value <= math.log(m) + 20.0 + 1e-4


def test_degenerate_batches_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 2 segments per track"):
        ContentMatchingLoss()(torch.randn(3, 1, 4), torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="at least 2 tracks"):
        IdentityMatchingLoss()(torch.randn(1, 4), torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="shapes differ"):
        ContentMatchingLoss()(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="tracks, segments, dim"):
        ContentMatchingLoss()(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="equal tracks and dim"):
        IdentityMatchingLoss()(torch.randn(3, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="init_weight"):
        ContentMatchingLoss(init_weight=0.0)


# --------------------------------------------------------------------------- confusion loss


def _confusion_with_logits_equal_to_input(num_classes: int) -> ConfusionLoss:
    confusion = ConfusionLoss(embedding_dim=num_classes, num_classes=num_classes)
    with torch.no_grad():
        confusion.classifier.weight.copy_(torch.eye(num_classes))
        confusion.classifier.bias.zero_()
    return confusion


def test_confusion_loss_hand_computed_and_zero_at_uniform():
    confusion = _confusion_with_logits_equal_to_input(2)
    # logits [0, log 3] -> p = [1/4, 3/4]; KL(U || p) = -log 2 - (log 1/4 + log 3/4) / 2
    expected = -math.log(2) - 0.5 * (math.log(0.25) + math.log(0.75))
    identity = torch.tensor([[0.0, math.log(3.0)]])
    assert confusion.confusion_loss(identity).item() == pytest.approx(expected, rel=1e-5)
    assert confusion.confusion_loss(torch.full((3, 2), 0.7)).item() == pytest.approx(0.0, abs=1e-7)


@few
@given(c=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_confusion_loss_minimal_at_uniform_prediction(c, seed):
    confusion = _confusion_with_logits_equal_to_input(c)
    logits = torch.randn(4, c, generator=torch.Generator().manual_seed(seed))
    uniform = logits.mean(-1, keepdim=True).expand(4, c)
    assert confusion.confusion_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert confusion.confusion_loss(logits).item() > confusion.confusion_loss(uniform).item()


def test_confusion_two_players_get_separate_gradients():
    torch.manual_seed(0)
    confusion = ConfusionLoss(embedding_dim=4, num_classes=3, hidden_dim=8)
    identity = torch.randn(6, 4, requires_grad=True)
    content = torch.tensor([0, 1, 2, 0, 1, 2])

    classifier_loss, confusion_loss = confusion(identity, content)
    classifier_loss.backward()
    assert identity.grad is None  # the classifier trains on detached embeddings
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in confusion.parameters())

    confusion.zero_grad(set_to_none=True)
    confusion_loss.backward()
    assert all(p.grad is None for p in confusion.parameters())  # the encoder's turn only
    with torch.no_grad():  # an encoder step makes the prediction more uniform
        moved = identity - 0.5 * identity.grad
    assert confusion.confusion_loss(moved).item() < confusion_loss.item()


def test_confusion_classifier_learns_content():
    torch.manual_seed(0)
    confusion = ConfusionLoss(embedding_dim=2, num_classes=2)
    identity = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)  # content leaks into identity
    content = torch.tensor([0, 1]).repeat(4)
    opt = torch.optim.SGD(confusion.parameters(), lr=1.0)
    first = confusion.classifier_loss(identity, content)
    for _ in range(20):
        opt.zero_grad()
        confusion.classifier_loss(identity, content).backward()
        opt.step()
    assert confusion.classifier_loss(identity, content).item() < 0.5 * first.item()
    assert confusion.confusion_loss(identity).item() > 0.1  # the leak is now visible


def test_confusion_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 content classes"):
        ConfusionLoss(4, 1)
    with pytest.raises(ValueError, match="content labels of shape"):
        ConfusionLoss(4, 3).classifier_loss(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))


# --------------------------------------------------------------------------- heads


def test_heads_on_a_trunk_feed_both_losses():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU())
    audio_heads = DisentanglementHeads(16, identity_dim=6, content_dim=5, trunk=trunk)
    video_heads = DisentanglementHeads(12, identity_dim=6, content_dim=5, hidden_dim=8)
    audio_id, audio_content = audio_heads(torch.randn(3, 4, 10))
    video_id, video_content = video_heads(torch.randn(3, 4, 12))
    assert audio_id.shape == (3, 4, 6) and audio_content.shape == (3, 4, 5)
    assert torch.allclose(video_id.norm(dim=-1), torch.ones(3, 4))
    assert torch.allclose(audio_content.norm(dim=-1), torch.ones(3, 4))
    loss = ContentMatchingLoss()(video_content, audio_content) + IdentityMatchingLoss()(video_id, audio_id)
    loss.backward()
    assert trunk[0].weight.grad.abs().sum() > 0
    assert audio_heads.identity.weight.grad.abs().sum() > 0 and audio_heads.content.weight.grad.abs().sum() > 0


def test_losses_from_hyperpyyaml():
    hparams = load_hyperpyyaml(
        """
        heads: !new:xmodal_diar.losses.nagrani.DisentanglementHeads
            trunk_dim: 16
            identity_dim: 8
            content_dim: 8
        content_loss: !new:xmodal_diar.losses.nagrani.ContentMatchingLoss
            init_weight: 10.0
            init_bias: -5.0
        identity_loss: !new:xmodal_diar.losses.nagrani.IdentityMatchingLoss
        confusion_loss: !new:xmodal_diar.losses.nagrani.ConfusionLoss
            embedding_dim: 8
            num_classes: 4
            hidden_dim: 16
        """
    )
    identity, content = hparams["heads"](torch.randn(2, 3, 16))
    assert hparams["content_loss"](content, content).item() < math.log(3)
    assert hparams["identity_loss"].weight.item() == 10.0
    assert hparams["confusion_loss"].num_classes == 4
    classifier_loss, confusion_loss = hparams["confusion_loss"](identity, torch.zeros(2, 3, dtype=torch.long))
    assert classifier_loss.item() > 0 and confusion_loss.item() >= 0
