"""Le & Odobez (2017, MTAP 2019) losses: hand-computed values, zeros, gradient signs, mining."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_diar.losses.distances import squared_distances
from xmodal_diar.losses.le_odobez import (
    ClusteringStructureTransfer,
    MMDLoss,
    RelativeDistanceTransfer,
    TargetEmbeddingTransfer,
    TripletLoss,
    cluster_face_centroids,
    hardest_negatives,
    identity_centroids,
    maximum_mean_discrepancy,
    mine_triplets,
)
from xmodal_diar.losses.projection import SpeakerToFaceProjection

SETTINGS = settings(max_examples=40, deadline=None)

from _tensors import E0, E1, E2, labels_of, one_gradient_step, vectors  # noqa: E402


@st.composite
def batches(draw, min_n=1, max_n=12, max_classes=4, dim=3):
    n = draw(st.integers(min_n, max_n))
    labels = torch.tensor(draw(st.lists(st.integers(0, max_classes - 1), min_size=n, max_size=n)))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return F.normalize(x, dim=-1), labels


def brute_force_triplets(d, labels, margin):
    """Every valid triplet's loss, by plain Python loops."""
    n, out = len(labels), []
    for a, p, q in itertools.product(range(n), repeat=3):
        if a != p and labels[a] == labels[p] and labels[a] != labels[q]:
            out.append(max(float(d[a, p] - d[a, q]) + margin, 0.0))
    return out


# --------------------------------------------------------------------------- mining


def test_mine_all_lists_exactly_the_valid_triplets():
    a, p, n = mine_triplets(torch.zeros(4, 4), labels_of(0, 0, 1, 2), "all")
    assert sorted(zip(a.tolist(), p.tolist(), n.tolist())) == [(0, 1, 2), (0, 1, 3), (1, 0, 2), (1, 0, 3)]


def test_hardest_negative_skips_closer_same_identity_candidates():
    d = torch.tensor(
        [
            [0.0, 0.1, 0.9, 0.5],  # nearest is 1 (same identity); hardest negative is 3
            [0.1, 0.0, 0.3, 0.7],
            [0.9, 0.3, 0.0, 0.2],
            [0.5, 0.7, 0.2, 0.0],
        ]
    )
    index, valid = hardest_negatives(d, labels_of(0, 0, 1, 1))
    assert index.tolist() == [3, 2, 1, 0]
    assert valid.all()


def test_hardest_negative_of_a_row_without_negatives_is_flagged_invalid():
    _, valid = hardest_negatives(torch.rand(3, 3), labels_of(5, 5, 5))
    assert not valid.any()


@SETTINGS
@given(batches(min_n=1, max_n=10))
def test_mining_never_returns_same_identity_negatives_and_hardest_is_minimal(batch):
    x, labels = batch
    d = squared_distances(x)
    for strategy in ("all", "semi-hard", "hardest"):
        a, p, n = mine_triplets(d, labels, strategy, margin=0.5)
        assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all() and (a != p).all()
        if strategy == "semi-hard":
            assert ((d[a, p] < d[a, n]) & (d[a, n] < d[a, p] + 0.5)).all()
    index, valid = hardest_negatives(d, labels)
    for i in torch.nonzero(valid).squeeze(1).tolist():
        others = labels != labels[i]
        assert labels[index[i]] != labels[i]
        assert d[i, index[i]] == d[i][others].min()


def test_semi_hard_keeps_only_triplets_inside_the_margin_band():
    # d(a,p) = 0.8; negatives at d = 2.0 (inside 0.8 + 1.5) and none else.
    a, p, n = mine_triplets(squared_distances(vectors(E0, E1, E2)), labels_of(0, 0, 1), "semi-hard", 1.5)
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == [(0, 1, 2)]


def test_mine_triplets_rejects_unknown_strategy_and_bad_shape():
    with pytest.raises(ValueError, match="strategy"):
        mine_triplets(torch.zeros(2, 2), labels_of(0, 1), "easy")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        mine_triplets(torch.zeros(2, 2), labels_of(0, 1, 1))


# --------------------------------------------------------------------------- triplet loss


