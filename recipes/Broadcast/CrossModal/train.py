#!/usr/bin/env python3
"""Face-regularised speaker-turn embeddings on a broadcast corpus: videos + RTTM.

    python train.py hparams/tet.yaml --data_folder=/data/repere/videos \
        --train_rttm=/data/repere/train.rttm --valid_rttm=/data/repere/dev.rttm

Speech turns come from the RTTM (split into parts of at most ``max_turn`` s), faces from
each video's face tracks (cached), turns paired with tracks
(:func:`xmodal_diar.training.manifests.prepare_videos`); then the same
``CrossModalBrain`` as every recipe. For a pyannote.database protocol instead, build the
manifests with ``xmodal-diar prepare protocol NAME --out DIR`` and pass
``--manifest_folder=DIR``.
"""

import sys
from pathlib import Path

from xmodal_diar.training import run_recipe
from xmodal_diar.training.manifests import prepare_once, prepare_videos


def prepare(hparams):
    out = Path(hparams["manifest_folder"])
    options = dict(max_turn=hparams["max_turn"], fps=hparams["face_fps"])
    build = dict(face_cache=hparams["face_cache"], **options)
    key = dict(data_folder=hparams["data_folder"], **options)
    prepare_once(out, ("train",), {**key, "rttm": hparams["train_rttm"]}, lambda: prepare_videos(
        hparams["data_folder"], hparams["train_rttm"], out, name="train", **build))
    if hparams.get("valid_rttm"):
        prepare_once(out, ("valid",), {**key, "rttm": hparams["valid_rttm"]}, lambda: prepare_videos(
            hparams["data_folder"], hparams["valid_rttm"], out, name="valid", **build))


if __name__ == "__main__":
    run_recipe(sys.argv[1:], prepare)
