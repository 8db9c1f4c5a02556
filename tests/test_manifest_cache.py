"""The manifest cache is keyed on the options the manifests were built with."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from xmodal_diar.training.manifests import prepare_once, read_manifest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_prepare_once_rebuilds_when_options_change(tmp_path):
    built = []

    def build(tag):
        def run():
            built.append(tag)
            (tmp_path / "train.csv").write_text(tag)
        return run

    assert prepare_once(tmp_path, ("train",), {"max_files": None}, build("a"))
    assert not prepare_once(tmp_path, ("train",), {"max_files": None}, build("b"))  # same options: cached
    assert prepare_once(tmp_path, ("train",), {"max_files": 10}, build("c"))  # new option value: rebuilt
    (tmp_path / "train.csv").unlink()
    assert prepare_once(tmp_path, ("train",), {"max_files": 10}, build("d"))  # file gone: rebuilt
    assert built == ["a", "c", "d"] and (tmp_path / "train.csv").read_text() == "d"
    assert (tmp_path / "train.options.json").is_file()


def test_shared_data_recipe_honours_a_new_max_option(tmp_path, shared_data):
    spec = importlib.util.spec_from_file_location("shared_train_cache", RECIPES / "SharedData/CrossModal/train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache = Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"
    hparams = dict(data_folder=str(shared_data), manifest_folder=str(tmp_path), face_cache=str(cache), max_turn=3.0,
                   max_librispeech_speakers=3, max_talking_heads=2)

    def speakers():
        return {r["spk_id"] for r in read_manifest(tmp_path / "train.csv")}

    module.prepare(hparams)
    few = speakers()
    module.prepare({**hparams, "max_librispeech_speakers": 5})
    assert len(speakers()) > len(few)