@pytest.mark.parametrize(
    "mining, margin, expected",
    [
        # (a=0,p=1,n=2): 0.8 - 2.0 + 0.2 < 0; (a=1,p=0,n=2): 0.8 - 0.4 + 0.2 = 0.6.
        ("all", 0.2, 0.6),  # mean over the positive triplets
        ("hardest", 0.2, 0.3),  # mean over anchors 0 (loss 0) and 1 (0.6)
        ("semi-hard", 0.2, 0.0),  # no negative in the band
        ("semi-hard", 1.5, 0.8 - 2.0 + 1.5),  # only (0, 1, 2) is semi-hard
    ],
)
def test_triplet_loss_hand_computed(mining, margin, expected):
    loss = TripletLoss(margin=margin, mining=mining)(vectors(E0, E1, E2), labels_of(0, 0, 1))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mining", ["all", "semi-hard", "hardest"])
def test_triplet_loss_is_zero_beyond_the_margin(mining):
    x = vectors(E0, (0.995, 0.0998749), (-1.0, 0.0), (-0.995, 0.0998749))
    assert TripletLoss(0.2, mining)(x, labels_of(0, 0, 1, 1)).item() == 0.0


@SETTINGS
@given(batches(min_n=1, max_n=9))
def test_triplet_all_matches_brute_force(batch):
    x, labels = batch
    losses = brute_force_triplets(squared_distances(x), labels.tolist(), 0.2)
    positive = [v for v in losses if v > 0]
    expected = sum(positive) / len(positive) if positive else 0.0
    assert TripletLoss(0.2, "all")(x, labels).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("mining", ["all", "hardest"])
def test_triplet_sgd_step_pulls_positive_and_pushes_negative(mining):
    raw = torch.tensor([E0, E1, E2], requires_grad=True)
    labels, loss_fn = labels_of(0, 0, 1), TripletLoss(0.2, mining)

    def measure():
        x = F.normalize(raw, dim=-1)
        return loss_fn(x, labels), squared_distances(x).detach()

    (before, d0), (after, d1) = one_gradient_step(measure, raw)
    assert after < before
    assert d1[1, 0] < d0[1, 0]  # anchor 1 moved toward its positive 0
    assert d1[1, 2] > d0[1, 2]  # and away from its negative 2


@SETTINGS
@given(batches(min_n=1, max_n=6, max_classes=1), st.sampled_from(["all", "semi-hard", "hardest"]))
def test_triplet_degenerate_batches_give_zero_and_finite_gradients(batch, mining):
    raw = batch[0].clone().requires_grad_(True)
    loss = TripletLoss(0.2, mining)(raw, batch[1])  # one identity: no negative at all
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(raw.grad).all()
    singletons = TripletLoss(0.2, mining)(vectors(E0, E1, E2), labels_of(0, 1, 2))  # no positive
    assert singletons.item() == 0.0


def test_triplet_rejects_bad_inputs():
    loss = TripletLoss()
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
        loss(vectors(E0, E1, E2), labels_of(0, 1))
    with pytest.raises(ValueError, match="integers"):
        loss(vectors(E0, E1), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        loss(vectors(E0, (float("nan"), 0.0)), labels_of(0, 1))
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        loss(torch.ones(3), labels_of(0, 1, 2))
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="random")


# --------------------------------------------------------------------------- TET


def test_tet_hand_computed_with_identity_projection():
    tet = TargetEmbeddingTransfer(2, 2, projection=SpeakerToFaceProjection(2, 2, identity_if_same_dim=True))
    centroids = vectors((3.0, 4.0), E2)  # the first row is normalised to E1 inside
    loss = tet(vectors(E0, E2), labels_of(0, 1), centroids)
    assert loss.item() == pytest.approx((0.8 + 0.0) / 2, abs=1e-6)
    assert tet(vectors(E1, E2, E1), labels_of(0, 1, 0), centroids).item() == pytest.approx(0.0, abs=1e-6)


def test_tet_sgd_step_moves_projection_toward_centroids():
    torch.manual_seed(0)
    tet = TargetEmbeddingTransfer(speaker_dim=5, face_dim=3)
    s = F.normalize(torch.randn(8, 5), dim=-1).requires_grad_(True)
    labels = torch.arange(8) % 4
    centroids = F.normalize(torch.randn(4, 3), dim=-1)
    optimiser = torch.optim.SGD([s, *tet.parameters()], lr=0.5)
    before = tet(s, labels, centroids)
    gaps_before = ((tet.projection(s) - centroids[labels]) ** 2).sum(-1).detach()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    after = tet(s, labels, centroids)
    gaps_after = ((tet.projection(s) - centroids[labels]) ** 2).sum(-1).detach()
    assert after < before
    assert (gaps_after < gaps_before).float().mean() >= 0.75  # most P(s_i) moved toward t̄_{y_i}


