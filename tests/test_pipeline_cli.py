"""``xmodal-diar diarize``: RTTM per input, summary line, PNG, bad inputs reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pyannote.audio
from xmodal_diar.cli import main

SAMPLE = Path(pyannote.audio.__file__).parent / "sample"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint
    from xmodal_diar.models import TristouNet
    from xmodal_diar.pipelines import write_pipeline_config

    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_pyannote_checkpoint(TristouNet(), directory)
    write_pipeline_config(directory, change_step=0.5)
    return directory


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_diarize_writes_rttm_and_png_and_continues_past_a_corrupt_file(model_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "out"
    code = main([
        "diarize", str(corrupt), str(SAMPLE / "sample.wav"), "--model", str(model_dir), "--out", str(out),
        "--num-speakers", "2", "--reference", str(SAMPLE / "sample.rttm"), "--plot", "--quiet",
    ])
    captured = capsys.readouterr()
    assert code == 1  # one input failed
    assert "corrupt.wav: FAILED" in captured.err and "1 of 2 inputs failed" in captured.err
    rttm = (out / "sample.rttm").read_text().splitlines()
    assert rttm and all(line.startswith("SPEAKER sample 1 ") for line in rttm)
    assert {line.split()[7] for line in rttm} == {"SPEAKER_00", "SPEAKER_01"}
    summary = [line for line in captured.out.splitlines() if line.startswith(str(SAMPLE / "sample.wav"))]
    assert len(summary) == 1
    assert "30.0 s, 2 speakers" in summary[0] and "RTF" in summary[0] and "DER" in summary[0]
    png = out / "sample.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diarize_rejects_contradictory_speaker_counts(model_dir, capsys):
    code = main(["diarize", str(SAMPLE / "sample.wav"), "--model", str(model_dir),
                 "--num-speakers", "2", "--max-speakers", "3"])
    assert code == 1
    assert "--num-speakers cannot be combined" in capsys.readouterr().err


def test_diarize_missing_model_dir_is_reported(tmp_path, capsys):
    code = main(["diarize", str(SAMPLE / "sample.wav"), "--model", str(tmp_path / "nope")])
    assert code == 1
    assert "config.yaml" in capsys.readouterr().err
