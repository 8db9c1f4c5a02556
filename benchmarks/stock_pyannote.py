"""pyannote's stock ``SpeakerDiarization`` built offline with architecture-identical models.

The hub checkpoints of ``pyannote/speaker-diarization-community-1`` (and 3.1) cannot be
downloaded here, so this module builds models of the SAME architectures with random
weights, saves them as pyannote checkpoints, and writes PLDA files of valid shapes:

- segmentation: :class:`pyannote.audio.models.segmentation.PyanNet` configured like
  ``pyannote/segmentation-3.0`` (SincNet stride 10, 4-layer bidirectional LSTM with 128
  units, 2 linear layers of 128), powerset output over 3 speakers per 10 s chunk with at
  most 2 per frame (7 classes), specifications as
  ``pyannote.audio.tasks.SpeakerDiarization`` sets them;
- embedding: :class:`pyannote.audio.models.embedding.WeSpeakerResNet34` (256-D), or any
  pyannote embedding ``Model`` (e.g. our :class:`~xmodal_diar.adapters.pyannote.TurnEmbeddingModel`);
- PLDA: ``xvec_transform.npz`` (``mean1`` (D,), ``lda`` (D, L), ``mean2`` (L,)) and
  ``plda.npz`` (``mu`` (L,), ``tr`` (L, L), ``psi`` (L,)) as read by
  ``pyannote.audio.utils.vbx.vbx_setup`` and ``pyannote.audio.core.plda.PLDA``
  (``lda_dimension`` = 128 <= L). ``tr`` is orthogonal and ``psi`` positive, so the
  within-class covariance ``W = (trᵀ tr)⁻¹`` is the identity and the between-class
  ``B = (trᵀ diag(1/psi) tr)⁻¹`` is positive definite, as ``eigh(B, W)`` needs.

Random weights make the outputs meaningless but the computation identical, which is what
timing needs. The stock pipeline stops early when its segmentation never sees a speaker,
and its VBx clustering only clusters (chunk, speaker) pairs with at least 20 % of frames
where that speaker speaks alone; ``speech_bias`` lowers the logits of the powerset's
empty and two-speaker classes, so that the random model mostly outputs one speaker per
frame (as real speech mostly is) and every step runs, VBx with the PLDA included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

#: ``pyannote/segmentation-3.0`` (used by speaker-diarization-3.1 and community-1).
SEGMENTATION_HPARAMS = {
    "sincnet": {"stride": 10},
    "lstm": {"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.5},
    "linear": {"hidden_size": 128, "num_layers": 2},
}
SEGMENTATION_DURATION = 10.0
MAX_SPEAKERS_PER_CHUNK = 3
MAX_SPEAKERS_PER_FRAME = 2

#: Constructor arguments and hyper-parameters of ``speaker-diarization-community-1``'s config.yaml.
STOCK_PIPELINE_KWARGS = {
    "clustering": "VBxClustering",
    "embedding_batch_size": 32,
    "segmentation_batch_size": 32,
    "embedding_exclude_overlap": True,
}
STOCK_PIPELINE_PARAMS = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
}

SEGMENTATION_NAME = "segmentation.bin"
EMBEDDING_NAME = "embedding.bin"
PLDA_FOLDER = "plda"

PathLike = Union[str, Path]


def segmentation_specifications(
    duration: float = SEGMENTATION_DURATION,
    max_speakers_per_chunk: int = MAX_SPEAKERS_PER_CHUNK,
    max_speakers_per_frame: int = MAX_SPEAKERS_PER_FRAME,
):
    """Powerset specifications exactly as ``pyannote.audio.tasks.SpeakerDiarization.setup`` sets them."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    if not 1 <= max_speakers_per_frame <= max_speakers_per_chunk:
        raise ValueError(
            f"max_speakers_per_frame must be in [1, max_speakers_per_chunk={max_speakers_per_chunk}], "
            f"got {max_speakers_per_frame}"
        )
    return Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=duration,
        min_duration=duration,
        classes=[f"speaker#{i + 1}" for i in range(max_speakers_per_chunk)],
        powerset_max_classes=max_speakers_per_frame,
        permutation_invariant=True,
    )


def build_segmentation_model(seed: int = 0, speech_bias: float = 5.0):
    """Random-weight ``PyanNet`` with segmentation-3.0's architecture and powerset output.

    ``speech_bias`` is subtracted from the classifier bias of the powerset classes other
    than the single speakers (no speaker, and pairs), see the module docstring
    (0 keeps the raw random model).
    """
    from pyannote.audio.models.segmentation import PyanNet
    from pyannote.audio.utils.powerset import Powerset

    torch.manual_seed(seed)
    model = PyanNet(**SEGMENTATION_HPARAMS)
    model.specifications = segmentation_specifications()
    model.setup()  # build(): classifier (128 -> 7 powerset classes) and log-softmax
    powerset = Powerset(MAX_SPEAKERS_PER_CHUNK, MAX_SPEAKERS_PER_FRAME)
    not_single = powerset.mapping.sum(dim=1) != 1  # rows: {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}
    with torch.no_grad():
        model.classifier.bias[not_single] -= speech_bias
    return model.eval()


