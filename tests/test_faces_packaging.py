"""The BlazeFace weights ship inside the package (offline, licence recorded); dlib is the
fallback, and says so; ``diarize`` takes ``--detector`` and shows face-extraction progress."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from xmodal_diar.faces import detection
from xmodal_diar.faces.detection import BLAZEFACE_FILES, PACKAGED_BLAZEFACE, build_detector


def test_blazeface_weights_ship_with_their_licence_and_checksums():
    notice = (PACKAGED_BLAZEFACE / "NOTICE").read_text()
    assert "Apache License 2.0" in notice
    for name in BLAZEFACE_FILES:
        digest = hashlib.sha256((PACKAGED_BLAZEFACE / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in notice


def test_blazeface_runs_from_the_package_alone(tmp_path, monkeypatch, celebrities):
    from xmodal_diar.faces.video import load_image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no hub checkpoints
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "no-shared-data"))  # no shared weights
    image = load_image(celebrities / "test" / "obama1.jpg")  # read before the data folder "vanishes"
    detector = build_detector("blazeface")
    assert detector.name == "blazeface"
    assert len(detector.detect(image)) == 1
    assert not (tmp_path / "empty-torch-home").exists()  # nothing copied, nothing downloaded


def test_without_blazeface_weights_dlib_takes_over_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(detection, "PACKAGED_BLAZEFACE", tmp_path / "nothing")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "no-shared-data"))
    with pytest.warns(UserWarning, match="falling back to dlib's HOG detector"):
        detector = build_detector("blazeface", min_size=20)
    assert detector.name == "dlib-hog" and detector.min_size == 20
    with pytest.raises(FileNotFoundError):  # asked for by name, no silent substitute
        build_detector("sfd", path_to_detector=tmp_path / "missing.pth")


def test_diarize_takes_a_detector_and_shows_face_progress(talking_heads, tmp_path, capsys):
    from xmodal_diar.cli import main

    clip = talking_heads / "00010.mp4"
    status = main(["diarize", str(clip), "--video", "--detector", "dlib-hog", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "00010.mp4" in captured.err and "frame" in captured.err  # the tqdm bar over sampled frames
    assert (tmp_path / "00010.rttm").is_file()
    assert main(["diarize", str(clip), "--video", "--detector", "nonsense", "--out", str(tmp_path)]) == 1
    assert "unknown face detector 'nonsense'" in capsys.readouterr().err
