"""One configurable location for the project's real development data.

``$XMODAL_DATA`` if set, else ``<repo>/../shared/data`` (the layout of a developer's
checkout and of CI). Tests and recipes that need it call :func:`shared_data_root`.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "XMODAL_DATA"


def shared_data_root() -> Path:
    """The data folder (it may not exist: see :func:`require_shared_data`)."""
    value = os.environ.get(ENV_VAR)
    if value:
        return Path(value).expanduser().resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()


def require_shared_data(*parts: str) -> Path:
    """Path of ``parts`` inside the data folder, or FileNotFoundError saying how to set it."""
    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: point ${ENV_VAR} at the shared data folder "
            f"(default: ../shared/data beside the repository)"
        )
    return path


def shared_weights_root() -> Path:
    """``shared/weights`` beside the data folder (BlazeFace weights live there)."""
    return shared_data_root().parent / "weights"
