"""Reading checkpoints: one reader, errors that name the file and say what is wrong.

Every checkpoint the package reads (a recipe's ``encoder.ckpt``, an exported
``embedding_model.ckpt``, a pyannote ``pytorch_model.bin``) goes through
:func:`load_checkpoint`, which turns PyTorch's bare ``PytorchStreamReader failed ...`` /
``OSError: [Errno 22] Invalid argument`` / ``EOFError`` into a :class:`CheckpointError`
naming the file: missing, empty, truncated or corrupt, or not the kind expected.

SpeechBrain's ``Pretrainer`` (``EncoderClassifier.from_hparams``) loads our exported
``embedding_model.ckpt`` through :func:`transfer_parameters`, registered as the
transfer hook of :class:`xmodal_diar.models.base.EmbeddingModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch

PathLike = Union[str, Path]
#: ``state_dict``: a mapping of parameter names to tensors; ``pyannote``: a pyannote.audio
#: Lightning-style checkpoint (``state_dict`` + ``pyannote.audio`` entries); ``any``: no check.
KINDS = ("state_dict", "pyannote", "any")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not of the expected kind (message names the file)."""


def load_checkpoint(path: PathLike, kind: str = "state_dict", *, weights_only: bool = True,
                    map_location: Any = "cpu") -> Any:
    """``torch.load(path)`` with file-named errors, checked to be of ``kind`` (:data:`KINDS`).

    ``weights_only=False`` is needed for pyannote checkpoints (they pickle their
    ``Specifications``); keep it for files you trust, as ``torch.load`` does.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file" + (" (a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # PytorchStreamReader (zip), UnpicklingError, EOFError, OSError(EINVAL) ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint, or a truncated or corrupt one ({size} bytes): {reason}"
        ) from exc
    if kind == "state_dict":
        if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise CheckpointError(f"{path}: expected a state_dict (parameter name -> tensor), got {type(checkpoint).__name__}")
    elif kind == "pyannote":
        if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint or "pyannote.audio" not in checkpoint:
            raise CheckpointError(f"{path}: not a pyannote.audio checkpoint (no 'state_dict' / 'pyannote.audio' entry)")
    return checkpoint


def transfer_parameters(module: torch.nn.Module, path: PathLike) -> None:
    """SpeechBrain ``Pretrainer`` transfer of ``path`` into ``module``: the checkpoint is
    checked by :func:`load_checkpoint` (file-named errors, the symlink SpeechBrain collects
    resolved to its source), then SpeechBrain's own ``torch_parameter_transfer`` loads it."""
    from speechbrain.utils.checkpoints import torch_parameter_transfer

    load_checkpoint(Path(path).resolve(), "state_dict")
    torch_parameter_transfer(module, path)
