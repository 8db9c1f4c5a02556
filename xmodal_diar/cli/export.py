"""``xmodal-diar export CHECKPOINT_DIR --out MODEL_DIR``: a recipe's checkpoint as a model directory.

``CHECKPOINT_DIR`` is a recipe's save folder (SpeechBrain ``Checkpointer`` directory with
the ``encoder.json`` that :class:`~xmodal_diar.training.CrossModalBrain` writes) or one
``CKPT+...`` folder in it. The encoder is rebuilt from ``encoder.json`` and its
``encoder.ckpt``, then :func:`xmodal_diar.adapters.speechbrain.export_model_dir` writes
``hyperparams.yaml`` + ``embedding_model.ckpt`` (``EncoderClassifier.from_hparams``),
``pytorch_model.bin`` (pyannote), ``config.yaml``, ``xmodal_diar.json`` and a model card,
all at once (:func:`xmodal_diar.outputs.atomic_dir`). A truncated or corrupt checkpoint is
reported by :func:`xmodal_diar.checkpoints.load_checkpoint`, naming the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a recipe checkpoint as a SpeechBrain + pyannote model directory",
        description="Rebuild the encoder of a recipe's checkpoint and write a model directory that loads with "
        "EncoderClassifier.from_hparams(source=MODEL_DIR) and pyannote.audio.",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR",
                        help="a recipe's save folder (with encoder.json and CKPT+* folders) or one CKPT+* folder")
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR", help="output model directory")
    parser.add_argument("--select", choices=("latest", "best"), default="latest",
                        help="which checkpoint of a save folder: the latest (default) or the lowest valid loss")
    parser.add_argument("--card", type=Path, default=None, help="a Markdown model card to copy as README.md")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from xmodal_diar.adapters.speechbrain import export_model_dir
    from xmodal_diar.training import load_checkpoint_encoder

    encoder, ckpt, info = load_checkpoint_encoder(args.checkpoint, args.select)
    if args.card is not None:
        card = args.card.read_text()
    else:
        card = (f"# xmodal-diar speaker-turn encoder ({info.get('method') or 'recipe'})\n\n"
                f"- encoder: `{info['encoder']}` {info['config']}\n- checkpoint: `{ckpt}`\n")
    from xmodal_diar.outputs import atomic_dir

    with atomic_dir(args.out) as tmp:  # all files or none: a failed export leaves no partial model dir
        export_model_dir(encoder, tmp, card=card, metadata={"method": info.get("method"), "checkpoint": str(ckpt)})
    print(f"{ckpt} -> {args.out} ({info['encoder']}, {encoder.dimension}-D)")
    return 0
