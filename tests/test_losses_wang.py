"""Wang et al. (SIGIR 2020) joint face-voice losses: hand values, mining, symmetry, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_diar.losses.distances import squared_distances
from xmodal_diar.losses.wang import (
    BidirectionalRankingLoss,
    FaceAdapter,
    JointEmbeddingLoss,
    SharedCenterLoss,
    SharedIdentityLoss,
)

SETTINGS = settings(max_examples=40, deadline=None)
from _tensors import E0, E1, E2, labels_of, vectors  # noqa: E402


@st.composite
def pairs(draw, min_n=1, max_n=10, max_classes=4, dim=3):
    n = draw(st.integers(min_n, max_n))
    labels = torch.tensor(draw(st.lists(st.integers(0, max_classes - 1), min_size=n, max_size=n)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    v = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    f = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    return v, f, labels


def brute_force_ranking(v, f, labels, margin):
    """Both directions with plain loops: hardest negative = smallest distance to another identity."""
    n, d = len(labels), squared_distances(v, f)
    total = 0.0
    for cross in (d, d.T):
        losses = []
        for i in range(n):
            negatives = [float(cross[i, j]) for j in range(n) if labels[j] != labels[i]]
            if negatives:
                losses.append(max(margin + float(cross[i, i]) - min(negatives), 0.0))
        total += sum(losses) / len(losses) if losses else 0.0
    return total


# --------------------------------------------------------------------------- ranking


def test_ranking_hand_computed_with_hard_negatives():
    # labels (0, 1, 1), m = 1. d(v_i, f_j) rows: v0 (0, 2, .8), v1 (.8, .4, 0), v2 (2, 0, .4).
    # voice anchors: v0 -> f2 (.8): .2 ; v1 -> f0 (.8, the same-identity f2 at 0 is skipped): .6 ; v2 -> f0: 0
    # face anchors:  f0 -> v1 (.8): .2 ; f1 -> v0 (2): 0 ; f2 -> v0 (.8): .6
    loss = BidirectionalRankingLoss(margin=1.0)(vectors(E0, E1, E2), vectors(E0, E2, E1), labels_of(0, 1, 1))
    assert loss.item() == pytest.approx(0.8 / 3 + 0.8 / 3, abs=1e-6)


def test_ranking_is_zero_when_pairs_are_closer_than_any_negative_by_the_margin():
    v = vectors(E0, (0.995, 0.0998749), (-1.0, 0.0))
    assert BidirectionalRankingLoss(0.2)(v, v.clone(), labels_of(0, 0, 1)).item() == 0.0


@SETTINGS
@given(pairs(min_n=1, max_n=9))
def test_ranking_matches_brute_force_and_is_symmetric(batch):
    v, f, labels = batch
    loss = BidirectionalRankingLoss(0.3)
    forward, swapped = loss(v, f, labels).item(), loss(f, v, labels).item()
    assert forward == pytest.approx(brute_force_ranking(v, f, labels.tolist(), 0.3), abs=1e-5)
    assert forward == pytest.approx(swapped, abs=1e-6)
    assert math.isfinite(forward) and forward >= 0


@SETTINGS
@given(pairs(min_n=1, max_n=6, max_classes=1))
def test_ranking_single_identity_or_single_sample_is_zero_with_finite_gradients(batch):
    v, f, labels = batch
    v = v.clone().requires_grad_(True)
    loss = BidirectionalRankingLoss()(v, f, labels)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()


def test_ranking_sgd_step_pulls_pairs_together_and_pushes_hard_negatives_away():
    raw_v = torch.tensor([E0, E1, E2], requires_grad=True)
    raw_f = torch.tensor([E0, E2, E1], requires_grad=True)
    labels, loss_fn = labels_of(0, 1, 1), BidirectionalRankingLoss(1.0)

    def measure():
        v, f = F.normalize(raw_v, dim=-1), F.normalize(raw_f, dim=-1)
        return loss_fn(v, f, labels), squared_distances(v, f).detach()

    before, d0 = measure()
    before.backward()
    with torch.no_grad():
        raw_v -= 0.1 * raw_v.grad
        raw_f -= 0.1 * raw_f.grad
    after, d1 = measure()
    assert after < before
    assert d1[1, 1] < d0[1, 1]  # v1 toward its own face f1
    assert d1[1, 0] > d0[1, 0]  # and away from its hardest negative f0
    assert d1[0, 2] > d0[0, 2]  # v0 away from its hardest negative f2


def test_ranking_rejects_bad_inputs():
    loss = BidirectionalRankingLoss()
    with pytest.raises(ValueError, match="differ in dim"):
        loss(vectors(E0), torch.ones(1, 3), labels_of(0))
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss(vectors(E0, E1), vectors(E0), labels_of(0, 1))
    with pytest.raises(ValueError, match="face contains NaN"):
        loss(vectors(E0), vectors((float("inf"), 0.0)), labels_of(0))
    with pytest.raises(ValueError, match="margin"):
        BidirectionalRankingLoss(-1.0)


# --------------------------------------------------------------------------- identity


def test_shared_identity_hand_computed():
    loss = SharedIdentityLoss(dim=2, n_classes=2)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.eye(2))
        loss.classifier.bias.zero_()
    # v = E0: logits (1, 0) -> log(1 + e^-1); f = E2: logits (0, 1) -> log(1 + e); label 0 for both
    value = loss(vectors(E0), vectors(E2), labels_of(0))
    assert value.item() == pytest.approx(math.log1p(math.exp(-1)) + math.log1p(math.e), abs=1e-6)
    with torch.no_grad():
        loss.classifier.weight.zero_()
    assert loss(vectors(E0, E1), vectors(E2, E1), labels_of(0, 1)).item() == pytest.approx(2 * math.log(2))


def test_one_classifier_serves_both_modalities():
    torch.manual_seed(0)
    loss = SharedIdentityLoss(dim=3, n_classes=4)
    assert [name for name, _ in loss.named_parameters()] == ["classifier.weight", "classifier.bias"]
    v, f = F.normalize(torch.randn(5, 3), dim=-1), F.normalize(torch.randn(5, 3), dim=-1)
    labels = labels_of(0, 1, 2, 3, 0)
    assert loss(v, f, labels).item() == pytest.approx(loss(f, v, labels).item(), abs=1e-6)
    # one W, b for both: L = CE(W v + b) + CE(W f + b), averaged over the batch
    w, b = loss.classifier.weight, loss.classifier.bias
    expected = F.cross_entropy(v @ w.T + b, labels) + F.cross_entropy(f @ w.T + b, labels)
    assert loss(v, f, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_shared_identity_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="out of range for 3 identities"):
        SharedIdentityLoss(2, 3)(vectors(E0), vectors(E1), labels_of(3))


# --------------------------------------------------------------------------- centre


def test_shared_center_hand_computed():
    loss = SharedCenterLoss(dim=2, n_classes=2)
    with torch.no_grad():
        loss.centers.copy_(vectors(E1, E0))
    # ½ d(E0, E1) + ½ d(E2, E1) = ½ 0.8 + ½ 0.4
    assert loss(vectors(E0), vectors(E2), labels_of(0)).item() == pytest.approx(0.6, abs=1e-6)
    assert loss(vectors(E0, E1), vectors(E0, E1), labels_of(1, 0)).item() == pytest.approx(0.0, abs=1e-6)


def test_center_sgd_step_moves_the_shared_centre_between_voice_and_face():
    loss = SharedCenterLoss(dim=2, n_classes=1)
    with torch.no_grad():
        loss.centers.copy_(vectors((-1.0, 0.0)))
    v, f = vectors(E0), vectors(E2)
    midpoint = (v + f) / 2
    before = loss(v, f, labels_of(0))
    gap_before = (loss.centers - midpoint).norm().item()
    before.backward()
    with torch.no_grad():
        loss.centers -= 0.1 * loss.centers.grad
    assert loss(v, f, labels_of(0)) < before
    assert (loss.centers - midpoint).norm().item() < gap_before
    assert isinstance(loss.centers, torch.nn.Parameter)


# --------------------------------------------------------------------------- total and adapter


def test_joint_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    joint = JointEmbeddingLoss(dim=3, n_classes=3, margin=0.5, lambda_id=0.7, lambda_center=0.2)
    v, f = F.normalize(torch.randn(6, 3), dim=-1), F.normalize(torch.randn(6, 3), dim=-1)
    labels = labels_of(0, 0, 1, 1, 2, 2)
    total, terms = joint(v, f, labels)
    assert set(terms) == {"rank", "identity", "center"}
    assert terms["rank"].item() == pytest.approx(BidirectionalRankingLoss(0.5)(v, f, labels).item())
    expected = terms["rank"] + 0.7 * terms["identity"] + 0.2 * terms["center"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert terms["identity"].item() > 0 and terms["center"].item() > 0


def test_joint_training_step_with_face_adapter_reduces_the_loss():
    torch.manual_seed(0)
    adapter = FaceAdapter(face_dim=8, joint_dim=4, hidden_dims=(16,))
    joint = JointEmbeddingLoss(dim=4, n_classes=3)
    faces = torch.randn(9, 8)  # frozen teacher features
    v = F.normalize(torch.randn(9, 4), dim=-1).requires_grad_(True)
    labels = torch.arange(9) % 3
    optimiser = torch.optim.SGD([v, *adapter.parameters(), *joint.parameters()], lr=0.2)
    before, _ = joint(v, adapter(faces), labels)
    optimiser.zero_grad()
    before.backward()
    assert faces.grad is None and all(p.grad is not None for p in adapter.parameters())
    optimiser.step()
    after, _ = joint(v, adapter(faces), labels)
    assert after < before


@pytest.mark.parametrize("hidden", [(), (16, 8)])
def test_face_adapter_output_is_unit_norm_in_the_joint_dim(hidden):
    out = FaceAdapter(8, 5, hidden_dims=hidden)(torch.randn(4, 8))
    assert out.shape == (4, 5)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_face_adapter_rejects_bad_dims():
    with pytest.raises(ValueError, match="expected face embeddings of dim 8"):
        FaceAdapter(8, 5)(torch.randn(2, 7))
    with pytest.raises(ValueError, match="positive"):
        FaceAdapter(0, 5)


def test_every_wang_module_builds_from_hyperpyyaml():
    from hyperpyyaml import load_hyperpyyaml

    hparams = load_hyperpyyaml(
        """
