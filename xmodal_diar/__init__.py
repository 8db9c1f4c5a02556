"""xmodal-diar: face-regularised speaker-turn embeddings for pyannote.audio and SpeechBrain.

Public surface (kept small on purpose):

- :func:`xmodal_diar.audio.load_audio` -- any audio/video input as mono 16 kHz float.
- :mod:`xmodal_diar.models` -- speaker-turn encoders (TristouNet, ECAPA-TDNN, x-vector).
- :mod:`xmodal_diar.losses` -- one module per source paper of the cross-modal losses.
- :mod:`xmodal_diar.faces` -- face tracks from video (the frozen teacher).
- :mod:`xmodal_diar.eval` -- verification, clustering, diarization and cross-modal metrics.
- :func:`load_pipeline` -- the broadcast diarization pipeline with the embedded default model.

Importing the package changes no process-wide state (environment, warning filters):
the ``xmodal-diar`` command does that for its own process (:func:`xmodal_diar.cli.main`).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_pipeline(model_dir=None, **kwargs):
    """Return a :class:`~xmodal_diar.pipelines.BroadcastDiarization` pipeline.

    With no argument, the model that ships inside the package (the embedded default).
    """
    from xmodal_diar.pipelines import load_pipeline as _load

    return _load(model_dir, **kwargs)
