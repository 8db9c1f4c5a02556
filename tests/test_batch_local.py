"""``xmodal-diar diarize`` batches on the local engine (issue #12, the diarize parts):
file names with spaces, colliding stems, write failures, "no speech", Ctrl-C, a batch
that mixes every bad input with good ones."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation

from xmodal_diar.batch import DiarizeWorker
from xmodal_diar.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _summary(out):
    return {line["input"]: line for line in map(json.loads, (out / "summary.jsonl").read_text().splitlines())}


def _temporaries(out):
    return [p for p in out.rglob(".*.tmp")]


def _turns(rttm):
    return [line.split()[3:5] + line.split()[7:8] for line in rttm.read_text().splitlines()]


def test_space_unicode_and_colliding_names_all_get_their_own_rttm(ami_debug, tmp_path, capsys):
    (tmp_path / "d1").mkdir(), (tmp_path / "d2").mkdir()
    spaced = tmp_path / "my show ü.wav"
    shutil.copy(ami_debug / "dev00.wav", spaced)
    shutil.copy(ami_debug / "dev01.wav", tmp_path / "d1" / "clip.wav")
    shutil.copy(ami_debug / "trn00.wav", tmp_path / "d2" / "clip.wav")
    listed = tmp_path / "files.csv"  # --manifest: paths relative to the CSV
    listed.write_text("path\nd1/clip.wav\nd2/clip.wav\n")
    out = tmp_path / "out"
    code = main(["diarize", str(spaced), str(ami_debug / "dev00.wav"), "--manifest", str(listed),
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = _summary(out)
    assert {line["uri"] for line in summary.values()} == {"my_show_ü", "dev00", "d1_clip", "d2_clip"}
    assert summary[str(spaced)]["rttm"] == "my_show_ü.rttm"
    for line in summary.values():
        rttm = (out / line["rttm"]).read_text().splitlines()
        assert rttm and all(row.split()[1] == line["uri"] for row in rttm)  # uri field: no space
        assert line["turns"] == len(rttm) and not line["no_speech"]
    assert _turns(out / "my_show_ü.rttm") == _turns(out / "dev00.rttm")  # same audio, same turns
    assert _turns(out / "d1_clip.rttm") != _turns(out / "d2_clip.rttm")  # neither overwrote the other


def test_write_failures_are_one_line_each_and_no_speech_is_said(ami_debug, tmp_path, monkeypatch, capsys):
    """A full disk and a read-only folder, simulated by a writer that fails half-way."""
    for name in ("full", "readonly", "good"):
        shutil.copy(ami_debug / "dev00.wav", tmp_path / f"{name}.wav")
    shutil.copy(ami_debug / "empty.wav", tmp_path / "silence.wav")
    failing = {"full": errno.ENOSPC, "readonly": errno.EROFS}
    write_rttm = Annotation.write_rttm

    def write_or_fail(self, fp):
        if self.uri in failing:
            fp.write("SPEAKER partial")
            raise OSError(failing[self.uri], os.strerror(failing[self.uri]))
        return write_rttm(self, fp)

    monkeypatch.setattr(Annotation, "write_rttm", write_or_fail)
    out = tmp_path / "out"
    inputs = [str(tmp_path / f"{n}.wav") for n in ("full", "readonly", "silence", "good")]
    code = main(["diarize", *inputs, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in captured.err.splitlines() if ": FAILED: " in line]
    assert len(failed) == 2
    assert "full.wav" in failed[0] and "No space left on device" in failed[0] and "full.rttm" in failed[0]
    assert "readonly.wav" in failed[1] and "Read-only file system" in failed[1]
    assert "Traceback" not in captured.err
    assert not (out / "full.rttm").exists() and not (out / "readonly.rttm").exists() and not _temporaries(out)
    assert (out / "good.rttm").read_text()  # the batch went on
    # "no speech" is an empty RTTM that the summary line and the JSON say is no speech
    assert (out / "silence.rttm").read_text() == ""
    assert "no speech" in next(line for line in captured.out.splitlines() if line.startswith(inputs[2]))
    assert "2 diarized (1 with no speech), 0 skipped (already done), 2 failed" in captured.out
    summary = _summary(out)
    assert summary[inputs[2]]["no_speech"] is True and summary[inputs[3]]["no_speech"] is False
    assert summary[inputs[0]]["status"] == "failed" and "rttm" not in summary[inputs[0]]
    assert len((out / "failures.csv").read_text().splitlines()) == 3


def test_ctrl_c_exits_130_with_one_line_and_the_rerun_resumes(ami_debug, tmp_path, monkeypatch, capsys, ctrl_c):
    inputs = [str(ami_debug / f"{n}.wav") for n in ("trn00", "trn01", "trn02")]
    out = tmp_path / "out"
    process, calls = DiarizeWorker.process, []

    def interrupted_on_second_file(self, job):
        calls.append(job.uri)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the second file is being diarized
        return process(self, job)

    monkeypatch.setattr(DiarizeWorker, "process", interrupted_on_second_file)
    code = main(["diarize", *inputs, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.strip().splitlines() == [
        "xmodal-diar diarize: interrupted: 1 of 3 files done; rerun the same command to resume"]
    assert sorted(p.name for p in out.glob("*.rttm")) == ["trn00.rttm"] and not _temporaries(out)
    monkeypatch.setattr(DiarizeWorker, "process", process)
    assert main(["diarize", *inputs, "--out", str(out), "--quiet"]) == 0
    summary = _summary(out)
    assert [summary[i].get("skipped", False) for i in inputs] == [True, False, False]
    assert sorted(p.name for p in out.glob("*.rttm")) == ["trn00.rttm", "trn01.rttm", "trn02.rttm"]


def _video_without_audio(source, target):
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)


def test_a_batch_of_every_bad_input_writes_every_good_output(ami_debug, talking_heads, tmp_path, capsys):
    good = [tmp_path / "dev 01 ü.wav", talking_heads / "00002.mp4", tmp_path / "audio only.wav"]
    shutil.copy(ami_debug / "dev01.wav", good[0])
    shutil.copy(ami_debug / "trn03.wav", good[2])  # --video on an audio-only file: audio only, warned
    audio, sr = sf.read(ami_debug / "trn04.wav", dtype="float32")
    bad = {
        "missing.wav": "no such file",
        "zero.wav": "empty file",
        "truncated.wav": "",
        "random.mp3": "",
        "nan.wav": "NaN or infinite",
        "silent-video.mp4": "no audio stream",
    }
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "truncated.wav").write_bytes((ami_debug / "trn04.wav").read_bytes()[:60])
    (tmp_path / "random.mp3").write_bytes(np.random.default_rng(0).bytes(20000))
    audio[1000:1010] = np.nan
    sf.write(tmp_path / "nan.wav", audio, sr, subtype="FLOAT")
    _video_without_audio(talking_heads / "00010.mp4", tmp_path / "silent-video.mp4")
    inputs = [str(p) for p in good[:1]] + [str(tmp_path / n) for n in bad] + [str(p) for p in good[1:]]
    out = tmp_path / "out"
    code = main(["diarize", *inputs, "--video", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in captured.err.splitlines() if ": FAILED: " in line]
    assert len(failed) == len(bad) and "Traceback" not in captured.err
    for name, reason in bad.items():
        line = next(line for line in failed if line.startswith(str(tmp_path / name)))
        assert reason in line, line
    assert f"{len(bad)} of {len(inputs)} inputs failed" in captured.err
    summary = _summary(out)
    for path in good:
        assert summary[str(path)]["status"] == "ok" and (out / summary[str(path)]["rttm"]).read_text()
    assert summary[str(good[2])]["warnings"] == ["no video stream: diarized from audio only"]
    assert (out / "00002.faces.npz").stat().st_size > 0  # --video: the face tracks are an output too
    assert not (out / "audio_only.faces.npz").exists()
    assert "no video stream" in next(line for line in captured.out.splitlines() if line.startswith(str(good[2])))
    assert len((out / "failures.csv").read_text().splitlines()) == 1 + len(bad)


def test_reference_errors_name_the_file(tmp_path, capsys):
    malformed = tmp_path / "bad.rttm"
    malformed.write_text("SPEAKER a 1 zero one <NA> <NA> spk <NA> <NA>\n")
    assert main(["diarize", "x.wav", "--reference", str(malformed), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(malformed) in err and "line 1" in err  # the checked RTTM reader names file and line
    assert main(["diarize", "x.wav", "--reference", str(tmp_path), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a directory" in err and "does not exist" not in err
