"""Verification metrics on hand-computed score sets, trial lists, AS-norm, crops, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmodal_diar.eval.bootstrap import speaker_bootstrap
from xmodal_diar.eval.embedders import middle_crop
from xmodal_diar.eval.verification import (
    Trials,
    all_trials,
    as_norm,
    balanced_trials,
    cosine_scores,
    det_curve,
    equal_error_rate,
    min_dcf,
    trial_weights,
    verification_report,
)


def scored(targets, nontargets):
    scores = np.array([*targets, *nontargets], dtype=float)
    target = np.array([True] * len(targets) + [False] * len(nontargets))
    return scores, target


def test_eer_exact_crossing():
    # DET points (fa, miss): (0,1) (0,2/3) (0,1/3) (1/3,1/3): crossing at 1/3.
    s, t = scored([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    assert equal_error_rate(s, t) == pytest.approx(1 / 3)


def test_eer_interpolated_on_tied_scores():
    # A target and a non-target tie at 0.5: the DET segment (0, .5) -> (.5, 0) crosses at .25.
    s, t = scored([0.9, 0.5], [0.5, 0.1])
    assert equal_error_rate(s, t) == pytest.approx(0.25)


def test_eer_perfect_and_inverted():
    s, t = scored([0.9, 0.8], [0.2, 0.1])
    assert equal_error_rate(s, t) == 0.0
    s, t = scored([0.1, 0.2], [0.8, 0.9])
    assert equal_error_rate(s, t) == 1.0


def test_min_dcf_hand_computed():
    # 3 targets, 200 non-targets with one at 0.85: at threshold 0.3, miss 0 and fa 1/200.
    # normalised cost = miss + (1-p)/p * fa: p=.05 -> 19/200 = .095; p=.01 -> min(99/200, 2/3) = .495
    s, t = scored([0.9, 0.8, 0.3], [0.85] + [0.0] * 199)
    assert min_dcf(s, t, p_target=0.05) == pytest.approx(0.095)
    assert min_dcf(s, t, p_target=0.01) == pytest.approx(0.495)
    # a useless system costs at most the best trivial one (normalised 1)
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    t = rng.random(400) < 0.3
    assert 0.8 < min_dcf(s, t, 0.01) <= 1.0


def test_weights_equal_duplicated_trials():
    s, t = scored([0.9, 0.6, 0.3], [0.7, 0.4, 0.1])
    w = np.array([2, 1, 1, 1, 3, 1], dtype=float)
    s_dup, t_dup = np.repeat(s, w.astype(int)), np.repeat(t, w.astype(int))
    assert equal_error_rate(s, t, weights=w) == pytest.approx(equal_error_rate(s_dup, t_dup))
    assert min_dcf(s, t, 0.05, weights=w) == pytest.approx(min_dcf(s_dup, t_dup, 0.05))


def test_det_curve_goes_from_reject_all_to_accept_all():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=50), rng.random(50) < 0.5
    c = det_curve(s, t)
    assert (c.false_alarm[0], c.miss[0]) == (0.0, 1.0)
    assert (c.false_alarm[-1], c.miss[-1]) == (1.0, 0.0)
    assert (np.diff(c.false_alarm) >= 0).all() and (np.diff(c.miss) <= 0).all()


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="non-target"):
        equal_error_rate(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate(np.array([np.nan, 0.2]), np.array([True, False]))
    with pytest.raises(ValueError, match="p_target"):
        min_dcf(np.array([0.1, 0.2]), np.array([True, False]), p_target=1.5)


def test_all_trials_counts():
    labels = ["a", "a", "b", "b", "b"]
    trials = all_trials(labels)
    assert len(trials) == 10
    assert trials.n_target == 1 + 3
    assert (trials.enrol < trials.test).all()


def test_balanced_trials_are_seeded_and_balanced():
    labels = np.repeat(["a", "b", "c", "d"], 6)
    t1, t2 = balanced_trials(labels, 4, seed=3), balanced_trials(labels, 4, seed=3)
    assert np.array_equal(t1.enrol, t2.enrol) and np.array_equal(t1.test, t2.test)
    assert np.array_equal(t1.target, labels[t1.enrol] == labels[t1.test])
    assert t1.n_target == 16  # 4 per speaker, distinct pairs
    assert 12 <= t1.n_nontarget <= 16  # 4 per speaker, minus duplicates
    assert not np.array_equal(balanced_trials(labels, 4, seed=4).enrol, t1.enrol)


def test_cosine_scores_and_zero_embedding_error():
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    trials = all_trials(["a", "a", "b"])
    assert cosine_scores(x, trials) == pytest.approx([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="all-zero"):
        cosine_scores(np.array([[0.0, 0.0], [1.0, 0.0]]), all_trials(["a", "b"]))


def test_as_norm_hand_computed():
    # both embeddings score {1, 1/sqrt2, 0} against the cohort: top-2 mean (1+1/sqrt2)/2,
    # std (1-1/sqrt2)/2, so a score of 0 becomes -(1+1/sqrt2)/(1-1/sqrt2) = -(3+2 sqrt2).
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    cohort = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    trials = Trials(np.array([0]), np.array([1]), np.array([False]))
    out = as_norm(x, trials, cosine_scores(x, trials), cohort, top_k=2)
    assert out[0] == pytest.approx(-(3 + 2 * math.sqrt(2)))


def test_middle_crop():
    w = torch.arange(10.0)
    assert middle_crop(w, 0.4, sample_rate=10).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert middle_crop(w, 1.1, sample_rate=10) is None


def _synthetic_speakers(n_speakers, per_speaker=6, dim=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_speakers, dim))
    x = np.repeat(centres, per_speaker, axis=0) + noise * rng.normal(size=(n_speakers * per_speaker, dim))
    return x, np.repeat(np.arange(n_speakers), per_speaker)


def test_bootstrap_contains_estimate_and_shrinks_with_more_speakers():
    widths = []
    for n in (5, 60):
        x, labels = _synthetic_speakers(n)
        trials = all_trials(labels)
        scores = cosine_scores(x, trials)

        def stat(counts, trials=trials, scores=scores, labels=labels):
            return equal_error_rate(scores, trials.target, weights=trial_weights(trials, labels, counts))

        ci = speaker_bootstrap(stat, np.unique(labels).tolist(), n_resamples=200, seed=0)
        assert ci.estimate == pytest.approx(equal_error_rate(scores, trials.target))
        assert ci.estimate in ci
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded():
    values = {s: v for s, v in zip("abcdefgh", [0.1, 0.5, 0.2, 0.9, 0.4, 0.3, 0.8, 0.6])}

    def mean(counts):
        n = sum(counts.values())
        return sum(values[s] * c for s, c in counts.items()) / n

    a = speaker_bootstrap(mean, list(values), n_resamples=100, seed=1)
    b = speaker_bootstrap(mean, list(values), n_resamples=100, seed=1)
    assert (a.low, a.high) == (b.low, b.high)
    assert a.estimate == pytest.approx(np.mean(list(values.values())))


def test_verification_report_separable_speakers():
    x, labels = _synthetic_speakers(6, noise=0.05)
    figures, result = verification_report(x, labels, n_resamples=50)
    assert figures["eer"]["value"] == 0.0
    assert figures["n_trials"] == 36 * 35 // 2
    assert figures["n_target"] == 6 * 15
    assert result.min_dcf[0.01] == 0.0


def test_eer_and_min_dcf_agree_with_speechbrain(librispeech_test):
    """Same figures as ``speechbrain.utils.metric_stats.EER`` / ``minDCF`` on real scores
    (the embedded model on 0.5 s crops of held-out LibriSpeech speakers: longer crops are
    separated perfectly, EER 0)."""
    import torch
    from speechbrain.utils.metric_stats import EER, minDCF

    from xmodal_diar.adapters.pyannote import TurnEmbeddingModel
    from xmodal_diar.audio import load_audio
    from xmodal_diar.pipelines import DEFAULT_MODEL_DIR

    model = TurnEmbeddingModel.from_speechbrain(DEFAULT_MODEL_DIR)
    files = [f for spk in sorted(p for p in librispeech_test.iterdir() if p.is_dir())[:5]
             for f in sorted(spk.glob("*.flac"))[:5]]
    with torch.inference_mode():
        x = np.stack([model(load_audio(f, start=0.0, end=0.5)[None, None])[0].numpy() for f in files])
    labels = [f.parent.name for f in files]
    trials = all_trials(labels)
    s = cosine_scores(x, trials)
    pos, neg = torch.as_tensor(s[trials.target]), torch.as_tensor(s[~trials.target])
    sb_eer, _ = EER(pos, neg)
    step = 1.0 / min(trials.n_target, trials.n_nontarget)
    assert 0.0 < equal_error_rate(s, trials.target) < 0.5
    assert abs(equal_error_rate(s, trials.target) - sb_eer) <= step
    for p in (0.01, 0.05):
        sb_dcf, _ = minDCF(pos, neg, p_target=p)
        assert min_dcf(s, trials.target, p_target=p) == pytest.approx(sb_dcf / min(p, 1 - p), abs=1e-6)
