"""VGSR (Jin et al. 2023): MKD, QAW, the combined loss, and the speech-quality (SNR) function."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_diar.audio import load_audio
from xmodal_diar.losses.vgsr import (
    MarginKnowledgeDistillation,
    QualityAdaptiveWeights,
    VGSRLoss,
    relational_distances,
)
from xmodal_diar.speech_quality import estimate_snr, snr_to_quality, speech_quality

DISTANCES = ["l2", "cosine", "relational"]
few = settings(max_examples=25, deadline=None)


def identity_mkd(dim: int = 2, **kwargs) -> MarginKnowledgeDistillation:
    return MarginKnowledgeDistillation(dim, dim, identity_if_same_dim=True, **kwargs)


# --------------------------------------------------------------------------- MKD values


def test_mkd_l2_hand_computed():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mkd = identity_mkd(margin=0.5, reduction="none")
    # d = [0, 2]; [d - 0.5]+ = [0, 1.5]
    assert torch.allclose(mkd(s, t), torch.tensor([0.0, 1.5]))
    assert torch.allclose(identity_mkd(margin=0.5)(s, t), torch.tensor(0.75))
    assert torch.allclose(identity_mkd(margin=0.5, reduction="sum")(s, t), torch.tensor(1.5))
    weights = torch.tensor([0.5, 1.5])
    assert torch.allclose(identity_mkd(margin=0.5)(s, t, weights), torch.tensor(1.5 * 1.5 / 2))
    assert torch.allclose(mkd(s, t, weights), torch.tensor([0.0, 2.25]))


def test_mkd_cosine_hand_computed_and_teacher_normalised():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[3.0, 0.0], [-1.0, 1.0]])  # not unit norm: normalised inside
    loss = identity_mkd(margin=0.1, distance="cosine", reduction="none")(s, t)
    assert torch.allclose(loss, torch.tensor([0.0, 1.0 - 1.0 / math.sqrt(2.0) - 0.1]), atol=1e-6)


def test_relational_distance_hand_computed():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    psi_x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]) / (4.0 / 3.0)
    r2 = math.sqrt(2.0)
    psi_y = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, r2], [1.0, r2, 0.0]]) / ((2.0 + r2) / 3.0)
    diff = (psi_x - psi_y).abs()
    huber = torch.where(diff < 1.0, 0.5 * diff**2, diff - 0.5)
    expected = huber.sum(1) / 2.0
    assert torch.allclose(relational_distances(x, y), expected, atol=1e-5)
    assert (relational_distances(x, y) > 0).all()


def test_relational_distance_ignores_scale_and_rotation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    assert torch.allclose(relational_distances(x, 3.0 * x @ rotation), torch.zeros(6), atol=1e-5)


# --------------------------------------------------------------------------- MKD constraint & gradient


@few
@given(
    n=st.integers(2, 8),
    speaker_dim=st.integers(2, 6),
    face_dim=st.integers(2, 6),
    distance=st.sampled_from(DISTANCES),
    seed=st.integers(0, 10_000),
)
def test_mkd_zero_inside_margin(n, speaker_dim, face_dim, distance, seed):
    torch.manual_seed(seed)
    mkd = MarginKnowledgeDistillation(speaker_dim, face_dim, margin=0.05, distance=distance)
    s = torch.randn(n, speaker_dim, requires_grad=True)
    t = mkd.projection(s).detach()  # teacher == P(s): D = 0 <= m
    loss = mkd(s, t)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(s.grad == 0)


@pytest.mark.parametrize("distance", DISTANCES)
def test_mkd_sgd_step_moves_projection_toward_teacher(distance):
    torch.manual_seed(1)
    mkd = MarginKnowledgeDistillation(5, 3, margin=0.0, distance=distance, reduction="none")
    s = torch.randn(6, 5, requires_grad=True)
    t = F.normalize(torch.randn(6, 3), dim=-1)
    before = mkd.distances(s, t).detach()
    # a step on the speaker embeddings only (P fixed)
    mkd(s, t).mean().backward()
    with torch.no_grad():
        s_moved = s - 0.05 * s.grad
    after = mkd.distances(s_moved, t).detach()
    assert after.mean() < before.mean()
    if distance != "relational":  # per-sample terms: every P(s_i) moves toward its t_i
        assert torch.all(after < before)
    # a step on P (shared by all samples) reduces the batch loss
    opt = torch.optim.SGD(mkd.parameters(), lr=0.05)
    opt.zero_grad()
    mkd(s, t).mean().backward()
    opt.step()
    assert mkd.distances(s, t).mean() < before.mean()


def test_mkd_gradient_only_for_samples_outside_margin():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.1], [1.0, 0.0]])
    identity_mkd(margin=0.5)(s, t).backward()
    assert torch.all(s.grad[0] == 0)  # d = 0.005 <= 0.5
    # d(s_1) = ||normalize(s_1) - t_1||^2: its gradient pushes s_1 toward t_1 = (1, 0)
    assert s.grad[1, 0] < 0


def test_mkd_teacher_gets_no_gradient():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 2, requires_grad=True)
    MarginKnowledgeDistillation(4, 2, margin=0.0)(s, t).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_mkd_single_sample_is_defined(distance):
    s = torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0]])
    loss = identity_mkd(margin=0.0, distance=distance)(s, t)
    assert loss.item() == pytest.approx(2.0 if distance == "l2" else 1.0)


def test_mkd_relational_batch_sizes():
    mkd = identity_mkd(margin=0.0, distance="relational")
    with pytest.raises(ValueError, match="at least 2"):
        mkd(torch.randn(1, 2), torch.randn(1, 2))
    # two samples: both normalised distances are 1, nothing to transfer
    assert mkd(torch.randn(2, 2), torch.randn(2, 2)).item() == 0.0
    # identical embeddings: all distances 0, finite loss and gradient
    s = torch.ones(4, 2, requires_grad=True)
    loss = mkd(s, torch.randn(4, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_mkd_bad_inputs_raise_clear_errors():
    mkd = MarginKnowledgeDistillation(4, 2)
    with pytest.raises(ValueError, match="face embeddings of dim 2"):
        mkd(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="speaker embeddings of dim 4"):
        mkd(torch.randn(3, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="batch sizes differ"):
        mkd(torch.randn(3, 4), torch.randn(2, 2))
    with pytest.raises(ValueError, match="weights must have shape"):
        mkd(torch.randn(3, 4), torch.randn(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        mkd(torch.randn(3, 4), torch.randn(3, 2), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="distance"):
        MarginKnowledgeDistillation(4, 2, distance="l1")
    with pytest.raises(ValueError, match="margin"):
        MarginKnowledgeDistillation(4, 2, margin=-0.1)


# --------------------------------------------------------------------------- QAW


def test_qaw_hand_computed():
    q = torch.tensor([[0.0, 5.0], [1.0, 5.0]])  # 2nd column constant: no information
    e = math.e
    w = QualityAdaptiveWeights(column_weights=[1.0, 0.0])(q)
    assert torch.allclose(w, torch.tensor([2.0 / (1.0 + e), 2.0 * e / (1.0 + e)]))
    # linear: minmax gives q~ = [[0, 1], [1, 1]], combined q = [0.5, 1.0]
    w = QualityAdaptiveWeights(combine="linear")(q)
    assert torch.allclose(w, torch.tensor([2.0 / 3.0, 4.0 / 3.0]))
    w = QualityAdaptiveWeights(column_normalization="none", combine="linear", floor=1.0)(
        torch.tensor([[0.0], [1.0]])
    )
    assert torch.allclose(w, torch.tensor([2.0 / 3.0, 4.0 / 3.0]))


@few
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 5),
    combine=st.sampled_from(["softmax", "linear"]),
    normalization=st.sampled_from(["minmax", "none"]),
    temperature=st.floats(0.1, 5.0),
    seed=st.integers(0, 10_000),
)
def test_qaw_mean_one_non_negative_detached(n, k, combine, normalization, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(n, k, generator=g).requires_grad_(True)
    qaw = QualityAdaptiveWeights(column_normalization=normalization, combine=combine, temperature=temperature)
    w = qaw(q)
    assert w.shape == (n,)
    assert not w.requires_grad
    assert (w >= 0).all() and torch.isfinite(w).all()
    assert w.mean().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("combine", ["softmax", "linear"])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_qaw_equal_qualities_give_ones(combine, n):
    q = torch.full((n, 3), 0.4)
    for normalization in ("minmax", "none"):
        w = QualityAdaptiveWeights(column_normalization=normalization, combine=combine)(q)
        assert torch.equal(w, torch.ones(n))
    assert torch.equal(QualityAdaptiveWeights(combine="linear")(torch.zeros(3, 2)), torch.ones(3))


@pytest.mark.parametrize("combine", ["softmax", "linear"])
def test_qaw_higher_quality_higher_weight(combine):
    g = torch.Generator().manual_seed(3)
    q = torch.rand(8, 4, generator=g)
    qaw = QualityAdaptiveWeights(column_weights=[1.0, 2.0, 0.5, 1.0], combine=combine)
    w = qaw(q)
    combined = qaw.combined_quality(q)
    order = torch.argsort(combined)
    assert torch.all(w[order][1:] >= w[order][:-1])
    assert w[combined.argmax()] > w[combined.argmin()]
    better = q.clone()
    better[0] = better[0] + 0.1  # sample 0 improves on every measure, the rest unchanged
    better[0] = torch.minimum(better[0], q.amax(0))  # stay within the batch range
    assert qaw(better)[0] >= w[0]


def test_qaw_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        QualityAdaptiveWeights()(torch.tensor([[0.5], [float("nan")]]))
    with pytest.raises(ValueError, match="2 column_weights for a quality matrix with 3 columns"):
        QualityAdaptiveWeights(column_weights=[1.0, 1.0])(torch.rand(4, 3))
    with pytest.raises(ValueError, match="column_weights"):
        QualityAdaptiveWeights(column_weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="temperature"):
        QualityAdaptiveWeights(temperature=0.0)
    with pytest.raises(ValueError, match="quality matrix"):
        QualityAdaptiveWeights()(torch.rand(2, 3, 4))


def test_vgsr_loss_combines_speaker_loss_and_weighted_mkd():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    quality = torch.tensor([[1.0], [0.0]])
    loss = VGSRLoss(identity_mkd(margin=0.0), QualityAdaptiveWeights(combine="linear"), weight=0.5)
    # weights [2, 0]; MKD per sample [2, 0] -> mean 2; total 1 + 0.5 * 2
    assert loss(torch.tensor(1.0), s, t, quality).item() == pytest.approx(2.0)
    # no quality: unweighted, MKD mean 1
    assert loss(torch.tensor(1.0), s, t).item() == pytest.approx(1.5)


def test_losses_from_hyperpyyaml():
    hparams = load_hyperpyyaml(
        """
        mkd: !new:xmodal_diar.losses.vgsr.MarginKnowledgeDistillation
            speaker_dim: 8
            face_dim: 4
            margin: 0.1
            distance: cosine
        qaw: !new:xmodal_diar.losses.vgsr.QualityAdaptiveWeights
            column_weights: [1.0, 1.0, 2.0]
            combine: softmax
            temperature: 0.5
        vgsr: !new:xmodal_diar.losses.vgsr.VGSRLoss
            distillation: !ref <mkd>
            quality_weights: !ref <qaw>
            weight: 0.3
        """
    )
    assert hparams["mkd"].distance == "cosine" and hparams["mkd"].margin == 0.1
    assert hparams["vgsr"].distillation is hparams["mkd"]
    assert torch.equal(hparams["qaw"].column_weights, torch.tensor([1.0, 1.0, 2.0]))
    loss = hparams["vgsr"](torch.tensor(0.0), torch.randn(5, 8), torch.randn(5, 4), torch.rand(5, 3))
    assert 0.0 <= loss.item() <= 0.3 * 2.0 * 5  # cosine distance <= 2, weights <= N


# --------------------------------------------------------------------------- speech quality (SNR)

TRUE_SNRS_DB = [-5.0, 0.0, 5.0, 10.0, 20.0, 30.0]
SNR_TOLERANCE_DB = 1.5  # measured worst case: 1.12 dB over 10 speakers x these SNRs


def test_snr_estimate_on_librispeech_with_white_noise(librispeech_test):
    g = torch.Generator().manual_seed(0)
    files = sorted(librispeech_test.glob("*/*.flac"))[::20][:5]
    assert len(files) == 5
    for path in files:
        speech = load_audio(path)
        own = estimate_snr(speech).item()  # the recording's own noise floor
        estimates = []
        for snr in TRUE_SNRS_DB:
            sigma = torch.sqrt(speech.pow(2).mean() / 10 ** (snr / 10))
            noisy = speech + sigma * torch.randn(speech.shape, generator=g)
            # true SNR counting the added and the recording's own noise
            true = -10 * math.log10(10 ** (-snr / 10) + 10 ** (-own / 10))
            estimates.append(estimate_snr(noisy).item())
            assert estimates[-1] == pytest.approx(true, abs=SNR_TOLERANCE_DB), (path.name, snr)
        assert estimates == sorted(estimates), path.name
        quality = snr_to_quality(torch.tensor(estimates))
        assert torch.all(quality[1:] >= quality[:-1]) and quality[0] == 0.0


def test_snr_batch_and_degenerate_inputs():
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 8000, generator=g) * torch.tensor([[0.1], [1.0], [0.01]])
    snr = estimate_snr(batch)
    assert snr.shape == (3,)
    assert torch.allclose(snr[1], estimate_snr(batch[1]))
    # digital silence: 0 dB, finite
    assert estimate_snr(torch.zeros(16000)).item() == 0.0
    # a burst in silence: very high but finite SNR
    burst = torch.zeros(16000)
    burst[4000:8000] = torch.randn(4000, generator=g)
    assert 60.0 < estimate_snr(burst).item() < 120.0
    q = speech_quality(torch.stack([burst, torch.zeros(16000)]))
    assert q.tolist() == [1.0, 0.0]


def test_snr_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shorter than one analysis frame"):
        estimate_snr(torch.randn(100))
    with pytest.raises(ValueError, match="NaN"):
        estimate_snr(torch.full((1000,), float("nan")))
    with pytest.raises(ValueError, match="waveform: expected shape"):
        estimate_snr(torch.randn(1, 2, 1000))
    with pytest.raises(ValueError, match="snr_ceiling"):
        snr_to_quality(torch.tensor(3.0), snr_floor=10.0, snr_ceiling=5.0)


@pytest.mark.parametrize("distance", ["l2", "cosine", "relational"])
def test_mkd_raises_on_nan_face_embeddings(distance):
    """Like the other losses: a NaN teacher is a data error, not a NaN loss (issue 12, point 7)."""
    face = F.normalize(torch.randn(4, 3), dim=-1)
    face[2, 1] = float("nan")
    with pytest.raises(ValueError, match="MarginKnowledgeDistillation: face contains NaN"):
        MarginKnowledgeDistillation(speaker_dim=3, face_dim=3, distance=distance)(torch.randn(4, 3), face)
