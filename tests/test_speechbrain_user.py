"""Written as a SpeechBrain 1.1 user would: recipe YAMLs load with plain hyperpyyaml and
command-line overrides (complete files, as in SpeechBrain's own recipes)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from xmodal_diar.training import CrossModalTerm, DisentanglementTerm

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# the training recipes (train.py + one YAML per method); PLDA's back-end recipe is checked below
YAMLS = sorted(p for p in RECIPES.glob("*/*/hparams/*.yaml") if (p.parent.parent / "train.py").is_file())
# knobs a method file may set differently from its siblings (everything else is shared)
METHOD_KNOBS = {"method", "two_crops", "speaker_weight", "n_segments", "segment_duration", "pretrained_encoder",
                "speaker_loss"}


def _placeholders(path: Path) -> dict:
    return {line.split(":", 1)[0]: "/nowhere" for line in path.read_text().splitlines() if "!PLACEHOLDER" in line}


def test_plda_recipe_yaml_loads_with_plain_hyperpyyaml_and_overrides():
    with open(RECIPES / "SharedData" / "PLDA" / "hparams" / "plda.yaml") as fin:
        h = load_hyperpyyaml(fin, overrides={"data_folder": "/my/data", "encoder": "ecapa"})
    assert h["data_folder"] == "/my/data" and h["output_folder"] == "results/plda_ecapa"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_yaml_loads_with_plain_hyperpyyaml_and_overrides(path):
    overrides = {**_placeholders(path), "data_folder": "/my/data", "seed": 7}
    assert "data_folder" in _placeholders(path)
    if "TristouNet" in path.read_text():
        overrides.update(emb_dim=4, lstm_hidden=4)
    with open(path) as fin:
        h = load_hyperpyyaml(fin, overrides=overrides)
    assert h["data_folder"] == "/my/data" and h["output_folder"] == f"results/{path.stem}/7"
    assert h["method"] == path.stem
    if "emb_dim" in overrides:
        assert h["encoder"].dimension == 4
    assert h["modules"]["encoder"] is h["encoder"]
    for term in (h.get("cross_modal_terms") or {}).values():
        assert isinstance(term, (CrossModalTerm, DisentanglementTerm))
    if h["speaker_loss"] == "aam":
        assert h["modules"]["classifier"] is h["classifier"]


def test_an_unknown_override_fails_as_in_speechbrain():
    with open(RECIPES / "SharedData/CrossModal/hparams/tet.yaml") as fin:
        with pytest.raises(KeyError, match="no_such_knob"):
            load_hyperpyyaml(fin, overrides={"data_folder": "x", "no_such_knob": 1})


@pytest.mark.parametrize("recipe", sorted({p.parent.parent for p in YAMLS}), ids=lambda p: p.parent.name)
def test_sibling_method_files_share_their_common_knobs(recipe):
    """Complete files repeat the shared knobs: a change to one file must reach its siblings."""
    from hyperpyyaml.core import resolve_references
    import ruamel.yaml

    scalars = {}
    for path in sorted((recipe / "hparams").glob("*.yaml")):
        with open(path) as fin:
            tree = ruamel.yaml.YAML().load(resolve_references(fin, _placeholders(path)))
        scalars[path.name] = {k: v for k, v in tree.items() if isinstance(v, (str, int, float, bool, type(None)))}
    for (a, ka), (b, kb) in combinations(scalars.items(), 2):
        differ = {k for k in set(ka) & set(kb) if ka[k] != kb[k] and k not in METHOD_KNOBS
                  and not str(ka[k]).startswith("results/")}
        assert not differ, f"{recipe.name}: {a} and {b} differ on shared knobs {sorted(differ)}"


# ---------------------------------------------------------------------- resume


class Killed(RuntimeError):
    pass


TINY = ["--number_of_epochs=2", "--batches_per_epoch=2", "--identities_per_batch=4", "--face_identities_per_batch=3",
        "--lstm_hidden=8", "--emb_dim=8", "--crop_max=1.5", "--max_librispeech_speakers=6", "--max_talking_heads=4"]


def test_resume_after_a_kill_continues_the_batch_order(tmp_path, shared_data, monkeypatch):
    """Kill after the first checkpoint, resume: epoch 2 draws the batches an uninterrupted run draws."""
    import importlib.util
    import os

    from xmodal_diar.training import CrossModalBrain, IdentityBatchSampler, run_recipe

    recipe = RECIPES / "SharedData" / "CrossModal"
    spec = importlib.util.spec_from_file_location("shared_data_train", recipe / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache = Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"

    drawn: list[list[list[int]]] = []
    iterate = IdentityBatchSampler.__iter__

    def recording(self):
        drawn.append([])
        for batch in iterate(self):
            drawn[-1].append(batch)
            yield batch

    monkeypatch.setattr(IdentityBatchSampler, "__iter__", recording)

    def run(output: str):
        argv = [str(recipe / "hparams" / "triplet.yaml"), f"--data_folder={shared_data}",
                f"--output_folder={tmp_path / output}", f"--manifest_folder={tmp_path / 'manifests'}",
                f"--face_cache={cache}", *TINY]
        run_recipe(argv, module.prepare)

    run("straight")
    straight, drawn[:] = list(drawn), []
    assert len(straight) == 2 and straight[0] != straight[1]

    end_stage = CrossModalBrain.on_stage_end

    def killed_after_the_first_checkpoint(self, stage, stage_loss, epoch=None):
        end_stage(self, stage, stage_loss, epoch)
        if epoch == 1 and stage.name == "VALID":
            raise Killed("killed after the checkpoint of epoch 1")

    monkeypatch.setattr(CrossModalBrain, "on_stage_end", killed_after_the_first_checkpoint)
    with pytest.raises(Killed):
        run("interrupted")
    monkeypatch.setattr(CrossModalBrain, "on_stage_end", end_stage)
    run("interrupted")  # the same command again resumes from the checkpoint
    assert drawn == straight
    log = (tmp_path / "interrupted" / "train_log.txt").read_text()
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1


# ---------------------------------------------------------------------- shipped threshold


def test_speaker_recognition_with_the_shipped_threshold(tmp_path, shared_data):
    """The recipe calibrates the EER threshold on held-out speakers (valid manifest) and ships
    it in hyperparams.yaml, where SpeakerRecognition exposes it."""
    import importlib.util
    import json
    import os

    from speechbrain.inference.speaker import SpeakerRecognition

    from xmodal_diar.training import read_manifest, run_recipe
    from xmodal_diar.training.dataio import load_turn

    recipe = RECIPES / "SharedData" / "CrossModal"
    spec = importlib.util.spec_from_file_location("shared_data_train_sr", recipe / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache = Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"
    out = tmp_path / "run"
    run_recipe([str(recipe / "hparams" / "triplet.yaml"), f"--data_folder={shared_data}", f"--output_folder={out}",
                f"--manifest_folder={tmp_path / 'manifests'}", f"--face_cache={cache}",
                *[o for o in TINY if "epochs" not in o], "--number_of_epochs=1"], module.prepare)

    model_dir = out / "model"
    record = json.loads((model_dir / "xmodal_diar.json").read_text())["verification"]
    assert record["manifest"] == "valid.csv" and record["n_target"] > 0 and record["n_nontarget"] > 0
    verifier = SpeakerRecognition.from_hparams(source=str(model_dir), savedir=str(tmp_path / "sb"))
    threshold = verifier.hparams.verification_threshold
    assert threshold == pytest.approx(record["threshold"], abs=1e-6) and threshold != 0.25

    # held-out turns through verify_batch with the shipped threshold
    rows = read_manifest(tmp_path / "manifests" / "valid.csv")
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row["spk_id"], []).append(row)
    speakers = sorted(s for s, r in by_speaker.items() if len(r) >= 2)[:4]
    pairs = [(by_speaker[s][0], by_speaker[s][1], True) for s in speakers]
    pairs += [(by_speaker[a][0], by_speaker[b][0], False) for a, b in combinations(speakers, 2)]
    wav = lambda r: load_turn(r["wav"], int(r["start"]), int(r["stop"]))  # noqa: E731
    scores = []
    for a, b, _ in pairs:
        score, decision = verifier.verify_batch(wav(a)[None], wav(b)[None], threshold=threshold)
        assert bool(decision) == bool(score > threshold)  # the rule the threshold was calibrated for
        scores.append(float(score))
    assert 0.0 <= record["eer"] <= 1.0 and min(scores) < max(scores)
    # the same calibration as a command, on an already exported model: one threshold line
    from xmodal_diar.training.calibration import main as calibrate

    assert calibrate([str(model_dir), str(tmp_path / "manifests" / "valid.csv")]) == 0
    text = (model_dir / "hyperparams.yaml").read_text()
    assert text.count("verification_threshold:") == 1
