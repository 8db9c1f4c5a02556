"""Export a turn encoder as a SpeechBrain model directory (and the whole xmodal-diar model dir).

``EncoderClassifier.from_hparams(source=DIR, savedir=...)`` reads ``hyperparams.yaml``
(``compute_features``, ``mean_var_norm``, ``embedding_model``, ``modules``,
``pretrainer`` without ``paths:`` so the files are taken from ``DIR``) and
``embedding_model.ckpt``; ``encode_batch(wavs, wav_lens)`` then gives ``(B, 1, D)``
embeddings identical to :meth:`TurnEncoder.forward`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch
import yaml

from xmodal_diar.models import TurnEncoder, encoder_name

HPARAMS_NAME = "hyperparams.yaml"
EMBEDDING_CKPT_NAME = "embedding_model.ckpt"


def _yaml_block(tag: str, kwargs: dict) -> str:
    body = yaml.safe_dump(kwargs, default_flow_style=None, sort_keys=False).strip()
    return f"{tag}\n" + "\n".join("    " + line for line in body.splitlines())


def _dotted(module) -> str:
    return f"!new:{type(module).__module__}.{type(module).__name__}"


def speechbrain_hparams(encoder: TurnEncoder) -> str:
    """The ``hyperparams.yaml`` text that rebuilds ``encoder``'s three SpeechBrain stages."""
    return "\n".join(
        [
            f"# xmodal-diar {encoder_name(encoder)} turn encoder, for speechbrain.inference.speaker.EncoderClassifier",
            f"sample_rate: {encoder.sample_rate}",
            "compute_features: " + _yaml_block(_dotted(encoder.compute_features), encoder.feature_kwargs),
            "mean_var_norm: " + _yaml_block(_dotted(encoder.mean_var_norm), encoder.norm_kwargs),
            "embedding_model: " + _yaml_block(_dotted(encoder.embedding_model), encoder.embedding_config),
            "modules:",
            "    compute_features: !ref <compute_features>",
            "    mean_var_norm: !ref <mean_var_norm>",
            "    embedding_model: !ref <embedding_model>",
            "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
            "    loadables:",
            "        embedding_model: !ref <embedding_model>",
            "",
        ]
    )


def export_speechbrain(encoder: TurnEncoder, out_dir: Union[str, Path]) -> Path:
    """Write ``hyperparams.yaml`` + ``embedding_model.ckpt`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HPARAMS_NAME).write_text(speechbrain_hparams(encoder))
    torch.save(encoder.embedding_model.state_dict(), out_dir / EMBEDDING_CKPT_NAME)
    return out_dir


def load_speechbrain_encoder(model_dir: Union[str, Path], savedir: Optional[Union[str, Path]] = None):
    """``EncoderClassifier.from_hparams`` on a local directory (never a hub)."""
    from speechbrain.inference.speaker import EncoderClassifier

    model_dir = Path(model_dir)
    for name in (HPARAMS_NAME, EMBEDDING_CKPT_NAME):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir}: missing {name}; not a SpeechBrain encoder directory")
    savedir = Path(savedir) if savedir is not None else model_dir
    return EncoderClassifier.from_hparams(source=str(model_dir.resolve()), savedir=str(savedir.resolve()))


def export_model_dir(
    encoder: TurnEncoder,
    out_dir: Union[str, Path],
    *,
    card: Optional[str] = None,
    pipeline_params: Optional[dict] = None,
    metadata: Optional[dict] = None,
) -> Path:
    """The full model directory: SpeechBrain files, pyannote checkpoint, pipeline config, model card.

    ``config.yaml`` (for ``pyannote.audio.Pipeline.from_pretrained(out_dir)``) is written by
    :func:`xmodal_diar.pipelines.write_pipeline_config` with ``pipeline_params``.
    """
    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint

    out_dir = export_speechbrain(encoder, out_dir)
    save_pyannote_checkpoint(encoder, out_dir)
    info = {"encoder": encoder_name(encoder), "encoder_config": encoder.config, **(metadata or {})}
    (out_dir / "xmodal_diar.json").write_text(json.dumps(info, indent=2) + "\n")
    try:
        from xmodal_diar.pipelines import write_pipeline_config
    except ImportError:  # pipeline package not importable: the model dir still serves SB + pyannote Model
        write_pipeline_config = None
    if write_pipeline_config is not None:
        write_pipeline_config(out_dir, pipeline_params or {})
    if card is not None:
        (out_dir / "README.md").write_text(card)
    return out_dir