def test_tet_single_sample_is_defined_and_bad_inputs_raise():
    tet = TargetEmbeddingTransfer(2, 2, projection=SpeakerToFaceProjection(2, 2, identity_if_same_dim=True))
    assert tet(vectors(E0), labels_of(0), vectors(E2)).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="out of range for 1 identities"):
        tet(vectors(E0), labels_of(1), vectors(E2))
    with pytest.raises(ValueError, match="face_centroids must have dim 2"):
        tet(vectors(E0), labels_of(0), torch.ones(1, 3))
    with pytest.raises(ValueError, match="expected speaker_dim=4"):
        TargetEmbeddingTransfer(4, 2, projection=SpeakerToFaceProjection(3, 2))


def test_identity_centroids_are_normalised_means():
    t = vectors(E0, E2, (2.0, 0.0))
    c = identity_centroids(t, labels_of(0, 0, 1))
    assert torch.allclose(c, vectors((math.sqrt(0.5), math.sqrt(0.5)), E0), atol=1e-6)


# --------------------------------------------------------------------------- RDT

CENTROIDS = vectors(E0, E1, E2)  # teacher: d(0,1)=0.8, d(0,2)=2.0, d(1,2)=0.4


def test_rdt_triplet_hand_computed():
    # Student swaps identities 1 and 2: d(s0,s1)=2.0, d(s0,s2)=0.8, d(s1,s2)=0.4.
    # Teacher-ordered triples: (0,1,2), (1,2,0), (2,1,0); losses 1.3, 0, 0 -> mean of positive 1.3.
    rdt = RelativeDistanceTransfer(margin=0.1)
    assert rdt(vectors(E0, E2, E1), labels_of(0, 1, 2), CENTROIDS).item() == pytest.approx(1.3, abs=1e-6)
    # Student arranged like the teacher: every ordering already holds with margin.
    assert rdt(vectors(E0, E1, E2), labels_of(0, 1, 2), CENTROIDS).item() == 0.0


def test_rdt_soft_hand_computed():
    # Pairs (0,1),(0,2),(1,2): teacher 0.8, 2, 0.4 -> /mean = .75, 1.875, .375; student 1.875, .75, .375.
    # Huber(δ=1): 0.625, 0.625, 0 -> mean 1.25 / 3.
    rdt = RelativeDistanceTransfer(mode="soft")
    assert rdt(vectors(E0, E2, E1), labels_of(0, 1, 2), CENTROIDS).item() == pytest.approx(1.25 / 3, abs=1e-6)
    assert rdt(vectors(E0, E1, E2), labels_of(0, 1, 2), CENTROIDS).item() == pytest.approx(0.0, abs=1e-6)


def test_rdt_ignores_same_identity_pairs():
    # A second sample of identity 0 (at E0 again) adds the pairs (1,3), (2,3) but not (0,3):
    # student 2, .8, .4, 2, .8 and teacher .8, 2, .4, .8, 2 (both mean 1.2) -> differences
    # ±1 on four pairs, Huber 0.5 each -> 2 / 5. With the (0,3) pair it would be 2.8 / 6.
    rdt = RelativeDistanceTransfer(mode="soft")
    with_repeat = rdt(vectors(E0, E2, E1, E0), labels_of(0, 1, 2, 0), CENTROIDS)
    assert with_repeat.item() == pytest.approx(0.4, abs=1e-6)
    two = RelativeDistanceTransfer()(vectors(E0, E2), labels_of(0, 1), CENTROIDS)
    assert two.item() == 0.0  # two identities: no triple of distinct identities


@pytest.mark.parametrize("mode", ["triplet", "soft"])
def test_rdt_sgd_step_restores_the_teacher_ordering(mode):
    raw = torch.tensor([E0, E2, E1], requires_grad=True)  # wrong order, as above
    rdt = RelativeDistanceTransfer(margin=0.1, mode=mode)

    def measure():
        s = F.normalize(raw, dim=-1)
        return rdt(s, labels_of(0, 1, 2), CENTROIDS), squared_distances(s).detach()

    (before, d0), (after, d1) = one_gradient_step(measure, raw)
    assert after < before
    assert d1[0, 1] - d1[0, 2] < d0[0, 1] - d0[0, 2]  # s_1 got relatively closer to s_0 than s_2