joint_dim: 4
adapter: !new:xmodal_diar.losses.wang.FaceAdapter
    face_dim: 6
    joint_dim: !ref <joint_dim>
    hidden_dims: [12]
    dropout: 0.1
ranking: !new:xmodal_diar.losses.wang.BidirectionalRankingLoss
    margin: 0.4
identity: !new:xmodal_diar.losses.wang.SharedIdentityLoss
    dim: !ref <joint_dim>
    n_classes: 3
center: !new:xmodal_diar.losses.wang.SharedCenterLoss
    dim: !ref <joint_dim>
    n_classes: 3
joint: !new:xmodal_diar.losses.wang.JointEmbeddingLoss
    dim: !ref <joint_dim>
    n_classes: 3
    lambda_id: 0.5
    lambda_center: 0.05
"""
    )
    assert hparams["ranking"].margin == 0.4 and hparams["joint"].lambda_center == 0.05
    f = hparams["adapter"](torch.randn(6, 6))
    v, labels = F.normalize(torch.randn(6, 4), dim=-1), labels_of(0, 0, 1, 1, 2, 2)
    values = [hparams[k](v, f, labels) for k in ("ranking", "identity", "center")]
    values.append(hparams["joint"](v, f, labels)[0])
    assert all(torch.isfinite(x) and x.ndim == 0 for x in values)