def build_embedding_model(seed: int = 0, duration: float = SEGMENTATION_DURATION):
    """Random-weight ``WeSpeakerResNet34`` (community-1 / 3.1's embedding architecture)."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=duration
    )
    return model.eval()


def write_plda(directory: PathLike, dimension: int, lda_dimension: int = 128, seed: int = 0) -> Path:
    """Write ``xvec_transform.npz`` and ``plda.npz`` of valid shapes for ``dimension``-D embeddings.

    LDA: the first ``lda_dimension`` columns of a random orthogonal ``(D, D)`` matrix;
    PLDA: a random orthogonal ``tr``, ``psi`` decreasing from 10 to 0.1 (between-class
    variances), ``mu`` = 0, ``mean1`` / ``mean2`` small random offsets.
    """
    if dimension < lda_dimension:
        raise ValueError(
            f"dimension: pyannote's PLDA keeps lda_dimension={lda_dimension} LDA dimensions, "
            f"so embeddings need at least that many, got {dimension}"
        )
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lda, _ = np.linalg.qr(rng.standard_normal((dimension, dimension)))
    tr, _ = np.linalg.qr(rng.standard_normal((lda_dimension, lda_dimension)))
    np.savez(
        directory / "xvec_transform.npz",
        mean1=0.01 * rng.standard_normal(dimension),
        mean2=0.01 * rng.standard_normal(lda_dimension),
        lda=lda[:, :lda_dimension],
    )
    np.savez(
        directory / "plda.npz",
        mu=np.zeros(lda_dimension),
        tr=tr,
        psi=np.logspace(1, -1, lda_dimension),
    )
    return directory


def build_stock_models(
    directory: PathLike,
    embedding=None,
    seed: int = 0,
    speech_bias: float = 5.0,
) -> dict:
    """Save segmentation and embedding checkpoints and PLDA files into ``directory``.

    ``embedding``: a pyannote embedding ``Model`` to use instead of the random
    WeSpeaker ResNet34 (its ``dimension`` sizes the PLDA). Returns the keyword arguments
    ``segmentation=``, ``embedding=``, ``plda=`` (paths as strings) for ``SpeakerDiarization``.
    """
    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if embedding is None:
        embedding = build_embedding_model(seed=seed)
    segmentation = save_pyannote_checkpoint(
        build_segmentation_model(seed=seed, speech_bias=speech_bias), directory / SEGMENTATION_NAME
    )
    embedding_path = save_pyannote_checkpoint(embedding, directory / EMBEDDING_NAME)
    plda = write_plda(directory / PLDA_FOLDER, embedding.dimension, seed=seed)
    return {"segmentation": str(segmentation), "embedding": str(embedding_path), "plda": str(plda)}


def stock_pipeline(
    directory: PathLike,
    embedding=None,
    seed: int = 0,
    params: Optional[dict] = None,
    **kwargs,
):
    """The stock ``pyannote.audio.pipelines.SpeakerDiarization`` on models built in ``directory``.

    Constructor arguments default to community-1's (:data:`STOCK_PIPELINE_KWARGS`,
    overridable by ``kwargs``); it is instantiated with ``params`` (default
    :data:`STOCK_PIPELINE_PARAMS`, which equal the pipeline's own ``default_parameters()``).
    """
    from pyannote.audio.pipelines import SpeakerDiarization

    paths = build_stock_models(directory, embedding=embedding, seed=seed)
    pipeline = SpeakerDiarization(**paths, **{**STOCK_PIPELINE_KWARGS, **kwargs})
    return pipeline.instantiate(params or STOCK_PIPELINE_PARAMS)


# --------------------------------------------------------------- real weights
#: The stock pipeline compared with ours: pyannote's ``SpeakerDiarization`` with the pinned
#: segmentation-3.0 and SpeechBrain ECAPA, agglomerative clustering (VBx would need a PLDA
#: trained for ECAPA), overlap excluded from the embeddings, and a 5 s hop
#: (``segmentation_step`` 0.5 of the 10 s chunk; pyannote's default 0.1 embeds five times
#: more audio, 30 s per second of input, too slow for this 2-core machine).
REAL_STOCK_KWARGS = {
    "clustering": "AgglomerativeClustering",
    "segmentation_step": 0.5,
    "embedding_exclude_overlap": True,
    "embedding_batch_size": 16,
    "segmentation_batch_size": 8,
}
#: pyannote/speaker-diarization-3.1's agglomerative hyper-parameters (the starting point of tuning).
REAL_STOCK_DEFAULTS = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7045654963945799},
}
#: Tuned on ami-debug train + LibriSpeech-train conversations (recipes/SharedData/Diarization/tune.py --stock).
REAL_STOCK_TUNING = Path(__file__).resolve().parent / "results" / "stock_tuning.json"


def real_stock_pipeline(embedding: str = "ecapa-voxceleb", params: Optional[dict] = None, **kwargs):
    """Stock ``SpeakerDiarization`` with the REAL pinned weights (see :data:`REAL_STOCK_KWARGS`).

    ``params``: hyper-parameters; default: those of :data:`REAL_STOCK_TUNING` when it exists,
    else the pipeline's own defaults.
    """
    import json

    from pyannote.audio.pipelines import SpeakerDiarization

    from xmodal_diar.adapters.pyannote import TurnEmbeddingModel
    from xmodal_diar.weights import weights_path

    import tempfile

    model = TurnEmbeddingModel(encoder=embedding).eval()
    # SpeakerDiarization always loads a PLDA; agglomerative clustering never uses it
    plda = write_plda(tempfile.mkdtemp(prefix="xmodal-stock-plda-"), model.dimension)
    pipeline = SpeakerDiarization(
        segmentation=str(weights_path("segmentation-3.0", "pytorch_model.bin")),
        embedding=model,
        plda=str(plda),
        **{**REAL_STOCK_KWARGS, **kwargs},
    )
    if params is None:
        params = (
            json.loads(REAL_STOCK_TUNING.read_text())["params"]
            if REAL_STOCK_TUNING.is_file()
            else REAL_STOCK_DEFAULTS
        )
    return pipeline.instantiate(params)
