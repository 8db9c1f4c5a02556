"""One-line errors instead of tracebacks: --device cuda without CUDA, a protocol without the
requested subset, the face-embedding worker in a script without a main guard."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from xmodal_diar.devices import resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available here.*use --device cpu"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").type == "cuda"
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_cli_device_cuda_is_one_line(tmp_path, capsys):
    from xmodal_diar.cli import main

    rc = main(["evaluate", "verification", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "CUDA is not available" in err


def test_prepare_protocol_without_a_test_subset(ami_debug, tmp_path, capsys):
    from xmodal_diar.cli import main

    rc = main(["prepare", "protocol", "Debug.SpeakerDiarization.Debug", "--database-yml",
               str(ami_debug / "database.yml"), "--out", str(tmp_path), "--no-faces"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1
    assert err == ("xmodal-diar prepare: error: Debug.SpeakerDiarization.Debug has no test subset "
                   "(it has: train, development); choose with --subsets train development")


def test_face_worker_in_a_script_without_main_guard(talking_heads, tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from xmodal_diar.faces import extract_face_tracks\n"
        f"extract_face_tracks({str(talking_heads / '00002.mp4')!r}, fps=2, embed_every=1, embed_workers=1)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: the face-embedding worker process died")
    assert 'if __name__ == "__main__":' in last
