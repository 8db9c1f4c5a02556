"""recipes/SharedData/Diarization/tune.py --write-from: the report of lowest train loss is
written into the model dir (config.yaml + tuning.json), and reports tuned on other files
are refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "SharedData" / "Diarization"))

import tune  # noqa: E402

from xmodal_diar.pipelines import DEFAULT_MODEL_DIR, load_pipeline  # noqa: E402


def report(step: float, threshold: float, train: float, files=("trn00", "conversation00")) -> dict:
    return {
        "command": "python recipes/SharedData/Diarization/tune.py ...",
        "tuning_files": list(files),
        "metric": "DER, collar 0, overlap scored (mean over the files)",
        "pipeline": {"embedding": "$model/pytorch_model.bin", "turns": "segmentation", "segmentation_step": step,
                     "max_embedding_duration": 4.0},
        "params": {"clustering": {"threshold": threshold, "refine": 2}, "segmentation": {"min_duration_off": 0.1}},
        "before": {"train": 0.5, "development": 0.5},
        "after": {"train": train, "development": 0.4},
    }


def test_write_from_picks_the_lowest_train_loss(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    paths = []
    for name, rep in {"a": report(1.0, 0.5, 0.30), "b": report(0.5, 0.4, 0.25), "c": report(0.5, 0.7, 0.28)}.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(rep))
    assert tune.main([str(model_dir), "--write-from", *map(str, paths)]) == 0
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert config["pipeline"]["params"]["segmentation_step"] == 0.5
    assert config["params"]["clustering"]["threshold"] == 0.4 and config["params"]["clustering"]["refine"] == 2
    tuning = json.loads((model_dir / "tuning.json").read_text())
    assert tuning["after"]["train"] == 0.25 and len(tuning["selected_by"]["candidates"]) == 3
    pipeline = load_pipeline(model_dir)
    assert pipeline.segmentation_step == 0.5 and pipeline.clustering.refine == 2

    other = tmp_path / "other.json"
    other.write_text(json.dumps(report(1.0, 0.5, 0.1, files=("dev00",))))
    with pytest.raises(SystemExit, match="other files"):
        tune.main([str(model_dir), "--write-from", str(paths[0]), str(other)])


def test_flat_train_loss_keeps_the_median_threshold_of_the_tied_range():
    """--flat: a 0.0008 lead of one threshold in a flat range is noise; the kept threshold is
    the middle of the tied range (real case: tuning/campplus_step1.json), else the lowest loss."""
    points = [
        {"clustering.threshold": t, "clustering.min_turn_duration": m, "der": d}
        for t, m, d in [(0.5, 0.5, 0.2936), (0.55, 0.5, 0.2904), (0.6, 0.5, 0.2904), (0.6, 1.0, 0.2910),
                        (0.65, 0.5, 0.2896), (0.7, 0.5, 0.2901), (0.75, 0.5, 0.2955)]
    ]
    keys = ["clustering.threshold", "clustering.min_turn_duration"]
    try:
        tune.FLAT["tolerance"] = 0.0
        assert tune.select(points, keys)["clustering.threshold"] == 0.65
        tune.FLAT["tolerance"] = 0.001
        kept = tune.select(points, keys)
        assert (kept["clustering.threshold"], kept["clustering.min_turn_duration"]) == (0.6, 0.5)
        tune.FLAT["tolerance"] = 0.00001
        assert tune.select(points, keys)["clustering.threshold"] == 0.65
    finally:
        tune.FLAT["tolerance"] = 0.0


def test_tuning_interviews_are_train_speakers_with_short_interjections(shared_data):
    """--interviews: the interview generator of the benchmark on LibriSpeech TRAIN speakers
    (never the held-out test-other speakers of the benchmark's interview case)."""
    train = {p.name.split("-")[0] for p in (shared_data / "librispeech" / "train-clean-100-1utt").glob("*.flac")}
    held_out = {p.name for p in (shared_data / "librispeech" / "test-other-10x10").iterdir() if p.is_dir()}
    files = tune.interview_conversations(2)
    assert [f["uri"] for f in files] == ["interview00", "interview01"]
    for file in files:
        reference = file["annotation"]
        assert len(reference.labels()) == 3 and set(reference.labels()) <= train - held_out
        turns = [segment.duration for segment in reference.itersegments()]
        assert len(turns) == 16  # 4 rounds: question, answer, interjection, rest of the answer
        assert sum(0.55 < d < 1.55 for d in turns) >= 4  # the interjections
        assert file["waveform"].shape[1] / 16000 == pytest.approx(file["annotated"].duration())

