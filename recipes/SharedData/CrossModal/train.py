#!/usr/bin/env python3
"""Face-regularised speaker-turn embeddings on the shared data (SpeechBrain recipe).

    python train.py hparams/tet.yaml --data_folder=../../../../shared/data
    torchrun --nproc_per_node=2 train.py hparams/triplet.yaml --data_folder=... --distributed_backend=gloo

Prepares the manifests once (results/manifests: librispeech train-clean-100-1utt,
talking-heads with faces, ami-debug train; ami-debug dev for validation;
librispeech test-other-10x10 held out), trains with ``CrossModalBrain`` and exports the
model directory (``<output_folder>/model``).
"""

import sys

from xmodal_diar.training import run_recipe
from xmodal_diar.training.manifests import prepare_once, prepare_shared_data


def prepare(hparams):
    options = dict(max_turn=hparams["max_turn"], max_librispeech_speakers=hparams["max_librispeech_speakers"],
                   max_talking_heads=hparams["max_talking_heads"], n_windows=4)
    out = hparams["manifest_folder"]  # same manifests for every method; rebuilt when the options change
    prepare_once(out, ("train", "valid", "test"), {"data_folder": hparams["data_folder"], **options},
                 lambda: prepare_shared_data(out, hparams["data_folder"], face_cache=hparams["face_cache"], **options))


if __name__ == "__main__":
    run_recipe(sys.argv[1:], prepare)
