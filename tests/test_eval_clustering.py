"""Turn clustering: purity / coverage agree with pyannote.metrics, threshold sweep, oracle cut."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.metrics.diarization import DiarizationCoverage, DiarizationPurity

from xmodal_diar.eval.clustering import (
    dominance,
    clustering_report,
    evaluate_clustering,
    linkage_matrix,
    purity_coverage,
    threshold_sweep,
    turns_as_annotations,
)


def test_purity_coverage_hand_computed():
    labels, clusters = ["a", "a", "b", "b"], [1, 1, 1, 2]
    assert purity_coverage(labels, clusters) == pytest.approx((3 / 4, 3 / 4))
    # durations 1,1,4,1: cluster 1 holds a=2, b=4; cluster 2 holds b=1.
    assert purity_coverage(labels, clusters, np.array([1, 1, 4, 1.0])) == pytest.approx((5 / 7, 6 / 7))


@pytest.mark.parametrize("seed", range(5))
def test_purity_coverage_agree_with_pyannote_metrics(seed):
    rng = np.random.default_rng(seed)
    n = 40
    labels = rng.choice(["spk1", "spk2", "spk3", "spk4"], size=n)
    clusters = rng.integers(0, 1 + seed + 2, size=n)
    durations = rng.uniform(0.3, 5.0, size=n).round(3)
    reference, hypothesis = turns_as_annotations(labels, clusters, durations)
    purity, coverage = purity_coverage(labels, clusters, durations)
    assert purity == pytest.approx(DiarizationPurity()(reference, hypothesis), abs=1e-9)
    assert coverage == pytest.approx(DiarizationCoverage()(reference, hypothesis), abs=1e-9)
    assert purity < 1.0  # a random partition is not pure: the comparison is not trivial


def _speakers(n_speakers=4, per_speaker=5, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_speakers, 8))
    x = np.repeat(centres, per_speaker, axis=0) + noise * rng.normal(size=(n_speakers * per_speaker, 8))
    return x, np.repeat([f"s{k}" for k in range(n_speakers)], per_speaker)


def test_threshold_sweep_goes_from_pure_to_covering():
    x, labels = _speakers(noise=0.8)
    curve = threshold_sweep(linkage_matrix(x, "average"), labels)
    assert curve.purity[0] == 1.0 and curve.n_clusters[0] == len(labels)
    assert curve.coverage[-1] == 1.0 and curve.n_clusters[-1] == 1
    # nested partitions: purity never increases, coverage never decreases
    assert (np.diff(curve.purity) <= 1e-12).all()
    assert (np.diff(curve.coverage) >= -1e-12).all()
    k = curve.operating_point()
    gap = np.abs(curve.purity - curve.coverage)
    assert gap[k] == gap.min()


@pytest.mark.parametrize("method", ["average", "centroid"])
def test_separable_speakers_are_recovered(method):
    x, labels = _speakers()
    result = evaluate_clustering(x, labels, method=method)
    assert (result.purity, result.coverage) == (1.0, 1.0)
    assert result.n_clusters == 4
    assert (result.oracle_purity, result.oracle_coverage) == (1.0, 1.0)


def test_noisy_speakers_are_imperfect_and_report_has_intervals():
    x, labels = _speakers(noise=1.5, seed=2)
    figures, result = clustering_report(x, labels, n_resamples=100)
    assert 0.25 < figures["purity"]["value"] < 1.0
    assert abs(figures["purity"]["value"] - figures["coverage"]["value"]) < 0.2
    lo, hi = figures["purity"]["ci"]
    assert lo <= figures["purity"]["value"] <= hi
    assert figures["n_speakers"] == 4 and figures["n_turns"] == 20


def test_bad_input_raises():
    with pytest.raises(ValueError, match="method"):
        linkage_matrix(np.ones((3, 2)), "ward")
    with pytest.raises(ValueError, match="all-zero"):
        linkage_matrix(np.array([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="labels"):
        evaluate_clustering(np.eye(3), ["a", "b"])


def test_dominance_means_are_purity_and_coverage():
    rng = np.random.default_rng(4)
    labels = rng.choice(list("abcde"), size=60)
    clusters = rng.integers(0, 4, size=60)
    durations = rng.uniform(0.5, 3.0, size=60)
    pure, covered = dominance(labels, clusters, durations)
    purity, coverage = purity_coverage(labels, clusters, durations)
    assert np.average(pure, weights=durations) == pytest.approx(purity)
    assert np.average(covered, weights=durations) == pytest.approx(coverage)


def test_bootstrap_interval_contains_impure_estimate():
    # Many speakers, few clusters: re-deciding cluster majorities on resampled speakers would
    # inflate purity (fewer distinct speakers); with dominance fixed the interval covers it.
    x, labels = _speakers(n_speakers=10, per_speaker=8, noise=3.0, seed=5)
    figures, _ = clustering_report(x, labels, n_resamples=200)
    for key in ("purity", "coverage", "oracle_purity", "oracle_coverage"):
        lo, hi = figures[key]["ci"]
        assert lo <= figures[key]["value"] <= hi, key
