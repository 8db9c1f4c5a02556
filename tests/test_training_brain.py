"""CrossModalTerm / DisentanglementTerm: masking, values, gradients, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xmodal_diar.losses.le_odobez import ClusteringStructureTransfer, MMDLoss, TargetEmbeddingTransfer, TripletLoss
from xmodal_diar.losses.nagrani import ConfusionLoss, ContentMatchingLoss, DisentanglementHeads, IdentityMatchingLoss
from xmodal_diar.losses.vgsr import MarginKnowledgeDistillation, QualityAdaptiveWeights
from xmodal_diar.training import CrossModalTerm, DisentanglementTerm, FeatureAugmentedEncoder
from xmodal_diar.training.brain import find_checkpoint_dir



def _batch(seed=0, n=8, d=6, df=5):
    g = torch.Generator().manual_seed(seed)
    speaker = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[:n]
    face = F.normalize(torch.randn(n, df, generator=g), dim=-1)
    has_face = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float)[:n]
    quality = torch.rand(n, 4, generator=g)
    return speaker, labels, face, has_face, quality


def test_tet_term_uses_only_identities_with_faces():
    speaker, labels, face, has_face, quality = _batch()
    torch.manual_seed(0)
    term = CrossModalTerm(TargetEmbeddingTransfer(6, 5), weight=0.5)
    centroids = F.normalize(torch.randn(2, 5), dim=-1)
    term.set_face_teacher(centroids, torch.tensor([0, 1, -1, -1]))  # labels 0, 1 have faces
    value = term(speaker, labels, face, has_face, quality)
    expected = 0.5 * term.loss(speaker[:4], labels[:4], centroids)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert speaker.grad[4:].abs().sum() == 0 and speaker.grad[:4].abs().sum() > 0


def test_term_without_faces_in_the_batch_is_an_exact_connected_zero():
    speaker, labels, face, _, quality = _batch()
    term = CrossModalTerm(MMDLoss(6, 5))
    value = term(speaker, labels, face, torch.zeros(8), quality)
    assert value.item() == 0.0
    value.backward()  # connected: backward works, every parameter gets a (zero) gradient
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in term.parameters())


def test_mkd_term_applies_quality_weights_to_face_samples():
    speaker, labels, face, has_face, quality = _batch()
    mkd = MarginKnowledgeDistillation(6, 5, margin=0.0)
    qaw = QualityAdaptiveWeights()
    with_q = CrossModalTerm(mkd, quality_weights=qaw)(speaker, labels, face, has_face, quality)
    expected = mkd(speaker[:4], face[:4], qaw(quality[:4]))
    assert with_q.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = CrossModalTerm(mkd)(speaker, labels, face, has_face, quality)
    assert plain.item() == pytest.approx(mkd(speaker[:4], face[:4]).item(), rel=1e-6)
    assert with_q.item() != pytest.approx(plain.item(), rel=1e-4)


def test_cst_term_clusters_the_face_centroids_once():
    term = CrossModalTerm(ClusteringStructureTransfer(margin=0.1), n_clusters=2)
    centroids = F.normalize(torch.tensor([[1.0, 0, 0], [0.99, 0.1, 0], [0, 1.0, 0], [0, 0.98, 0.1]]), dim=-1)
    term.set_face_teacher(centroids, torch.arange(4))
    clusters = term.loss.identity_clusters.tolist()
    assert clusters[0] == clusters[1] != clusters[2] == clusters[3]


def test_unsupported_loss_is_rejected_with_the_supported_list():
    with pytest.raises(ValueError, match="unsupported loss TripletLoss.*TargetEmbeddingTransfer"):
        CrossModalTerm(TripletLoss())


def test_disentanglement_term_values_and_gradients():
    torch.manual_seed(0)
    term = DisentanglementTerm(DisentanglementHeads(6, 4, 4), DisentanglementHeads(5, 4, 4), ContentMatchingLoss(),
                               IdentityMatchingLoss(), ConfusionLoss(4, 3), weight=1.0, confusion_weight=0.1)
    audio = torch.randn(3, 4, 6, requires_grad=True)
    face = torch.randn(3, 4, 5)
    value = term(audio, face)
    assert value.item() > 0
    value.backward()
    assert audio.grad.abs().sum() > 0
    assert term(torch.randn(1, 4, 6), torch.randn(1, 4, 5)).item() == 0.0  # one track: no negative


def test_feature_augmented_encoder_equals_the_encoder_without_augmentation():
    from xmodal_diar.models import TristouNet

    torch.manual_seed(0)
    enc = TristouNet(lstm_hidden=4, dense=[4], dimension=4).eval()
    wavs = torch.randn(2, 16000)
    assert torch.allclose(FeatureAugmentedEncoder(enc)(wavs), enc(wavs), atol=1e-6)


def test_find_checkpoint_rejects_an_exported_model_dir(tmp_path):
    (tmp_path / "hyperparams.yaml").write_text("x: 1\n")
    (tmp_path / "embedding_model.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="already an exported model directory"):
        find_checkpoint_dir(tmp_path)
