"""pyannote.audio pipelines of xmodal-diar.

- :class:`BroadcastDiarization` -- segmentation-3.0 local speaker turns (or, with
  ``turns="classical"``, VAD + speaker-change detection), one embedding per turn,
  face-aware clustering (agglomerative, spectral, VBx), overlap-aware pyannote
  ``DiarizeOutput``; loadable with ``pyannote.audio.Pipeline.from_pretrained(model_dir)``.
- :func:`load_pipeline` -- that pipeline from a model directory (default: the model
  embedded in the package, ``xmodal_diar/pretrained/default/``).
- :func:`write_pipeline_config` -- the ``config.yaml`` of a model directory;
  :func:`read_pipeline_config` and :func:`resolve_model_path` read it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from xmodal_diar.pipelines.broadcast_diarization import (
    BroadcastDiarization,
    read_pipeline_config,
    resolve_model_path,
    write_pipeline_config,
)

#: The model directory shipped inside the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "default"


def load_pipeline(model_dir: Optional[Union[str, Path]] = None, **kwargs) -> BroadcastDiarization:
    """``Pipeline.from_pretrained(model_dir)`` (default: the embedded model), offline.

    ``kwargs`` go to ``Pipeline.from_pretrained`` (``hparams_file``, ``token``, ``cache_dir``).
    """
    from pyannote.audio import Pipeline

    model_dir = Path(DEFAULT_MODEL_DIR if model_dir is None else model_dir).expanduser()
    config = model_dir / "config.yaml" if model_dir.is_dir() else model_dir
    if not config.is_file():
        where = "the embedded default model" if Path(model_dir) == DEFAULT_MODEL_DIR else "model_dir"
        raise FileNotFoundError(f"{where}: {config} does not exist (a model directory needs config.yaml)")
    pipeline = Pipeline.from_pretrained(config, **kwargs)
    if not isinstance(pipeline, BroadcastDiarization):
        raise ValueError(f"{config}: pipeline is {type(pipeline).__name__}, not BroadcastDiarization")
    return pipeline


__all__ = ["BroadcastDiarization", "load_pipeline", "write_pipeline_config", "read_pipeline_config", "resolve_model_path",
           "DEFAULT_MODEL_DIR"]
