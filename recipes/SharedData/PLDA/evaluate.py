#!/usr/bin/env python3
"""Tune and compare VBx clustering and plain AHC on held-out speakers.

    python evaluate.py hparams/plda.yaml [--encoder=ecapa] [--plda_folder=DIR]

``plda_folder`` (default: the ``output_folder`` of ``train_plda.py``) selects the PLDA, e.g.
``--plda_folder=../../../xmodal_diar/pretrained/default/plda`` for the packaged one.

Run after ``train_plda.py`` (same YAML). Tuning: ``tuning_trials`` draws of
``tuning_speakers_per_trial`` speakers among the LibriSpeech train speakers that
``train_plda.py`` kept out of the PLDA, all the consecutive crops (``tuning_crop_min_s``..
``tuning_crop_max_s``, short turns as in broadcast speech) of their utterance;
the AHC threshold (:class:`~xmodal_diar.pipelines.turn_clustering.TurnClustering`, average
linkage) and VBx's (threshold, Fa, Fb)
(:class:`~xmodal_diar.pipelines.vbx_clustering.VBxTurnClustering`) maximise the mean
F-measure of purity and coverage over the trials. Report: the held-out speakers of
``librispeech/test-other-10x10`` (10 speakers x 10 utterances, never used above), whole
utterances and one crop per utterance of each length in ``test_crop_s``; and the reference turns
of the ami-debug development excerpts (overlap removed, at least ``dev_min_turn_s``), each file
clustered on its own: purity, coverage and the number of clusters. Writes ``output_folder/evaluation.json``.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_plda import (  # noqa: E402
    ami_items,
    embed_items,
    librispeech_items,
    librispeech_speakers,
    load_encoder,
    load_hparams,
    split_speakers,
)

from xmodal_diar.eval.clustering import purity_coverage  # noqa: E402
from xmodal_diar.pipelines.turn_clustering import TurnClustering  # noqa: E402
from xmodal_diar.pipelines.vbx_clustering import VBxTurnClustering, load_plda  # noqa: E402


def f_measure(purity: float, coverage: float) -> float:
    return 2 * purity * coverage / (purity + coverage)


def score(clustering, params: dict, embeddings: np.ndarray, labels: np.ndarray, trials: list[np.ndarray]) -> dict:
    """Mean purity, coverage, F-measure and |clusters - speakers| of ``clustering`` over the trials."""
    clustering.instantiate(params)
    rows = []
    for idx in trials:
        clusters = clustering(embeddings[idx])
        p, c = purity_coverage(labels[idx], clusters)
        rows.append((p, c, f_measure(p, c), len(np.unique(clusters)), len(np.unique(labels[idx]))))
    p, c, f, k, true_k = np.mean(rows, axis=0)
    count_error = float(np.mean([abs(r[3] - r[4]) for r in rows]))
    return {"purity": round(float(p), 4), "coverage": round(float(c), 4), "f_measure": round(float(f), 4),
            "clusters": round(float(k), 2), "speakers": round(float(true_k), 2), "count_error": round(count_error, 2)}


def tune(clustering, grid: dict, embeddings, labels, trials) -> tuple[dict, dict]:
    """Centre of the best plateau: among the grid points with the best mean F-measure, the one
    closest to their centroid in grid-index coordinates (ties are common on easy trials)."""
    points, results = [], []
    for index in itertools.product(*(range(len(v)) for v in grid.values())):
        params = {k: v[i] for (k, v), i in zip(grid.items(), index)}
        points.append(index)
        results.append((params, score(clustering, params, embeddings, labels, trials)))
    best = max(r["f_measure"] for _, r in results)
    tied = np.array([p for p, (_, r) in zip(points, results) if r["f_measure"] == best], dtype=float)
    scale = np.array([max(len(v) - 1, 1) for v in grid.values()], dtype=float)
    centre = np.argmin((((tied - tied.mean(axis=0)) / scale) ** 2).sum(axis=1))
    return results[points.index(tuple(int(i) for i in tied[centre]))]


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    hparams = load_hparams(argv)
    data, out = hparams["data_folder"], hparams["output_folder"]
    rng = np.random.default_rng(hparams["seed"] + 1)
    embed = None

    def lazy_embed(waveforms):
        nonlocal embed
        embed = embed or load_encoder(hparams["encoder"], hparams["batch_size"])
        return embed(waveforms)

    # tuning material: held-out train speakers, crops
    speakers = librispeech_speakers(data / hparams["librispeech_subset"])
    _, tuning = split_speakers(list(speakers), hparams["tuning_speakers"], hparams["seed"])
    items = librispeech_items(speakers, tuning, hparams["tuning_crop_min_s"], hparams["tuning_crop_max_s"], rng)
    x_tune, y_tune = embed_items(items, lazy_embed, out / "embeddings_tuning.npz")
    trials = []
    for _ in range(hparams["tuning_trials"]):
        chosen = rng.choice(tuning, size=hparams["tuning_speakers_per_trial"], replace=False)
        trials.append(rng.permutation(np.flatnonzero(np.isin(y_tune, chosen))))

    # report material: test-other-10x10, whole utterances and short crops
    test = librispeech_speakers(data / hparams["test_subset"])
    import soundfile

    whole, crops = [], {length: [] for length in hparams["test_crop_s"]}
    for speaker, files in sorted(test.items()):
        for path in files:
            duration = soundfile.info(str(path)).duration
            whole.append((speaker, path, 0.0, duration))
            for length in crops:
                start = float(rng.uniform(0.0, max(duration - length, 0.0)))
                crops[length].append((speaker, path, start, min(start + length, duration)))
    conditions = {"test-other-10x10 utterances": embed_items(whole, lazy_embed, out / "embeddings_test_whole.npz")}
    for length, items in crops.items():
        conditions[f"test-other-10x10 {length} s crops"] = embed_items(
            items, lazy_embed, out / f"embeddings_test_crops_{length}s.npz")
    dev = ami_items(data / hparams["ami_folder"], hparams["dev_rttm"], hparams["dev_list"], hparams["dev_min_turn_s"],
                    hparams["crop_max_s"], train_only=False)
    x_dev, y_dev = embed_items(dev, lazy_embed, out / "embeddings_ami_dev.npz")
    dev_files = np.array([path.stem for _, path, _, _ in dev])
    order = np.random.default_rng(hparams["seed"]).permutation(len(whole))

    ahc = TurnClustering()
    vbx = VBxTurnClustering(load_plda(hparams["plda_folder"] or out))
    ahc_params, ahc_tuning = tune(ahc, {"threshold": hparams["ahc_thresholds"], "method": ["average"]},
                                  x_tune, y_tune, trials)
    vbx_params, vbx_tuning = tune(vbx, {"threshold": hparams["vbx_thresholds"], "Fa": hparams["vbx_Fa"],
                                        "Fb": hparams["vbx_Fb"]}, x_tune, y_tune, trials)
    report = {"encoder": hparams["encoder"], "tuning": {"trials": len(trials), "ahc": [ahc_params, ahc_tuning],
                                                        "vbx": [vbx_params, vbx_tuning]}}
    for name, (x, y) in conditions.items():
        report[name] = {"ahc": score(ahc, ahc_params, x, y, [order]), "vbx": score(vbx, vbx_params, x, y, [order])}
    dev_trials = [np.flatnonzero(dev_files == uri) for uri in np.unique(dev_files)]
    report["ami-debug development reference turns (per file)"] = {
        "ahc": score(ahc, ahc_params, x_dev, y_dev, dev_trials), "vbx": score(vbx, vbx_params, x_dev, y_dev, dev_trials)}
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
