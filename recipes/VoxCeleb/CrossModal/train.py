#!/usr/bin/env python3
"""Face-guided speaker embeddings on VoxCeleb (VGSR-style), user paths.

    python train.py hparams/mkd_qaw.yaml --data_folder=/data/voxceleb2/aac --video_folder=/data/voxceleb2/mp4

Manifests from the VoxCeleb layout (``idXXXXX/VIDEO/NNNNN.{wav,m4a}``; faces from the
matching ``mp4/idXXXXX/VIDEO/NNNNN.mp4`` when ``video_folder`` is set), see
:func:`xmodal_diar.training.manifests.prepare_voxceleb`; then the same ``CrossModalBrain``.
"""

import sys
from pathlib import Path

from xmodal_diar.training import run_recipe
from xmodal_diar.training.manifests import prepare_once, prepare_voxceleb


def prepare(hparams):
    options = dict(data_folder=hparams["data_folder"], video_folder=hparams["video_folder"],
                   max_turn=hparams["max_turn"], max_files=hparams["max_files"])
    prepare_once(hparams["manifest_folder"], ("train",), options,
                 lambda: prepare_voxceleb([options["data_folder"]], hparams["manifest_folder"],
                                          video_dir=options["video_folder"], max_turn=options["max_turn"],
                                          face_cache=hparams["face_cache"], max_files=options["max_files"]))


if __name__ == "__main__":
    run_recipe(sys.argv[1:], prepare)
