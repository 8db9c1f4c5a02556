"""Output faults for tests: a full disk and a read-only folder, simulated in the writer.

Tests run as root (chmod does not stop root) and CI may not allow a tmpfs mount, so the
writers of :mod:`xmodal_diar.outputs` (``atomic_write``, ``atomic_dir``) are made to fail the way the OS does:
``read_only`` at the creation of its temporary file (``EROFS``), ``full_disk`` after the
data is written, at ``fsync`` (``ENOSPC``), when a partial file exists on disk.
"""

from __future__ import annotations

import errno
import os

import pytest


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.fixture(params=["read_only", "full_disk"])
def output_fault(request, monkeypatch):
    """Every atomic write fails, as on a read-only folder or on a full disk."""
    import xmodal_diar.outputs as outputs

    if request.param == "read_only":
        monkeypatch.setattr(outputs.tempfile, "mkstemp", _raise(errno.EROFS))
        monkeypatch.setattr(outputs.tempfile, "mkdtemp", _raise(errno.EROFS))
    else:
        monkeypatch.setattr(outputs.os, "fsync", _raise(errno.ENOSPC))
    return request.param


def listing(folder) -> list:
    """Every file under ``folder`` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
