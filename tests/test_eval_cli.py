"""``xmodal-diar evaluate ...`` on real shared data, and the embedders it loads."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from xmodal_diar.audio import load_audio
from xmodal_diar.cli import main
from xmodal_diar.eval.embedders import (
    MFCCStatsEmbedder,
    PrecomputedEmbeddings,
    SpeechBrainEmbedder,
    list_utterances,
    load_embedder,
)

SPEAKERS = 3


@pytest.fixture(scope="module")
def manifest(librispeech_test, tmp_path_factory):
    """SpeechBrain CSV manifest of the first 3 speakers of test-other-10x10 (absolute paths)."""
    path = tmp_path_factory.mktemp("manifest") / "test3.csv"
    speakers = sorted(p.name for p in librispeech_test.iterdir() if p.is_dir())[:SPEAKERS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "start", "stop", "spk_id"])
        for spk in speakers:
            for wav in sorted((librispeech_test / spk).glob("*.flac")):
                writer.writerow([wav.stem, "", str(wav), "", "", spk])
    return path


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verification_cli_report(manifest, tmp_path, capsys):
    out = tmp_path / "ver"
    rc = main(["evaluate", "verification", str(manifest), "--embedder", "mfcc", "--durations", "2",
               "--no-natural", "--bootstrap", "50", "--seed", "7", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "verification.json").read_text())
    assert report["task"] == "verification" and report["seed"] == 7
    assert report["model"].startswith("mfcc-stats")
    assert report["data"].endswith("test3.csv") and report["trials"] == "all pairs"
    assert report["n_speakers"] == SPEAKERS
    r = report["results"]["2s"]
    n = r["n_utterances"]
    assert n + r["n_skipped"] == report["n_utterances"]
    assert r["n_trials"] == n * (n - 1) // 2 and r["n_target"] + r["n_nontarget"] == r["n_trials"]
    eer = r["eer"]
    assert 0.0 < eer["value"] < 0.5  # better than chance, not perfect on 2 s MFCC stats
    assert eer["ci"][0] <= eer["value"] <= eer["ci"][1]
    assert 0.0 < r["min_dcf_0.01"]["value"] <= 1.0 and 0.0 < r["min_dcf_0.05"]["value"] <= 1.0
    assert _is_png(out / "det.png")
    printed = capsys.readouterr().out
    assert "2s" in printed and f"{100 * eer['value']:.2f}" in printed


def test_clustering_cli_report(manifest, tmp_path):
    out = tmp_path / "clu"
    rc = main(["evaluate", "clustering", str(manifest), "--embedder", "mfcc", "--durations", "2",
               "--no-natural", "--bootstrap", "50", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "clustering.json").read_text())
    r = report["results"]["2s"]
    assert r["n_speakers"] == SPEAKERS
    for key in ("purity", "coverage", "oracle_purity", "oracle_coverage"):
        assert 1 / SPEAKERS <= r[key]["value"] <= 1.0
        assert r[key]["ci"][0] <= r[key]["value"] <= r[key]["ci"][1]
    assert 1 <= r["n_clusters"] <= r["n_turns"]
    assert _is_png(out / "purity_coverage.png")


def test_diarization_shorthand_and_protocol(ami_debug, tmp_path, capsys):
    ref, uem = ami_debug / "debug.development.rttm", ami_debug / "debug.development.uem"
    # `evaluate --reference` is rewritten to `evaluate diarization --reference`
    assert main(["evaluate", "--reference", str(ref), "--hypothesis", str(ref), "--uem", str(uem)]) == 0
    printed = capsys.readouterr().out
    total = next(line for line in printed.splitlines() if line.startswith("TOTAL")).split()
    assert [float(v) for v in total[1:7]] == [0.0] * 6  # DER (2 settings), FA, miss, confusion, JER
    hyp_dir = tmp_path / "hyp"
    hyp_dir.mkdir()
    shutil.copy(ref, hyp_dir / "dev.rttm")
    rc = main(["evaluate", "diarization", "--protocol", "Debug.SpeakerDiarization.Debug", "--database",
               str(ami_debug / "database.yml"), "--subset", "development", "--hypothesis", str(hyp_dir),
               "--collar", "0.5", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "diarization.json").read_text())
    assert set(report["per_file"]) == {"dev00", "dev01"}
    assert report["settings"]["user"] == {"collar": 0.5, "skip_overlap": False}
    assert report["total"]["der_full"]["value"] == 0.0 and report["total"]["jer"]["value"] == 0.0


def test_crossmodal_cli_report(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([f"id{k}" for k in range(5)], 4)
    centres = rng.normal(size=(5, 16))
    np.savez(tmp_path / "voice.npz", embeddings=np.repeat(centres, 4, 0) + 0.01 * rng.normal(size=(20, 16)), labels=labels)
    np.savez(tmp_path / "face.npz", embeddings=np.repeat(centres, 4, 0), labels=labels)
    (tmp_path / "seen.txt").write_text("id0\nid1\nid2\n")
    rc = main(["evaluate", "crossmodal", "--voice", str(tmp_path / "voice.npz"), "--face", str(tmp_path / "face.npz"),
               "--seen", str(tmp_path / "seen.txt"), "--trials", "200", "--bootstrap", "20", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "crossmodal.json").read_text())
    assert report["n_trials"] == 200 and report["seed"] == 0
    assert set(report["results"]) == {"all", "seen", "unseen"}
    assert report["results"]["seen"]["voice_to_face_1of2"]["value"] == 1.0
    assert report["results"]["unseen"]["n_identities"] == 2


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["evaluate", "verification", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"")
    np.savez(tmp_path / "bad.npz", embeddings=np.ones((2, 2)))
    assert main(["evaluate", "crossmodal", "--voice", str(tmp_path / "bad.npz"), "--face",
                 str(tmp_path / "bad.npz"), "--out", str(tmp_path)]) == 1
    assert "labels" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--embedder"):
        load_embedder(str(tmp_path / "nowhere"))


def test_precomputed_embeddings_match_by_id(librispeech_test, tmp_path):
    utterances = list_utterances(librispeech_test)
    assert len(utterances) == 100 and utterances[0].speaker == utterances[0].path.parent.name
    ids = [u.id for u in utterances[:4]]
    emb = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.savez(tmp_path / "e.npz", ids=np.array(ids[::-1]), embeddings=emb[::-1])
    pre = PrecomputedEmbeddings(tmp_path / "e.npz")
    assert np.array_equal(pre.lookup(ids), emb)
    with pytest.raises(ValueError, match="no embedding"):
        pre.lookup(["nobody/none"])


def test_mfcc_embedder_ignores_padding(librispeech_test):
    wav = load_audio(sorted(librispeech_test.glob("*/*.flac"))[0])
    short, long = wav[:16000], wav[:48000]
    emb = MFCCStatsEmbedder(progress=False)
    together = emb.embed([short, long])
    alone = emb.embed([short])
    assert together.shape == (2, 38)
    assert np.allclose(together[0], alone[0], atol=1e-4)  # batched with a longer one = alone
    assert not np.allclose(together[0], together[1], atol=1e-2)


HYPERPARAMS = """\
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 24
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: 24
    tdnn_channels: [32, 32, 32, 32, 64]
    lin_neurons: 16
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""


def test_speechbrain_model_dir_embedder(librispeech_test, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "hyperparams.yaml").write_text(HYPERPARAMS)
    torch.manual_seed(0)
    hp = load_hyperpyyaml(HYPERPARAMS)
    torch.save(hp["embedding_model"].state_dict(), model_dir / "embedding_model.ckpt")
    wav = load_audio(sorted(librispeech_test.glob("*/*.flac"))[0])[:24000]
    embedder = load_embedder(str(model_dir))
    assert isinstance(embedder, SpeechBrainEmbedder)
    got = embedder.embed([wav, wav[:16000]])
    with torch.no_grad():
        hp["embedding_model"].eval()
        feats = hp["mean_var_norm"](hp["compute_features"](wav[None]), torch.ones(1))
        expected = hp["embedding_model"](feats).reshape(-1).numpy()
    assert got.shape == (2, 16)
    assert np.abs(got[0] - expected).max() < 1e-4
