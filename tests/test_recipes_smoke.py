"""CI smoke test of the SharedData cross-modal recipe: every YAML trains one tiny epoch on
real shared data (few speakers, talking-heads with real faces), exports, and the export
loads with SpeechBrain's EncoderClassifier; resume, augmentation, pre-trained
initialisation, the export CLI and DDP (torchrun, gloo, 2 CPU processes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xmodal_diar.training import load_checkpoint_encoder, run_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "SharedData" / "CrossModal"
TINY = [
    "--number_of_epochs=1", "--batches_per_epoch=2", "--identities_per_batch=4", "--face_identities_per_batch=3",
    "--lstm_hidden=8", "--emb_dim=8", "--crop_max=1.5", "--max_librispeech_speakers=6", "--max_talking_heads=4",
]
METHODS = ["triplet", "aam", "tet", "rdt", "cst", "mmd", "joint", "mkd_qaw", "disentangle", "moco"]


def _face_cache() -> Path:
    return Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data):
    return tmp_path_factory.mktemp("recipe")


def train(workdir: Path, shared_data: Path, method: str, *extra: str, output: str | None = None):
    out = workdir / (output or method)
    options = [f"--data_folder={shared_data}", f"--output_folder={out}", f"--manifest_folder={workdir / 'manifests'}",
               f"--face_cache={_face_cache()}", *TINY, *extra]
    by_key = {o.split("=", 1)[0]: o for o in options}  # later options win, as on a command line
    argv = [str(RECIPE / "hparams" / f"{method}.yaml"), *by_key.values()]
    sys.path.insert(0, str(RECIPE))
    try:
        from train import prepare  # the recipe's own data preparation
    finally:
        sys.path.pop(0)
    brain = run_recipe(argv, prepare)
    return brain, out


def logged(out: Path) -> str:
    return (out / "train_log.txt").read_text()


@pytest.mark.parametrize("method", METHODS)
def test_every_yaml_trains_one_epoch_and_exports(workdir, shared_data, method):
    brain, out = train(workdir, shared_data, method)
    log = logged(out)
    assert "epoch: 1" in log
    loss = float(re.search(r"train loss: ([-0-9.e+]+)", log).group(1))
    assert loss == loss and abs(loss) < 1e4  # finite
    terms = {"tet": "tet", "rdt": "rdt", "cst": "cst", "mmd": "mmd", "joint": "joint", "mkd_qaw": "mkd",
             "disentangle": "disentangle", "moco": "moco"}
    if method in terms:  # the face/contrastive term ran and was non-zero on real faces
        value = float(re.search(rf"train {terms[method]}: ([-0-9.e+]+)", log).group(1))
        assert value > 0
    assert (out / "model" / "hyperparams.yaml").is_file() and (out / "model" / "embedding_model.ckpt").is_file()
    assert (out / "save" / "encoder.json").is_file()
    if method == "moco":  # MoCo's queue and key encoder are checkpointed with the Brain
        ckpt, = (out / "save").glob("CKPT+*")
        assert (ckpt / "moco.ckpt").is_file()


def test_moco_finetune_starts_from_the_moco_export(workdir, shared_data):
    moco = workdir / "moco" / "model"
    if not moco.is_dir():
        train(workdir, shared_data, "moco")
    _, out = train(workdir, shared_data, "moco_finetune", f"--pretrained_encoder={moco}", "--lr=0.0")
    pretrained = torch.load(moco / "embedding_model.ckpt")
    finetuned = torch.load(out / "model" / "embedding_model.ckpt")
    assert pretrained.keys() == finetuned.keys()
    assert all(torch.equal(pretrained[k], finetuned[k]) for k in pretrained)  # lr 0: exactly the MoCo weights
    assert (out / "save" / "pretrained" / "embedding_model.ckpt").exists()  # collected by Pretrainer


def test_finetune_from_a_speechbrain_model_dir_written_here(workdir, shared_data):
    """The pretrained_encoder option on a SpeechBrain directory the test writes itself."""
    from xmodal_diar.adapters.speechbrain import export_speechbrain
    from xmodal_diar.models import TristouNet

    torch.manual_seed(123)
    source = export_speechbrain(TristouNet(lstm_hidden=8, dense=[8], dimension=8), workdir / "sb_source")
    before = torch.load(source / "embedding_model.ckpt")
    _, out = train(workdir, shared_data, "tet", f"--pretrained_encoder={source}", output="tet_finetune")
    after = torch.load(out / "model" / "embedding_model.ckpt")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # it trained ...
    drift = max((before[k] - after[k]).abs().max().item() for k in before)
    assert drift < 0.05  # ... starting from the given weights (2 Adam steps of lr 2e-3)


def test_resume_continues_from_the_checkpoint(workdir, shared_data):
    _, out = train(workdir, shared_data, "triplet", output="resume")
    _, out = train(workdir, shared_data, "triplet", "--number_of_epochs=2", output="resume")
    log = logged(out)
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1


def test_waveform_augmentation_option(workdir, shared_data):
    brain, out = train(workdir, shared_data, "triplet", "--wav_augment=!ref <augmenter>", output="augment")
    assert brain.hparams.wav_augment is brain.hparams.augmenter
    assert "epoch: 1" in logged(out)


def test_export_cli_round_trip_with_encoder_classifier(workdir, librispeech_test, shared_data):
    """``xmodal-diar export`` + ``EncoderClassifier.from_hparams``: same embeddings (< 1e-5) on real audio."""
    from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder
    from xmodal_diar.audio import load_audio
    from xmodal_diar.cli import main

    save = workdir / "triplet" / "save"
    if not save.is_dir():
        train(workdir, shared_data, "triplet")
    model_dir = workdir / "exported"
    assert main(["export", str(save), "--out", str(model_dir), "--select", "best"]) == 0
    encoder, _, info = load_checkpoint_encoder(save)
    assert info["encoder"] == "tristounet"
    classifier = load_speechbrain_encoder(model_dir, workdir / "sb_savedir")
    flacs = sorted(librispeech_test.rglob("*.flac"))[:3]
    waves = [load_audio(f)[: 16000 * (k + 1)] for k, f in enumerate(flacs)]  # 1, 2, 3 s
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lens = torch.tensor([w.shape[0] / batch.shape[1] for w in waves])
    with torch.no_grad():
        expected = encoder(batch, lens)
        got = classifier.encode_batch(batch, lens).squeeze(1)
    assert (expected - got).abs().max().item() < 1e-5
    assert "hub" not in (model_dir / "hyperparams.yaml").read_text()


def test_export_rejects_a_checkpoint_of_the_wrong_kind(tmp_path, capsys):
    from xmodal_diar.cli import main

    (tmp_path / "plain").mkdir()
    assert main(["export", str(tmp_path / "plain"), "--out", str(tmp_path / "o")]) == 1
    assert "no encoder.json" in capsys.readouterr().err
    ckpt = tmp_path / "save" / "CKPT+2020-01-01+00-00-00+00"
    ckpt.mkdir(parents=True)
    (ckpt / "model.ckpt").write_bytes(b"")
    (tmp_path / "save" / "encoder.json").write_text('{"kind": "xmodal_diar.training/1", "encoder": "tristounet", "config": {}}')
    assert main(["export", str(ckpt), "--out", str(tmp_path / "o")]) == 1
    assert "no encoder.ckpt (found ['model.ckpt'])" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(workdir, shared_data):
    """torchrun --nproc_per_node=2 ... --distributed_backend=gloo (SpeechBrain 1.1.2 detects torchrun)."""
    out = workdir / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(RECIPE / "train.py"), str(RECIPE / "hparams" / "tet.yaml"), f"--data_folder={shared_data}",
           f"--output_folder={out}", f"--manifest_folder={workdir / 'manifests'}", f"--face_cache={_face_cache()}",
           "--distributed_backend=gloo", *[o for o in TINY if not o.startswith("--batches_per_epoch")],
           "--batches_per_epoch=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYANNOTE_METRICS_ENABLED="false")
    result = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch: 1" in logged(out)
    assert (out / "model" / "embedding_model.ckpt").is_file()


def test_heads_train_on_the_frozen_campplus_trunk_cache(workdir, shared_data):
    """A face-term head and MoCo on the frozen pretrained CAM++ trunk: the trunk's embeddings of
    the training crops are cached once, both methods train on them, exports hold the head only."""
    from xmodal_diar.weights import MissingWeightsError, weights_dir

    try:
        weights_dir("campplus")
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    cache = workdir / "trunk_cache"
    trunk = ["--encoder=!new:xmodal_diar.models.TrunkHeadEncoder", "--emb_dim=192", f"--trunk_cache={cache}"]
    for method, term in (("tet", "tet"), ("moco", "moco")):
        _, out = train(workdir, shared_data, method, *trunk, output=f"campplus_{method}")
        value = float(re.search(rf"train {term}: ([-0-9.e+]+)", logged(out)).group(1))
        assert value > 0
        assert (out / "model" / "pytorch_model.bin").stat().st_size < 1024 * 1024
    assert (cache / "train.pt").is_file() and (cache / "valid.pt").is_file()
    from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder

    classifier = load_speechbrain_encoder(out / "model", savedir=workdir / "sb_campplus")
    assert classifier.encode_batch(torch.randn(1, 16000) * 0.1).shape == (1, 1, 192)
