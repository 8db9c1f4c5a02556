"""One checkpoint reader with file-named errors (issue 12, point 8), and the export
command's all-or-nothing output (point 6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from _faults import listing, output_fault  # noqa: F401  (fixture)
from xmodal_diar.checkpoints import CheckpointError, load_checkpoint
from xmodal_diar.cli import main

DEFAULT = Path(__file__).resolve().parents[1] / "xmodal_diar" / "pretrained" / "default"


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.fixture()
def save_folder(tmp_path):
    """A recipe's save folder (encoder.json + one CKPT+ folder) around a real small encoder."""
    from xmodal_diar.models import TristouNet
    from xmodal_diar.training.brain import write_encoder_info

    encoder = TristouNet(lstm_hidden=8, dense=[8], dimension=8)
    save = tmp_path / "save"
    write_encoder_info(save, encoder, method="triplet")
    ckpt = save / "CKPT+2026-01-01+00-00-00+00"
    ckpt.mkdir()
    torch.save(encoder.state_dict(), ckpt / "encoder.ckpt")
    return ckpt


def test_reader_names_file_and_problem(tmp_path):
    state = tmp_path / "ok.ckpt"
    torch.save({"w": torch.ones(3)}, state)
    assert torch.equal(load_checkpoint(state)["w"], torch.ones(3))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: empty checkpoint file"):
        load_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match=r"half\.ckpt: not a PyTorch checkpoint, or a truncated or corrupt one"):
        load_checkpoint(_truncate(shutil.copy(DEFAULT / "embedding_model.ckpt", tmp_path / "half.ckpt")))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: expected a state_dict"):
        load_checkpoint(DEFAULT / "pytorch_model.bin", weights_only=False)
    assert "pyannote.audio" in load_checkpoint(DEFAULT / "pytorch_model.bin", "pyannote", weights_only=False)


def test_export_of_a_truncated_checkpoint_names_it(save_folder, tmp_path, capsys):
    _truncate(save_folder / "encoder.ckpt")
    assert main(["export", str(save_folder), "--out", str(tmp_path / "model")]) == 1
    err = capsys.readouterr().err
    assert f"{save_folder / 'encoder.ckpt'}: not a PyTorch checkpoint, or a truncated" in err and "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_export_to_an_unwritable_folder_leaves_nothing(save_folder, tmp_path, capsys, output_fault):
    out = tmp_path / "model"
    assert main(["export", str(save_folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and err.count("\n") == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["save"]  # no temporary left


def test_export_writes_a_loadable_model_dir(save_folder, tmp_path, capsys):
    from xmodal_diar.adapters.speechbrain import load_speechbrain_encoder

    assert main(["export", str(save_folder), "--out", str(tmp_path / "model")]) == 0
    assert {"hyperparams.yaml", "embedding_model.ckpt", "pytorch_model.bin"} <= set(listing(tmp_path / "model"))
    classifier = load_speechbrain_encoder(tmp_path / "model", tmp_path / "sb")
    assert classifier.encode_batch(torch.randn(1, 16000)).shape == (1, 1, 8)


@pytest.fixture()
def corrupt_export(tmp_path):
    """The shipped default model directory with its SpeechBrain checkpoint cut in half."""
    model = tmp_path / "corrupt_model"
    shutil.copytree(DEFAULT, model)
    _truncate(model / "embedding_model.ckpt")
    return model


def test_encoder_classifier_on_a_corrupt_export_names_the_file(corrupt_export, tmp_path):
    from speechbrain.inference.speaker import EncoderClassifier

    with pytest.raises(CheckpointError, match=r"corrupt_model/embedding_model\.ckpt: not a PyTorch checkpoint, or a truncated"):
        EncoderClassifier.from_hparams(source=str(corrupt_export), savedir=str(tmp_path / "sb"))


def test_evaluate_verification_with_a_corrupt_embedder_names_the_file(corrupt_export, librispeech_test, tmp_path, capsys):
    status = main(["evaluate", "verification", str(librispeech_test), "--embedder", str(corrupt_export),
                   "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"{corrupt_export / 'embedding_model.ckpt'}: not a PyTorch checkpoint, or a truncated" in err
