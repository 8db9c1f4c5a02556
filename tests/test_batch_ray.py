"""``xmodal-diar diarize --engine ray`` on a real local Ray (2 CPUs, started once here):
same RTTMs as the local path, failures recorded, dead workers replaced, resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xmodal_diar.batch import BatchOptions, run_batch
from xmodal_diar.cli import main

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")

NAMES = ("dev00", "dev01", "trn00", "trn01")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(ami_debug, tmp_path_factory):
    corrupt = tmp_path_factory.mktemp("bad") / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return [str(ami_debug / f"{n}.wav") for n in NAMES[:2]] + [str(corrupt)] + [
        str(ami_debug / f"{n}.wav") for n in NAMES[2:]]


@pytest.fixture(scope="module")
def local_rttms(inputs, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("local")
    assert main(["diarize", *inputs, "--out", str(out), "--quiet"]) == 1
    return {n: (out / f"{n}.rttm").read_text() for n in NAMES}


def _summary(out):
    return {line["uri"]: line for line in map(json.loads, (out / "summary.jsonl").read_text().splitlines())}


def _no_partial_file(out: Path):
    assert not list(out.rglob(".*.tmp"))
    for record in (out / "manifest").glob("*.json"):
        assert json.loads(record.read_text())["status"] == "ok"


def test_ray_batch_with_a_corrupt_input_matches_the_local_path_and_a_rerun_recomputes_nothing(
    ray_cluster, inputs, local_rttms, tmp_path, capsys
):
    out = tmp_path / "ray"
    assert main(["diarize", *inputs, "--engine", "ray", "--workers", "2", "--out", str(out), "--quiet"]) == 1
    assert {n: (out / f"{n}.rttm").read_text() for n in NAMES} == local_rttms
    failures = (out / "failures.csv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith(f"{inputs[2]},corrupt,")
    assert "corrupt.wav: FAILED" in capsys.readouterr().err
    _no_partial_file(out)
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.rttm")}
    assert main(["diarize", *inputs, "--engine", "ray", "--workers", "2", "--out", str(out), "--quiet"]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.rttm")} == written  # nothing rewritten
    summary = _summary(out)
    assert all(summary[n].get("skipped") for n in NAMES) and summary["corrupt"]["status"] == "failed"


def test_a_killed_worker_is_replaced_and_its_file_retried(ray_cluster, inputs, local_rttms, tmp_path):
    submitted = []

    def kill_the_third_dispatch(actor, job):  # the first actor to finish, busy again: kill it
        submitted.append(job.uri)
        if len(submitted) == 3:
            ray.kill(actor, no_restart=True)

    out = tmp_path / "ray"
    report = run_batch(inputs, BatchOptions(), str(out), engine="ray", quiet=True, workers=2,
                       on_submit=kill_the_third_dispatch)
    assert len(submitted) == len(inputs) + 1  # the killed worker's file went out twice
    killed = [r for r in report.records if r.get("attempts") == 2]
    assert len(killed) == 1 and killed[0]["uri"] == submitted[2]
    assert [r["uri"] for r in report.failed] == ["corrupt"]
    assert {n: (out / f"{n}.rttm").read_text() for n in NAMES} == local_rttms
    _no_partial_file(out)


def test_sigint_mid_batch_then_a_rerun_completes(ray_cluster, inputs, local_rttms, tmp_path, ctrl_c):
    out = tmp_path / "ray"
    good = [i for i in inputs if "corrupt" not in i]
    command = [sys.executable, "-m", "xmodal_diar", "diarize", *good, "--engine", "ray", "--address", ray_cluster,
               "--workers", "1", "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ), preexec_fn=ctrl_c)
    deadline = time.monotonic() + 120
    while not list((out / "manifest").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C after the first file
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted:" in err and "Traceback" not in err
    done = len(list(out.glob("*.rttm")))
    assert 1 <= done < len(good)
    _no_partial_file(out)
    assert main(["diarize", *good, "--engine", "ray", "--address", ray_cluster, "--out", str(out), "--quiet"]) == 0
    summary = _summary(out)
    assert sum(bool(line.get("skipped")) for line in summary.values()) == done
    assert {n: (out / f"{n}.rttm").read_text() for n in NAMES} == local_rttms


def test_a_pipeline_that_cannot_load_stops_the_batch_with_its_error(ray_cluster, inputs, tmp_path, capsys):
    code = main(["diarize", inputs[0], "--engine", "ray", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert code == 1
    assert "config.yaml" in capsys.readouterr().err
