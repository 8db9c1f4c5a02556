"""Shared fixtures. Data-dependent tests take ``shared_data`` and skip, with the reason,
when the folder ($XMODAL_DATA, default ../shared/data) is absent."""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
# before torch is imported: passive OpenMP waiting (see scripts/env.sh)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from xmodal_diar.shared_data import ENV_VAR, shared_data_root

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data():
    """Root of the real development data, or skip."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is absent (set ${ENV_VAR} to run data tests)")
    return root


def _shared_folder(root, *parts):
    path = root.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def librispeech_test(shared_data):
    """``librispeech/test-other-10x10``: 10 held-out speakers x 10 utterances."""
    return _shared_folder(shared_data, "librispeech", "test-other-10x10")


@pytest.fixture(scope="session")
def talking_heads(shared_data):
    return _shared_folder(shared_data, "talking-heads")


@pytest.fixture(scope="session")
def ami_debug(shared_data):
    return _shared_folder(shared_data, "ami-debug")


@pytest.fixture(scope="session")
def celebrities(shared_data):
    return _shared_folder(shared_data, "faces", "celebrities")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small networks on a shared 2-core machine run faster on one torch thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _drop_speechbrain_deprecation_redirects() -> None:
    """SpeechBrain registers placeholder modules for its deprecated import paths in
    ``sys.modules``; hypothesis reads ``__file__`` of every module, which makes those
    placeholders import targets that fail. They are import aliases only: drop them."""
    import sys

    import speechbrain  # noqa: F401
    from speechbrain.utils.importutils import DeprecatedModuleRedirect

    for name in [n for n, m in sys.modules.items() if isinstance(m, DeprecatedModuleRedirect)]:
        del sys.modules[name]


_drop_speechbrain_deprecation_redirects()


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in this process, and ``ctrl_c`` (a ``preexec_fn``) gives a
    child Python the same, even when the test run itself ignores SIGINT (a job started with
    ``&`` from a non-interactive shell inherits SIG_IGN, and Python then installs no handler)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGINT, previous)

