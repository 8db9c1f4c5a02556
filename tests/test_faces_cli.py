"""``xmodal-diar faces``: one real clip, then a corrupt file among good ones."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal_diar.cli import main
from xmodal_diar.faces.io import load_face_tracks

ARGS = ["--fps", "2", "--detector", "dlib-hog", "--quiet"]


def test_faces_command_writes_npz_and_contact_sheet(talking_heads, tmp_path, capsys):
    clip = talking_heads / "00010.mp4"
    assert main(["faces", str(clip), "--out", str(tmp_path), "--contact-sheet", *ARGS]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{clip}: ") and "1 tracks" in out[0]
    result = load_face_tracks(tmp_path / "00010.faces.npz", embedding_dim=128)
    assert result.video == str(clip) and result.fps == 2.0 and result.detector == "dlib-hog"
    assert len(result.tracks) == 1 and len(result.tracks[0].detections) >= 8  # 9 samples in 4.24 s
    from PIL import Image

    with Image.open(tmp_path / "00010.faces.png") as png:
        sheet = np.asarray(png.convert("RGB"))
    assert sheet.shape[0] >= 80 and sheet.std() > 10  # a row of real face crops, not a blank page


def test_faces_command_reports_a_corrupt_video_and_goes_on(talking_heads, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    clip = talking_heads / "00010.mp4"
    status = main(["faces", str(broken), str(clip), "--out", str(tmp_path / "out"), *ARGS])
    captured = capsys.readouterr()
    assert status == 1
    assert f"skipped {broken}" in captured.err and "corrupt" in captured.err
    assert "1 of 2 videos failed" in captured.err
    assert (tmp_path / "out" / "00010.faces.npz").is_file()  # the good video after it was processed
    assert not (tmp_path / "out" / "broken.faces.npz").exists()


def test_faces_command_rejects_bad_options(tmp_path, capsys):
    assert main(["faces", "x.mp4", "--out", str(tmp_path), "--fps", "0"]) == 1
    assert "--fps must be positive" in capsys.readouterr().err
    assert main(["faces", "x.mp4", "--out", str(tmp_path), "--detect-every", "0"]) == 1
    assert "--detect-every must be at least 1" in capsys.readouterr().err
    assert main(["faces", "x.mp4", "--out", str(tmp_path), "--embedder", "missing.onnx"]) == 1
    assert "--embedder missing.onnx" in capsys.readouterr().err


# ------------------------------------------------------------------ reliability (issue 12, points 2 and 6)

from _faults import listing, output_fault  # noqa: E402,F401  (fixture)


def test_dotted_names_get_their_own_outputs(talking_heads, tmp_path, capsys):
    """``show.part1.mp4`` / ``show.part2.mp4`` used to both become ``show.faces.npz``."""
    import shutil

    for part, clip in (("part1", "00010"), ("part2", "00015")):
        shutil.copy(talking_heads / f"{clip}.mp4", tmp_path / f"show.{part}.mp4")
    videos = [str(tmp_path / "show.part1.mp4"), str(tmp_path / "show.part2.mp4")]
    assert main(["faces", *videos, "--out", str(tmp_path / "out"), "--embed-workers", "0", *ARGS]) == 0
    assert listing(tmp_path / "out") == ["show.part1.faces.npz", "show.part2.faces.npz"]
    for video in videos:
        assert load_face_tracks(tmp_path / "out" / f"{video.split('/')[-1][:-4]}.faces.npz").video == video


def test_unwritable_output_is_one_line_and_leaves_nothing(talking_heads, tmp_path, capsys, output_fault):
    out = tmp_path / "out"
    out.mkdir()
    clip = talking_heads / "00010.mp4"
    status = main(["faces", str(clip), "--out", str(out), "--contact-sheet", "--embed-workers", "0", *ARGS])
    err = capsys.readouterr().err
    assert status == 1
    assert f"cannot write {out / '00010.faces.npz'}" in err and "Traceback" not in err
    assert ("Read-only" in err) if output_fault == "read_only" else ("No space left" in err)
    assert listing(out) == []  # no partial file, no temporary left behind


def _descendants(pid: int) -> set:
    """PIDs of the live descendants of ``pid`` (from /proc)."""
    from pathlib import Path

    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_embedding_worker_too(talking_heads, tmp_path):
    """SIGTERM used to kill only the main process: the embedding worker and the resource
    tracker stayed alive (160 MB) for minutes (issue 12, point 9)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    clips = [str(talking_heads / f"{c}.mp4") for c in ("00086", "00098", "00373", "681100216")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a surviving worker would hold a pipe open
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xmodal_diar", "faces", *clips, "--out", str(out), "--every-frame",
             "--embed-every", "1", "--embed-workers", "1", "--detector", "dlib-hog", "--quiet"],
            stderr=stderr, env=env,
        )
    deadline = time.monotonic() + 120
    helpers: set = set()
    while time.monotonic() < deadline and proc.poll() is None and len(helpers) < 2:
        helpers = _descendants(proc.pid)  # the spawned worker and the resource tracker
        time.sleep(0.2)
    assert proc.poll() is None and len(helpers) >= 2, "the worker did not start before the run ended"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.2)
    left = [p for p in helpers if _alive(p)]
    for p in left:  # do not leave them behind when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, "worker or resource tracker still running"
    err = log.read_text()
    assert proc.returncode == 143
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert all(not p.name.startswith(".") for p in out.glob("*")) if out.exists() else True  # no temporary left