@SETTINGS
@given(batches(min_n=1, max_n=8, max_classes=5), st.sampled_from(["triplet", "soft"]))
def test_rdt_is_finite_and_nonnegative_on_any_batch(batch, mode):
    s, labels = batch
    centroids = F.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    raw = s.clone().requires_grad_(True)
    loss = RelativeDistanceTransfer(mode=mode)(raw, labels, centroids)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0 and torch.isfinite(raw.grad).all()
    if labels.unique().numel() < (3 if mode == "triplet" else 2):
        assert loss.item() == 0.0


def test_rdt_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        RelativeDistanceTransfer(mode="hard")


# --------------------------------------------------------------------------- clustering + CST


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_cluster_face_centroids_recovers_separated_clusters(method):
    g = torch.Generator().manual_seed(3)
    centres = torch.eye(16)[:3] * 5  # three orthogonal directions
    truth = torch.arange(15) % 3
    points = centres[truth] + 0.3 * torch.randn(15, 16, generator=g)
    ids = cluster_face_centroids(points, n_clusters=3, method=method, seed=0)
    assert ids.dtype == torch.long and ids.shape == (15,)
    assert same_partition(ids, truth)
    assert sorted(ids.unique().tolist()) == [0, 1, 2]
    assert torch.equal(ids, cluster_face_centroids(points, 3, method=method, seed=0))  # deterministic


def test_cluster_face_centroids_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"n_clusters must be in \[1, 2\]"):
        cluster_face_centroids(torch.eye(2), 3)
    with pytest.raises(ValueError, match="method"):
        cluster_face_centroids(torch.eye(2), 1, method="spectral")
    assert cluster_face_centroids(torch.eye(2)[:1], 1, method="agglomerative").tolist() == [0]


def test_cst_is_the_triplet_loss_over_face_clusters():
    # identities 0 and 1 share a face cluster; identity 2 is alone.
    cst = ClusteringStructureTransfer(identity_clusters=[0, 0, 1], margin=0.1)
    x, labels = vectors(E0, E1, E2), labels_of(0, 1, 2)
    # cluster labels (0, 0, 1): only (a=1, p=0, n=2) is positive: 0.8 - 0.4 + 0.1 = 0.5.
    assert cst(x, labels).item() == pytest.approx(0.5, abs=1e-6)
    assert TripletLoss(0.1)(x, labels).item() == 0.0  # identities alone give no positive pair
    apart = ClusteringStructureTransfer([0, 1, 1], margin=0.1)(vectors(E0, E1, E2), labels)
    assert apart.item() == pytest.approx(0.0)  # (1,2,0): 0.4 - 2 + 0.1 < 0; (2,1,0): < 0


def test_cst_needs_clusters_and_valid_labels():
    cst = ClusteringStructureTransfer()
    with pytest.raises(ValueError, match="set_identity_clusters"):
        cst(vectors(E0, E1), labels_of(0, 1))
    cst.set_identity_clusters(cluster_face_centroids(CENTROIDS, 2))
    with pytest.raises(ValueError, match="out of range for 3 identities"):
        cst(vectors(E0, E1), labels_of(0, 3))
    assert torch.isfinite(cst(vectors(E0, E1), labels_of(0, 1)))


# --------------------------------------------------------------------------- MMD


def brute_force_mmd(x, y, sigmas, unbiased):
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in sigmas)

    def mean_k(a, b, skip_diagonal):
        pairs = [(i, j) for i in range(len(a)) for j in range(len(b)) if not (skip_diagonal and i == j)]
        return sum(k(a[i], b[j]) for i, j in pairs) / len(pairs)

    return mean_k(x, x, unbiased) + mean_k(y, y, unbiased) - 2 * mean_k(x, y, False)


def test_mmd_hand_computed():
    # one point each, σ = 1: k_xx = k_yy = 1, k_xy = exp(-2/2) -> 2 - 2/e
    value = maximum_mean_discrepancy(vectors(E0), vectors(E2), bandwidths=[1.0])
    assert value.item() == pytest.approx(2 - 2 / math.e, abs=1e-6)
    x = vectors(E0, E1, (0.0, -1.0))
    assert maximum_mean_discrepancy(x, x).item() == pytest.approx(0.0, abs=1e-6)


