"""Packaging: what correctness needs is pinned, pyannote's own CLI runs in our environment."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _install_requires() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    reqs = [line for line in lines if line and not line.startswith("#")]
    return {r.split(">")[0].split("<")[0].split("=")[0].strip().lower(): r for r in reqs}


def test_setup_cfg_pins_ruamel_below_0_19_and_declares_typer():
    from packaging.requirements import Requirement

    reqs = _install_requires()
    ruamel = Requirement(reqs["ruamel.yaml"])
    assert not ruamel.specifier.contains("0.19.1") and ruamel.specifier.contains("0.18.17")
    assert "typer" in reqs
    assert "typer==" in (ROOT / "requirements.txt").read_text()


def test_pyannote_audio_cli_runs():
    exe = shutil.which("pyannote-audio") or str(Path(sys.executable).parent / "pyannote-audio")
    if not Path(exe).is_file():
        pytest.skip("pyannote-audio console script not installed in this environment")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "apply" in out.stdout and "download" in out.stdout


def test_package_data_is_declared_as_packages():
    """``find_namespace:`` lists the data folders (no setuptools "package would be ignored")."""
    from setuptools import find_namespace_packages

    packages = find_namespace_packages(str(ROOT), include=["xmodal_diar", "xmodal_diar.*"])
    assert "xmodal_diar.pretrained.default" in packages
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options"]["packages"].strip() == "find_namespace:"
