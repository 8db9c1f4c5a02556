"""The Broadcast and VoxCeleb recipes on miniatures built from the shared data: a folder of
real talking-head videos + an RTTM (faces paired to turns), and a VoxCeleb layout of real
LibriSpeech files (one tiny epoch each, through the recipes' own train.py ``prepare``)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from xmodal_diar.audio import audio_info
from xmodal_diar.training import run_recipe
from xmodal_diar.training.manifests import ManifestError, prepare_voxceleb, read_manifest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TINY = ["--number_of_epochs=1", "--batches_per_epoch=2", "--identities_per_batch=3", "--face_identities_per_batch=3",
        "--crop_max=1.5"]


def _face_cache() -> Path:
    return Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"


def _prepare_of(recipe: str):
    spec = importlib.util.spec_from_file_location(f"train_{recipe.replace('/', '_')}", RECIPES / recipe / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare


def test_broadcast_recipe_on_talking_head_videos_with_rttm(tmp_path, talking_heads):
    videos = tmp_path / "videos"
    videos.mkdir()
    clips = {"00002": "th01", "517600055": "th01", "00010": "th02", "00015": "th03"}
    lines = []
    for clip, identity in clips.items():
        (videos / f"{clip}.mp4").symlink_to(talking_heads / f"{clip}.mp4")
        duration = audio_info(talking_heads / f"{clip}.mp4").duration
        lines.append(f"SPEAKER {clip} 1 0.000 {duration:.3f} <NA> <NA> {identity} <NA> <NA>")
    rttm = tmp_path / "train.rttm"
    rttm.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    argv = [str(RECIPES / "Broadcast/CrossModal/hparams/tet.yaml"), f"--data_folder={videos}", f"--train_rttm={rttm}",
            f"--output_folder={out}", f"--manifest_folder={tmp_path / 'manifests'}", f"--face_cache={_face_cache()}",
            "--lstm_hidden=8", "--emb_dim=8", "--n_speakers=10", *TINY]
    run_recipe(argv, _prepare_of("Broadcast/CrossModal"))
    rows = read_manifest(tmp_path / "manifests" / "train.csv", face_dim=128)
    assert {r["spk_id"] for r in rows} == {"th01", "th02", "th03"}
    assert all(r["face"] is not None for r in rows)  # one person on screen, speaking: every turn paired
    log = (out / "train_log.txt").read_text()
    assert "train tet:" in log and (out / "model" / "embedding_model.ckpt").is_file()


def test_voxceleb_recipe_on_a_miniature_layout(tmp_path, librispeech_test):
    wav = tmp_path / "wav"
    for spk in sorted(p for p in librispeech_test.iterdir() if p.is_dir())[:3]:
        for k, flac in enumerate(sorted(spk.glob("*.flac"))[:2]):
            target = wav / f"id{spk.name}" / "vid00" / f"{k:05d}.flac"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(flac)
    out = tmp_path / "run"
    encoder = ("!new:xmodal_diar.models.ECAPATurnEncoder {n_mels: 40, channels: [16, 16, 16, 16, 48], "
               "attention_channels: 8, se_channels: 8, dimension: 8}")
    argv = [str(RECIPES / "VoxCeleb/CrossModal/hparams/aam.yaml"), f"--data_folder={wav}", f"--output_folder={out}",
            f"--manifest_folder={tmp_path / 'manifests'}", f"--encoder={encoder}", "--emb_dim=8", "--n_speakers=3",
            "--face_identities_per_batch=0", *[o for o in TINY if "face_identities" not in o]]
    run_recipe(argv, _prepare_of("VoxCeleb/CrossModal"))
    rows = read_manifest(tmp_path / "manifests" / "train.csv")
    assert {r["spk_id"] for r in rows} == {p.parent.parent.name for p in wav.rglob("*.flac")}
    assert "train speaker:" in (out / "train_log.txt").read_text()
    assert (out / "save" / "encoder.json").read_text().count('"ecapa"') == 1


def test_voxceleb_layout_errors(tmp_path):
    (tmp_path / "wav").mkdir()
    with pytest.raises(ManifestError, match="no .wav/.m4a file"):
        prepare_voxceleb([tmp_path / "wav"], tmp_path / "out")
    with pytest.raises(ManifestError, match="no such folder"):
        prepare_voxceleb([tmp_path / "absent"], tmp_path / "out")