@SETTINGS
@given(batches(min_n=2, max_n=7), batches(min_n=2, max_n=7), st.booleans())
def test_mmd_symmetric_and_matches_brute_force(bx, by, unbiased):
    x, y = bx[0], by[0]
    xy = maximum_mean_discrepancy(x, y, (0.5, 1.0), unbiased)
    assert xy.item() == pytest.approx(maximum_mean_discrepancy(y, x, (0.5, 1.0), unbiased).item(), abs=1e-5)
    assert xy.item() == pytest.approx(brute_force_mmd(x, y, (0.5, 1.0), unbiased), abs=1e-4)
    if not unbiased:
        assert xy.item() >= -1e-6


def test_mmd_loss_sgd_step_brings_distributions_together_and_shares_projection():
    torch.manual_seed(0)
    projection = SpeakerToFaceProjection(6, 3)
    mmd = MMDLoss(6, 3, projection=projection)
    tet = TargetEmbeddingTransfer(6, 3, projection=projection)
    assert mmd.projection is tet.projection
    s = F.normalize(torch.randn(10, 6), dim=-1)
    t = F.normalize(torch.randn(10, 3) + torch.tensor([3.0, 0.0, 0.0]), dim=-1)  # a shifted cloud
    optimiser = torch.optim.SGD(mmd.parameters(), lr=1.0)
    before = mmd(s, t)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert mmd(s, t) < before


def test_mmd_degenerate_batches():
    mmd = MMDLoss(2, 2, projection=SpeakerToFaceProjection(2, 2, identity_if_same_dim=True))
    assert mmd(vectors(E0), vectors(E0)).item() == pytest.approx(0.0, abs=1e-6)  # biased: defined for 1 sample
    with pytest.raises(ValueError, match="unbiased estimator needs at least 2"):
        MMDLoss(2, 2, unbiased=True)(vectors(E0), vectors(E0, E1))
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        maximum_mean_discrepancy(vectors(E0), vectors(E1), bandwidths=[0.0])
    with pytest.raises(ValueError, match="face embeddings must have dim 2"):
        mmd(vectors(E0), torch.ones(1, 3))


# --------------------------------------------------------------------------- YAML


def test_every_le_odobez_loss_builds_from_hyperpyyaml():
    from hyperpyyaml import load_hyperpyyaml

    hparams = load_hyperpyyaml(
        """
projection: !new:xmodal_diar.losses.projection.SpeakerToFaceProjection
    speaker_dim: 4
    face_dim: 3
triplet: !new:xmodal_diar.losses.le_odobez.TripletLoss
    margin: 0.3
    mining: hardest
tet: !new:xmodal_diar.losses.le_odobez.TargetEmbeddingTransfer
    speaker_dim: 4
    face_dim: 3
    projection: !ref <projection>
rdt: !new:xmodal_diar.losses.le_odobez.RelativeDistanceTransfer
    mode: soft
cst: !new:xmodal_diar.losses.le_odobez.ClusteringStructureTransfer
    identity_clusters: [0, 0, 1]
    margin: 0.05
mmd: !new:xmodal_diar.losses.le_odobez.MMDLoss
    speaker_dim: 4
    face_dim: 3
    bandwidths: [0.5, 1.0]
    projection: !ref <projection>
"""
    )
    assert hparams["triplet"].margin == 0.3 and hparams["triplet"].mining == "hardest"
    assert hparams["tet"].projection is hparams["mmd"].projection is hparams["projection"]
    assert hparams["rdt"].mode == "soft" and hparams["mmd"].bandwidths == (0.5, 1.0)
    assert hparams["cst"].identity_clusters.tolist() == [0, 0, 1] and hparams["cst"].triplet.margin == 0.05
    s, labels = F.normalize(torch.randn(6, 4), dim=-1), labels_of(0, 0, 1, 1, 2, 2)
    centroids, faces = F.normalize(torch.randn(3, 3), dim=-1), F.normalize(torch.randn(6, 3), dim=-1)
    values = [
        hparams["triplet"](s, labels),
        hparams["tet"](s, labels, centroids),
        hparams["rdt"](s, labels, centroids),
        hparams["cst"](s, labels),
        hparams["mmd"](s, faces),
    ]
    assert all(torch.isfinite(v) and v.ndim == 0 for v in values)
