"""Cross-modal voice/face tasks (Wang et al. 2020) on synthetic embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal_diar.eval.crossmodal import (
    average_precisions,
    cosine_matrix,
    evaluate_crossmodal,
    matching_correct,
    matching_trials,
)


def aligned(n_identities=6, per_identity=3, dim=8, noise=0.01, seed=0):
    """Voice and face embeddings of identity c both near the same random direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_identities, dim))
    labels = np.repeat([f"id{k}" for k in range(n_identities)], per_identity)
    voice = np.repeat(centres, per_identity, axis=0) + noise * rng.normal(size=(len(labels), dim))
    face = np.repeat(centres, per_identity, axis=0) + noise * rng.normal(size=(len(labels), dim))
    return voice, face, labels


def test_perfectly_aligned_embeddings_score_one():
    voice, face, labels = aligned()
    r = evaluate_crossmodal(voice, labels, face, labels, n_trials=300, n_resamples=50)["all"]
    assert r["verification_auc"]["value"] == 1.0
    assert r["verification_eer"]["value"] == 0.0
    for d in ("voice_to_face", "face_to_voice"):
        assert r[f"{d}_1of2"]["value"] == 1.0
        assert r[f"{d}_map"]["value"] == pytest.approx(1.0)
        assert all(r[f"{d}_1ofN"][str(n)] == 1.0 for n in range(2, 7))
        assert all(r[f"{d}_1ofN"][str(n)] is None for n in range(7, 11))  # only 6 identities


def test_random_embeddings_score_chance():
    # 30 identities x 8 items, 32-D Gaussian: by symmetry 1:2 accuracy is 1/2 in expectation.
    # 10000 trials: binomial std 0.005; trials share items, so allow 6 std (0.03).
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(30).astype(str), 8)
    voice, face = rng.normal(size=(240, 32)), rng.normal(size=(240, 32))
    r = evaluate_crossmodal(voice, labels, face, labels, n_trials=10000, n_resamples=20,
                            matching_sizes=(2, 10))["all"]
    assert r["voice_to_face_1of2"]["value"] == pytest.approx(0.5, abs=0.03)
    assert r["face_to_voice_1of2"]["value"] == pytest.approx(0.5, abs=0.03)
    assert r["voice_to_face_1ofN"]["10"] == pytest.approx(0.1, abs=0.03)
    assert r["verification_auc"]["value"] == pytest.approx(0.5, abs=0.03)
    assert r["verification_eer"]["value"] == pytest.approx(0.5, abs=0.03)
    # mAP of a random ranking with 8 relevant items out of 240 is about 8/240 plus a small bias
    assert r["voice_to_face_map"]["value"] < 0.1


def test_seen_and_unseen_identities_are_kept_apart():
    voice, face, labels = aligned(n_identities=12, per_identity=4)
    rng = np.random.default_rng(2)
    unseen = np.isin(labels, [f"id{k}" for k in range(6, 12)])
    voice[unseen] = rng.normal(size=(unseen.sum(), voice.shape[1]))  # unseen voices: no relation
    seen_ids = [f"id{k}" for k in range(6)]
    report = evaluate_crossmodal(voice, labels, face, labels, seen_identities=seen_ids,
                                 n_trials=2000, n_resamples=50, matching_sizes=(2,))
    assert report["seen"]["n_identities"] == 6 and report["unseen"]["n_identities"] == 6
    assert report["seen"]["voice_to_face_1of2"]["value"] == 1.0
    assert report["unseen"]["voice_to_face_1of2"]["value"] < 0.75
    assert report["all"]["n_identities"] == 12


def test_ties_share_credit_and_ap_hand_computed():
    sim = np.zeros((1, 3))
    assert matching_correct(sim, np.array([0]), np.array([[0, 1, 2]]))[0] == pytest.approx(1 / 3)
    # ranking: irrelevant, relevant, relevant -> AP = (1/2 + 2/3) / 2
    ap = average_precisions(np.array([[0.9, 0.8, 0.7]]), ["a"], ["b", "a", "a"])
    assert ap[0] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_matching_trials_have_distinct_identities():
    labels = np.repeat(list("abcdef"), 2)
    queries, gallery = matching_trials(labels, labels, 4, 50, seed=0)
    assert (labels[gallery[:, 0]] == labels[queries]).all()
    assert all(len(set(labels[row])) == 4 for row in gallery)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same space"):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="identities"):
        matching_trials(["a", "b"], ["a", "b"], 3, 10)
    with pytest.raises(ValueError, match="voice_labels"):
        evaluate_crossmodal(np.ones((3, 2)), ["a"], np.ones((3, 2)), ["a", "b", "c"])
