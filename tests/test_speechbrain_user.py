"""Written as a SpeechBrain 1.1 user would: recipe YAMLs load with plain hyperpyyaml and
command-line overrides (complete files, as in SpeechBrain's own recipes)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from xmodal_diar.training import CrossModalTerm, DisentanglementTerm

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
YAMLS = sorted(RECIPES.glob("*/*/hparams/*.yaml"))
# knobs a method file may set differently from its siblings (everything else is shared)
METHOD_KNOBS = {"method", "two_crops", "speaker_weight", "n_segments", "segment_duration", "pretrained_encoder",
                "speaker_loss"}


def _placeholders(path: Path) -> dict:
    return {line.split(":", 1)[0]: "/nowhere" for line in path.read_text().splitlines() if "!PLACEHOLDER" in line}


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
