"""Pretrained trunks from the model cache: load them, freeze them, keep them out of checkpoints.

A frozen trunk is named in a checkpoint by its :mod:`xmodal_diar.weights` name, never
copied into it: :func:`freeze_in_state_dict` drops its tensors from ``state_dict()`` and
refills them from the live module on ``load_state_dict`` (strict loading still passes),
so a pyannote ``pytorch_model.bin`` or a SpeechBrain ``embedding_model.ckpt`` holds
only what was trained. The trunk itself comes back at construction from
:func:`xmodal_diar.weights.weights_path`, which raises
:class:`~xmodal_diar.weights.MissingWeightsError` with the install command.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from xmodal_diar.weights import weights_path


def load_pretrained(module: nn.Module, name: str, file_name: Optional[str] = None, prefix: str = "") -> nn.Module:
    """Load the registry weights ``name`` (a state dict file) into ``module``, strictly.

    ``prefix``: only the keys starting with it are taken, with the prefix removed.
    """
    path = weights_path(name, file_name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit {type(module).__name__} ({exc})") from exc
    return module


def freeze_in_state_dict(owner: nn.Module, child: str) -> None:
    """Freeze ``owner.<child>`` (no gradients, always in eval mode) and leave it out of state dicts."""
    trunk = owner.get_submodule(child)
    trunk.requires_grad_(False)
    trunk.eval()
    trunk.train = lambda mode=True: trunk  # BatchNorm statistics stay those of the release

    def drop(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(f"{prefix}{child}.")]:
            del state_dict[key]

    def refill(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for key, value in trunk.state_dict(prefix=f"{prefix}{child}.", keep_vars=False).items():
            state_dict.setdefault(key, value)

    owner.register_state_dict_post_hook(drop)
    owner.register_load_state_dict_pre_hook(refill)
