"""Broadcast speaker diarization by clustering short speaker turns.

The classical broadcast pipeline (LIUM; early pyannote; Le & Odobez 2017, sec. 5) with
the face-regularised turn embeddings of this package::

    VAD -> speaker-change detection -> short-turn merging -> turn embeddings
        -> (face constraints) -> agglomerative clustering -> (boundary re-segmentation)

1. speech regions: :class:`~xmodal_diar.pipelines.vad.VoiceActivityDetection`
   (silero-vad, offline, or an energy detector);
2. turns: :class:`~xmodal_diar.pipelines.change_detection.SpeakerChangeDetection`
   (embedding distance between adjacent windows, or BIC on MFCCs);
3. turns shorter than ``min_turn_duration`` are **merged** with the neighbour of the
   same speech region across the weaker boundary (lower change score), shortest first;
   a speech region shorter than that stays one turn and is **repeat-padded** (tiled) to
   ``min_embedding_duration`` before embedding. Turns longer than ``max_turn_duration``
   are cut into equal chunks whose embeddings are averaged (duration-weighted, then
   L2-normalised). No turn ever gets a NaN embedding (a NaN from the model raises);
4. :class:`~xmodal_diar.pipelines.turn_clustering.TurnClustering` (cosine, threshold,
   ``num_speakers`` / ``min_speakers`` / ``max_speakers``);
5. when ``resegmentation_margin > 0``, every boundary between turns of different clusters
   moves, within that margin, to the position ``b`` maximising
   ``cos(e[b - w, b], c_left) + cos(e[b, b + w], c_right)`` (``c`` cluster centroids,
   ``w`` the change-detection window);
6. face evidence (face pairings or face tracks of the same video, argument
   ``face_evidence`` or key ``"face_evidence"`` of the file) adds must-link /
   cannot-link constraints (:mod:`xmodal_diar.pipelines.face_evidence`).

Progress goes through pyannote's hook protocol, so
``pyannote.audio.pipelines.utils.hook.ProgressHook`` works. Steps: ``speech_activity``,
``speaker_change``, ``embeddings``, ``clustering``, ``resegmentation``, ``diarization``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from pyannote.audio.core.model import Model
from pyannote.audio.core.pipeline import Pipeline
from pyannote.audio.core.inference import Inference
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.audio.pipelines.utils.diarization import SpeakerDiarizationMixin, set_num_speakers
from pyannote.core import Annotation, Segment, SlidingWindow, SlidingWindowFeature
from pyannote.metrics.diarization import GreedyDiarizationErrorRate
from pyannote.pipeline.parameter import ParamDict, Uniform
from torch import nn

from xmodal_diar.audio import SAMPLE_RATE, describe, load_audio
from xmodal_diar.pipelines import change_detection as change_mod
from xmodal_diar.pipelines import face_evidence as face_mod
from xmodal_diar.pipelines import turn_clustering as clustering_mod
from xmodal_diar.pipelines import vad as vad_mod
from xmodal_diar.pipelines.change_detection import SpeakerChangeDetection
from xmodal_diar.pipelines.face_evidence import FaceEvidence
from xmodal_diar.pipelines.local_turns import local_turns, reconstruct, selection_annotation
from xmodal_diar.pipelines.turn_clustering import TurnClustering, cluster_centroids
from xmodal_diar.pipelines.vad import VoiceActivityDetection

logger = logging.getLogger(__name__)

PIPELINE_NAME = "xmodal_diar.pipelines.BroadcastDiarization"
CHECKPOINT_NAME = "pytorch_model.bin"
#: ``file`` key under which VAD scores are cached while the pipeline is being tuned.
CACHED_SPEECH_SCORES = "xmodal_diar/speech_scores"
#: ``file`` key under which segmentation, speaker count, turns and embeddings are cached while tuning.
CACHED_TURNS = "xmodal_diar/turns"

EmbeddingSpec = Union[str, Path, Mapping, nn.Module]
#: Registered encoders (:data:`xmodal_diar.models.ENCODERS`) whose pretrained weights come from
#: the model cache (:mod:`xmodal_diar.weights`); ``embedding`` may name one.
PRETRAINED_ENCODERS = ("campplus", "ecapa-voxceleb")


def load_embedding_model(
    embedding: EmbeddingSpec, token: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None
) -> nn.Module:
    """The turn encoder named by ``embedding``, in eval mode.

    ``embedding`` is an ``nn.Module`` (a :class:`pyannote.audio.Model` taking ``(B, 1, T)``
    or a turn encoder taking ``(B, T)`` and optional ``wav_lens``), the name of a pretrained
    trunk (:data:`PRETRAINED_ENCODERS`, as a :class:`~xmodal_diar.adapters.pyannote.TurnEmbeddingModel`), a path to a pyannote
    checkpoint (``pytorch_model.bin``) or to a directory holding one, or the dict that
    ``Pipeline.from_pretrained`` makes of ``"$model/<subfolder>"``.
    """
    if isinstance(embedding, nn.Module):
        return embedding.eval()
    if embedding is None:
        raise ValueError("embedding: a turn encoder (nn.Module) or a pyannote checkpoint path is required")
    if isinstance(embedding, str) and embedding in PRETRAINED_ENCODERS:
        from xmodal_diar.adapters.pyannote import TurnEmbeddingModel

        return TurnEmbeddingModel(encoder=embedding).eval()
    if isinstance(embedding, Mapping):
        spec = dict(embedding)
        checkpoint, subfolder = spec.get("checkpoint"), spec.get("subfolder")
        if checkpoint is not None and Path(str(checkpoint)).is_dir():
            path = Path(str(checkpoint)) / (subfolder or "")
            if not path.exists():
                raise FileNotFoundError(f"embedding: {path} does not exist")
            embedding = path
        else:  # a hub checkpoint: pyannote's own loader (needs the network)
            spec.setdefault("token", token)
            spec.setdefault("cache_dir", cache_dir)
            return Model.from_pretrained(**spec).eval()
    path = Path(str(embedding)).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"embedding: {path} is not a pyannote checkpoint ({CHECKPOINT_NAME})")
    try:
        with warnings.catch_warnings():  # a frozen pretrained trunk is named, not stored: no parameters is expected
            warnings.filterwarnings("ignore", message=r".*contains no parameters")
            model = Model.from_pretrained(path, strict=False, token=token, cache_dir=cache_dir)
    except Exception as exc:
        raise ValueError(f"embedding: {path} is not a loadable pyannote checkpoint ({exc})") from exc
    return model.eval()


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable]:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the heap memory freed so far back to the system (glibc's ``malloc_trim``; no-op elsewhere).

    glibc keeps what a batch of one shape freed; batches of ever-changing lengths (turns,
    sorted by duration) then grew the process by 1.8 GB over 40 batches and 3.5 GB on a
    60-minute input, at the same output. Trimming after each batch costs a few percent.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class TurnEmbedder:
    """Batched embeddings of waveform segments by any turn encoder.

    Segments of a batch are brought to the same length by zero padding that the model
    masks out when its ``forward`` takes ``wav_lens`` (relative lengths) or, for a pyannote
    embedding model, frame ``weights`` (1 on a segment's samples, 0 on its padding): each
    segment's embedding is then the same whatever batch it falls in. Other models get
    repeat padding (tiling), which leaves average-pooled statistics nearly unchanged.
    Segments shorter than ``min_duration`` are tiled to it first. Segments are sorted by
    length, so a batch holds similar lengths.
    """

    def __init__(self, model: nn.Module, batch_size: int = 32, min_duration: float = 0.5, max_duration: float = 10.0):
        self.model = model
        self.batch_size = batch_size
        self.min_samples = max(1, int(min_duration * SAMPLE_RATE))
        self.max_duration = max_duration
        self.pyannote = isinstance(model, Model)
        try:
            parameters = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            parameters = {}
        self.takes_lengths = "wav_lens" in parameters
        # a pyannote embedding model taking frame ``weights`` (ours, the stock WeSpeaker ones):
        # padding masked out, so each turn's embedding does not depend on its batch
        self.takes_weights = self.pyannote and not self.takes_lengths and "weights" in parameters

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @torch.inference_mode()
    def forward(self, pieces: Sequence[torch.Tensor]) -> np.ndarray:
        """Unit-norm embeddings ``(len(pieces), D)`` of 1-D waveforms (one batch)."""
        length = max(self.min_samples, max(p.shape[-1] for p in pieces))
        wavs = torch.zeros(len(pieces), length)
        lengths = torch.ones(len(pieces))
        for i, p in enumerate(pieces):
            if self.takes_lengths or self.takes_weights:  # zero padding, masked: batch-independent
                if p.shape[-1] < self.min_samples:
                    p = p.repeat(math.ceil(self.min_samples / p.shape[-1]))[: self.min_samples]
                wavs[i, : p.shape[-1]] = p
                lengths[i] = p.shape[-1] / length
            else:
                wavs[i] = p.repeat(math.ceil(length / p.shape[-1]))[:length]
        wavs, lengths = wavs.to(self.device), lengths.to(self.device)
        if self.pyannote and self.takes_lengths:
            out = self.model(wavs[:, None], wav_lens=lengths)
        elif self.takes_weights:
            mask = torch.arange(length, device=wavs.device)[None] < (lengths * length).round()[:, None]
            out = self.model(wavs[:, None], weights=mask.float())
        elif self.pyannote:
            out = self.model(wavs[:, None])
        elif self.takes_lengths:
            out = self.model(wavs, lengths)
        else:
            out = self.model(wavs)
        out = out.reshape(len(pieces), -1).float()
        if not torch.isfinite(out).all():
            raise RuntimeError(f"{type(self.model).__name__} returned NaN or infinite embeddings")
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    def windows(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings of equal-length windows ``(B, T)``, in sub-batches."""
        return np.concatenate(
            [self.forward(list(batch[i : i + self.batch_size])) for i in range(0, len(batch), self.batch_size)]
        )

    def segments(
        self, waveform: torch.Tensor, segments: Sequence[Segment], progress: Optional[Callable[[int, int], None]] = None
    ) -> np.ndarray:
        """One embedding per segment of ``waveform``; long ones chunked and averaged."""
        return self.pieces([self.cut(waveform, [segment]) for segment in segments], progress=progress)

    @staticmethod
    def cut(waveform: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
        """The samples of ``segments`` concatenated (never empty)."""
        parts = []
        for segment in segments:
            s, e = int(round(segment.start * SAMPLE_RATE)), int(round(segment.end * SAMPLE_RATE))
            parts.append(waveform[max(s, 0) : max(e, s + 1)])
        piece = torch.cat(parts) if parts else waveform[-1:]
        return piece if piece.shape[-1] > 0 else waveform[-1:]

    def pieces(self, pieces: Sequence[torch.Tensor], progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """One embedding per 1-D waveform; those over ``max_duration`` are cut into equal
        chunks whose embeddings are averaged (duration-weighted, then L2-normalised)."""
        owners, spans, weights = [], [], []  # a piece is only read when its batch comes (``pieces`` may be lazy)
        for k, piece in enumerate(pieces):
            n = piece.shape[-1]
            n_chunks = max(1, math.ceil(n / (self.max_duration * SAMPLE_RATE) - 1e-9))
            edges = np.linspace(0, n, n_chunks + 1).round().astype(int)
            for a, b in zip(edges[:-1], edges[1:]):
                owners.append(k)
                spans.append((a, min(max(b, a + 1), n)))
                weights.append(max(b - a, 1))
        order = np.argsort([b - a for a, b in spans], kind="stable")
        n_batches = math.ceil(len(order) / self.batch_size)
        sums = None
        for i in range(n_batches):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            emb = self.forward([pieces[owners[j]][spans[j][0] : spans[j][1]] for j in idx])
            release_freed_memory()
            if sums is None:
                sums = np.zeros((len(pieces), emb.shape[1]))
            for j, e in zip(idx, emb):
                sums[owners[j]] += weights[j] * e
            if progress is not None:
                progress(i + 1, n_batches)
        if sums is None:
            return np.zeros((0, 0))
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


class TurnPieces(Sequence):
    """The samples each turn is embedded from (its ``parts`` concatenated, then its central
    ``cap`` samples when given), cut when asked: no copy of the turns' audio is held."""

    def __init__(self, waveform: torch.Tensor, parts: Sequence[Sequence[Segment]], cap: Optional[int] = None):
        self.waveform, self.parts, self.cap = waveform, parts, cap

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, i: int) -> torch.Tensor:
        piece = TurnEmbedder.cut(self.waveform, self.parts[i])
        if self.cap:
            piece = piece[max(0, (len(piece) - self.cap) // 2) :][: self.cap]
        return piece


TURN_MODES = ("segmentation", "classical")
CLUSTERING_METHODS = ("agglomerative", "spectral", "vbx")
#: The pinned segmentation model shipped in the package (``python -m xmodal_diar.weights list``).
DEFAULT_SEGMENTATION = "segmentation-3.0"
DEFAULT_SEGMENTATION_PARAMETERS = {"min_duration_off": 0.0}


def default_hyper_parameters(
    turns: str = "segmentation", clustering: str = "agglomerative", vad: str = "silero", change_detection: str = "embedding"
) -> dict:
    """Default (nested) hyper-parameters of a pipeline built with these options."""
    params = {"clustering": dict(clustering_mod.DEFAULT_PARAMETERS.get(clustering, {})), "face": dict(face_mod.DEFAULT_PARAMETERS)}
    if turns == "classical":
        params.update(
            vad=dict(vad_mod.DEFAULT_PARAMETERS[vad]),
            change_detection=dict(change_mod.DEFAULT_PARAMETERS[change_detection]),
            min_turn_duration=0.5,
            resegmentation_margin=0.0,
        )
    else:
        params["segmentation"] = dict(DEFAULT_SEGMENTATION_PARAMETERS)
    return params


def merge_short_turns(turns: List[Segment], boundary_scores: List[float], min_duration: float) -> List[Segment]:
    """Merge turns of one region shorter than ``min_duration`` across their weaker boundary.

    ``boundary_scores[k]`` is the change score between ``turns[k]`` and ``turns[k + 1]``.
    The shortest offending turn goes first; it joins the neighbour on the side of the
    lower score (the boundary least likely to be a true change).
    """
    turns, scores = list(turns), list(boundary_scores)
    while len(turns) > 1:
        durations = [t.duration for t in turns]
        k = int(np.argmin(durations))
        if durations[k] >= min_duration:
            break
        if k == 0:
            side = 0
        elif k == len(turns) - 1:
            side = k - 1
        else:
            side = k - 1 if scores[k - 1] <= scores[k] else k
        turns[side : side + 2] = [Segment(turns[side].start, turns[side + 1].end)]
        del scores[side]
    return turns


def duplicate_turns(turns, min_iou: float = 0.9, lookback: int = 64) -> np.ndarray:
    """For each local turn, the index of the turn whose embedding it reuses (itself when none).

    With overlapping chunks (``segmentation_step < 1``) one stretch of speech is a local
    turn of every chunk that sees it. A turn whose span overlaps an earlier turn of ANOTHER
    chunk with temporal intersection-over-union ``>= min_iou`` is that turn seen again:
    it reuses that turn's embedding (same audio, give or take a few frames at the edges)
    instead of embedding it again. Turns cut by a chunk edge differ in span and keep their
    own embedding. ``turns`` are in start order (:func:`~.local_turns.local_turns`).
    """
    n = len(turns)
    source = np.arange(n)
    starts = np.array([s.start for s in turns.segments]) if n else np.zeros(0)
    ends = np.array([s.end for s in turns.segments]) if n else np.zeros(0)
    for i in range(n):
        for j in range(i - 1, max(-1, i - lookback), -1):
            if turns.chunk[j] == turns.chunk[i] or source[j] != j:
                continue
            inter = min(ends[i], ends[j]) - max(starts[i], starts[j])
            union = max(ends[i], ends[j]) - min(starts[i], starts[j])
            if union > 0 and inter / union >= min_iou:
                source[i] = j
                break
    return source


def validate_num_speakers(
    num_speakers: Optional[int] = None, min_speakers: Optional[int] = None, max_speakers: Optional[int] = None
) -> tuple:
    """``(num, min, max)`` as pyannote's ``set_num_speakers`` returns them, after checks it lacks.

    Each given count must be a positive integer (``2.0`` is accepted, ``2.5``, ``0`` and
    ``-1`` are not), ``min_speakers <= max_speakers``, and ``num_speakers`` within them.
    """
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or float(value) != int(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer (at least 1), got {value!r}")
    num = None if num_speakers is None else int(num_speakers)
    lo = None if min_speakers is None else int(min_speakers)
    hi = None if max_speakers is None else int(max_speakers)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_speakers={lo} is larger than max_speakers={hi}")
    if num is not None and ((lo is not None and num < lo) or (hi is not None and num > hi)):
        raise ValueError(f"num_speakers={num} contradicts min_speakers={lo} / max_speakers={hi}")
    return set_num_speakers(num, lo, hi)


def face_distance_offset(evidence, n: int) -> np.ndarray:
    """FaceEvidence's result as an ``(n, n)`` distance offset (negative: same face)."""
    offset = np.asarray(evidence, dtype=float)
    if offset.shape != (n, n):
        raise ValueError(f"face evidence: expected an ({n}, {n}) distance offset, got {offset.shape}")
    return offset


def load_segmentation_model(segmentation, token=None, cache_dir=None) -> Model:
    """segmentation-3.0 (pinned, in the package) by default; else a pyannote checkpoint / Model."""
    from xmodal_diar.weights import weights_path

    if isinstance(segmentation, Model):
        return segmentation.eval()
    if segmentation is None or segmentation == DEFAULT_SEGMENTATION:
        segmentation = weights_path(DEFAULT_SEGMENTATION, CHECKPOINT_NAME)
    if isinstance(segmentation, Mapping) and Path(str(segmentation.get("checkpoint"))).is_dir():
        segmentation = Path(str(segmentation["checkpoint"])) / (segmentation.get("subfolder") or "")
    if isinstance(segmentation, (str, Path)) and Path(str(segmentation)).expanduser().is_dir():
        segmentation = Path(str(segmentation)).expanduser() / CHECKPOINT_NAME
    try:
        model = Model.from_pretrained(segmentation, token=token, cache_dir=cache_dir)
    except Exception as exc:
        raise ValueError(f"segmentation: {segmentation} is not a loadable pyannote segmentation model ({exc})") from exc
    if model is None or not getattr(model.specifications, "powerset", False):
        raise ValueError(f"segmentation: {segmentation} is not a powerset (overlap-aware) segmentation model")
    return model.eval()


class OutputDiarizationErrorRate(GreedyDiarizationErrorRate):
    """pyannote's greedy DER that also takes a ``DiarizeOutput`` (its ``speaker_diarization``)."""

    def __call__(self, reference, hypothesis, detailed: bool = False, uem=None, **kwargs):
        hypothesis = getattr(hypothesis, "speaker_diarization", hypothesis)
        return super().__call__(reference, hypothesis, detailed=detailed, uem=uem, **kwargs)


class BroadcastDiarization(SpeakerDiarizationMixin, Pipeline):
    """Broadcast speaker diarization: local speaker turns, one embedding each, clustering.

    Default (``turns="segmentation"``)::

        segmentation-3.0 on 10 s chunks (pyannote Inference, step = segmentation_step x 10 s)
          -> local turns (one local speaker, contiguous; :mod:`.local_turns`)
          -> ONE embedding per turn (overlapped frames excluded)
          -> (face evidence as a distance offset) -> clustering (:mod:`.turn_clustering`)
          -> turns put back into their clusters' columns -> pyannote aggregation,
             frame-level speaker count, ``to_diarization`` (overlap-aware), computed
             block by block (:func:`.local_turns.reconstruct`: memory bounded whatever
             the number of speakers)

    ``turns="classical"``: VAD -> speaker-change detection -> short-turn merging -> turn
    embeddings -> clustering -> (boundary re-segmentation); one speaker at a time.

    Both return pyannote 4's ``DiarizeOutput`` (``speaker_diarization``,
    ``exclusive_speaker_diarization``, ``speaker_embeddings``: one centroid per speaker,
    rows in ``speaker_diarization.labels()`` order).

    Parameters
    ----------
    embedding : nn.Module, path, dict or str
        Turn encoder: a pyannote ``Model`` or checkpoint (``$model/pytorch_model.bin``), an
        ``nn.Module`` ``(B, T)[, wav_lens] -> (B, D)``, or a pinned pretrained encoder
        name (``"campplus"``, ``"ecapa-voxceleb"``: :data:`PRETRAINED_ENCODERS`).
    turns : {"segmentation", "classical"}
    segmentation : pyannote powerset segmentation model or checkpoint (default: the pinned
        segmentation-3.0 inside the package)
    segmentation_step : float
        Chunk step as a fraction of the chunk duration (1.0: chunks side by side).
    clustering : {"agglomerative", "spectral", "vbx"}
    vad, change_detection, change_window, change_step : classical path only
    max_turn_duration : longer embedded pieces are chunked and averaged
    min_embedding_duration : shorter pieces are repeat-padded
    max_embedding_duration : default path: only the central ``max_embedding_duration``
        seconds of a turn's clean speech are embedded (None: all of it)
    duplicate_iou : default path, overlapping chunks (``segmentation_step < 1``): a turn whose
        span overlaps a turn of another chunk with intersection-over-union at least this
        reuses that turn's embedding (:func:`duplicate_turns`; None: embed every turn)
    embedding_batch_size, segmentation_batch_size : int
    device, token, cache_dir : as pyannote pipelines

    Hyper-parameters
    ----------------
    segmentation > min_duration_off (default path)
    vad > ..., change_detection > ..., min_turn_duration, resegmentation_margin (classical)
    clustering > threshold, linkage | pruning, min_turn_duration, min_cluster_duration,
        short_turns, refine (:mod:`.turn_clustering`)
    face > min_confidence, weight, max_ratio, anchor_confidence
    """

    def __init__(
        self,
        embedding: EmbeddingSpec = None,
        turns: str = "segmentation",
        segmentation=DEFAULT_SEGMENTATION,
        segmentation_step: float = 1.0,
        clustering: str = "agglomerative",
        vad: str = "silero",
        change_detection: str = "embedding",
        change_window: float = 1.5,
        change_step: float = 0.25,
        max_turn_duration: float = 10.0,
        min_embedding_duration: float = 0.5,
        max_embedding_duration: Optional[float] = None,
        duplicate_iou: Optional[float] = 0.9,
        embedding_batch_size: int = 8,
        segmentation_batch_size: int = 8,
        device: Optional[Union[str, torch.device]] = None,
        token: Optional[str] = None,
        cache_dir: Optional[Union[str, Path]] = None,
    ):
        super().__init__()
        if turns not in TURN_MODES:
            raise ValueError(f"turns must be one of {TURN_MODES}, got {turns!r}")
        if clustering not in CLUSTERING_METHODS:
            raise ValueError(f"clustering must be one of {CLUSTERING_METHODS}, got {clustering!r}")
        if not 0.0 < segmentation_step <= 1.0:
            raise ValueError(f"segmentation_step must be in (0, 1] (a fraction of the chunk duration), got {segmentation_step}")
        self.embedding = embedding if isinstance(embedding, (str, Path, dict)) or embedding is None else type(embedding).__name__
        self._embedding_model = load_embedding_model(embedding, token=token, cache_dir=cache_dir)
        self.embedding_batch_size = embedding_batch_size
        self.max_turn_duration = max_turn_duration
        self.min_embedding_duration = min_embedding_duration
        self.max_embedding_duration = max_embedding_duration
        if duplicate_iou is not None and not 0.0 < duplicate_iou <= 1.0:
            raise ValueError(f"duplicate_iou must be in (0, 1] or None, got {duplicate_iou}")
        self.duplicate_iou = duplicate_iou
        self.turns = turns
        self.klustering = clustering

        if turns == "segmentation":
            self.segmentation_model = segmentation if isinstance(segmentation, (str, Path, dict)) else type(segmentation).__name__
            model = load_segmentation_model(segmentation, token=token, cache_dir=cache_dir)
            self.segmentation_step = segmentation_step
            duration = model.specifications.duration
            self._segmentation = Inference(
                model, duration=duration, step=segmentation_step * duration, skip_aggregation=True,
                batch_size=segmentation_batch_size,
            )
            self.segmentation = ParamDict(min_duration_off=Uniform(0.0, 1.0))
        else:
            self.vad = VoiceActivityDetection(method=vad)
            self.change_detection = SpeakerChangeDetection(change_detection, window=change_window, step=change_step)
            self.min_turn_duration = Uniform(0.0, 2.0)
            self.resegmentation_margin = Uniform(0.0, 1.0)

        if clustering == "vbx":
            try:  # written on branch `vbx` (VBx + PLDA trained by our recipe); wired by the lead at merge
                from xmodal_diar.pipelines.vbx_clustering import VBxClustering
            except ImportError as exc:
                raise ValueError(f"clustering='vbx' needs xmodal_diar.pipelines.vbx_clustering ({exc})") from exc
            self.clustering = VBxClustering()
        else:
            self.clustering = TurnClustering(method=clustering)
        self.face = FaceEvidence()

        self.instantiate(self.default_parameters())
        self.to(torch.device(device) if device is not None else torch.device("cpu"))

    # ----------------------------------------------------------------- pyannote API
    def default_parameters(self) -> dict:
        if self.turns == "classical":
            params = default_hyper_parameters("classical", self.klustering, self.vad.method, self.change_detection.method)
        else:
            params = default_hyper_parameters("segmentation", self.klustering)
        if self.klustering == "vbx":
            params["clustering"] = self.clustering.default_parameters()
        return params

    def classes(self):
        speaker = 0
        while True:
            yield f"SPEAKER_{speaker:02d}"
            speaker += 1

    def get_metric(self) -> GreedyDiarizationErrorRate:
        """DER, collar 0, overlap scored, of the ``speaker_diarization`` (for ``pyannote.pipeline.Optimizer``)."""
        return OutputDiarizationErrorRate(collar=0.0, skip_overlap=False)

    def to(self, device: torch.device):
        self._embedding_model.to(device)
        if self.turns == "segmentation":
            self._segmentation.to(device)
        return self

    @property
    def embedder(self) -> TurnEmbedder:
        return TurnEmbedder(
            self._embedding_model, self.embedding_batch_size, self.min_embedding_duration, self.max_turn_duration
        )

    # ------------------------------------------------------------------- steps
    @staticmethod
    def load_waveform(file: Mapping) -> torch.Tensor:
        """Decode the file once: mono 16 kHz ``(time,)``."""
        if "waveform" in file:
            return load_audio({"waveform": file["waveform"], "sample_rate": file["sample_rate"], "uri": file.get("uri")})
        return load_audio(file["audio"])

    def get_turns(self, waveform: torch.Tensor, speech, hook) -> tuple[List[Segment], List[int]]:
        """Classical path: speaker turns of every speech region (short ones merged) and their region index."""
        embedder = self.embedder
        turns, regions = [], []
        total = len(speech)
        hook("speaker_change", None, total=total, completed=0)
        for r, scores in enumerate(self.change_detection.scores(waveform, speech, embed=embedder.windows)):
            cuts = self.change_detection.changes(scores)
            region_turns = self.change_detection.turns(scores)
            boundary = [float(scores.values[np.argmin(np.abs(scores.times - c))]) for c in cuts]
            region_turns = merge_short_turns(region_turns, boundary, self.min_turn_duration)
            turns.extend(region_turns)
            regions.extend([r] * len(region_turns))
            hook("speaker_change", None, total=total, completed=r + 1)
        return turns, regions

    def resegment(
        self,
        waveform: torch.Tensor,
        turns: List[Segment],
        regions: List[int],
        clusters: np.ndarray,
        embeddings: np.ndarray,
    ) -> List[Segment]:
        """Classical path: move boundaries between turns of different clusters (within the margin)."""
        margin = self.resegmentation_margin
        w = self.change_detection.window
        centroids = cluster_centroids(embeddings, clusters, [t.duration for t in turns])
        candidates, windows = [], []
        for i in range(len(turns) - 1):
            if regions[i] != regions[i + 1] or clusters[i] == clusters[i + 1]:
                continue
            left, right = turns[i], turns[i + 1]
            lo, hi = max(left.middle, left.end - margin), min(right.middle, right.end + margin, left.end + margin)
            positions = np.unique(np.clip(np.arange(left.end - margin, left.end + margin + 1e-9, 0.1), lo, hi))
            for b in positions:
                candidates.append((i, b))
                windows.append(Segment(max(left.start, b - w), b))
                windows.append(Segment(b, min(right.end, b + w)))
        if not candidates:
            return turns
        emb = self.embedder.segments(waveform, windows)
        best = {}
        for k, (i, b) in enumerate(candidates):
            score = emb[2 * k] @ centroids[clusters[i]] + emb[2 * k + 1] @ centroids[clusters[i + 1]]
            if i not in best or score > best[i][0]:
                best[i] = (score, b)
        turns = list(turns)
        for i, (_, b) in best.items():
            turns[i] = Segment(turns[i].start, b)
            turns[i + 1] = Segment(b, turns[i + 1].end)
        return turns

    def segment(self, file: Mapping, waveform: torch.Tensor, hook: Callable):
        """Default path: (segmentations, speaker count, local turns, turn embeddings); cached while tuning."""
        if self.training and CACHED_TURNS in file:
            return file[CACHED_TURNS]
        segmentations = self._segmentation(
            {"waveform": waveform[None], "sample_rate": SAMPLE_RATE, "uri": file.get("uri")},
            hook=functools.partial(hook, "segmentation", None),
        )
        hook("segmentation", segmentations)
        frames = self._segmentation.model.receptive_field
        count = self.speaker_count(segmentations, frames, warm_up=(0.0, 0.0))
        hook("speaker_counting", count)
        turns = local_turns(segmentations, frames, min_clean_duration=self.min_embedding_duration)
        hook("embeddings", None, total=1, completed=0)
        embedder = self.embedder
        cap = int(self.max_embedding_duration * SAMPLE_RATE) if self.max_embedding_duration else None
        source = duplicate_turns(turns, self.duplicate_iou) if self.duplicate_iou else np.arange(len(turns))
        unique = np.flatnonzero(source == np.arange(len(turns)))
        embeddings = embedder.pieces(
            TurnPieces(waveform, [turns.clean[i] for i in unique], cap),
            progress=lambda done, total: hook("embeddings", None, total=total, completed=done),
        )
        if len(unique) < len(turns) and len(embeddings):
            row = np.zeros(len(turns), dtype=int)
            row[unique] = np.arange(len(unique))
            embeddings = embeddings[row[source]]
        hook("embeddings", embeddings)
        result = (segmentations, count, turns, embeddings)
        if self.training:
            file[CACHED_TURNS] = result
        return result

    def cluster(self, embeddings, durations, segments, file, face_evidence, bounds, speech=None) -> tuple:
        """``(clusters, centroids)`` of the turns, with face evidence as a distance offset."""
        if face_evidence is None and "face_evidence" in file:
            face_evidence = file["face_evidence"]
        options = {}
        if face_evidence is not None and len(segments):
            offset, confidences = self.face.turn_evidence(segments, face_evidence, uri=file.get("uri", "video"))
            options = dict(
                distance_offset=face_distance_offset(offset, len(segments)),
                anchored=np.asarray(confidences) >= self.face.anchor_confidence,
            )
        num, lo, hi = bounds
        return self.clustering(
            embeddings, durations=durations, **options,
            num_clusters=num, min_clusters=lo, max_clusters=None if hi == np.inf else hi, speech=speech,
        )

    # ------------------------------------------------------------------- apply
    def apply(
        self,
        file: Mapping,
        num_speakers: Optional[int] = None,
        min_speakers: Optional[int] = None,
        max_speakers: Optional[int] = None,
        face_evidence: Optional[Sequence] = None,
        hook: Optional[Callable] = None,
    ) -> DiarizeOutput:
        """Diarize ``file`` into a ``DiarizeOutput`` (labels ``SPEAKER_00``, ...).

        ``face_evidence``: face pairings or face tracks of the same video (see
        :mod:`xmodal_diar.pipelines.face_evidence`); defaults to ``file["face_evidence"]``.
        """
        bounds = validate_num_speakers(num_speakers, min_speakers, max_speakers)
        hook = self.setup_hook(file, hook=hook)
        uri = file.get("uri", "waveform")
        waveform = self.load_waveform(file)
        if self.turns == "classical":
            output = self._apply_classical(file, waveform, uri, bounds, face_evidence, hook)
        else:
            output = self._apply_segmentation(file, waveform, uri, bounds, face_evidence, hook)
        hook("diarization", output.speaker_diarization)
        return output

    def _empty(self, uri: str, why: str) -> DiarizeOutput:
        logger.warning(why)
        warnings.warn(why)
        return DiarizeOutput(Annotation(uri=uri), Annotation(uri=uri), np.zeros((0, 0)))

    def _apply_segmentation(self, file, waveform, uri, bounds, face_evidence, hook) -> DiarizeOutput:
        segmentations, count, turns, embeddings = self.segment(file, waveform, hook)
        if len(turns) == 0:
            return self._empty(uri, f"{describe(file)}: no speech detected in {waveform.shape[-1] / SAMPLE_RATE:.1f} s; empty output")
        if face_evidence is None and "face_evidence" in file:
            face_evidence = file["face_evidence"]
        if face_evidence is not None:
            turns, embeddings = self.split_at_face_changes(segmentations, turns, embeddings, waveform, face_evidence)
        # each moment is a turn of 1 / segmentation_step chunks: counted once in cluster durations
        clusters, centroids = self.cluster(
            embeddings, turns.clean_duration, turns.segments, file, face_evidence, bounds,
            speech=turns.clean_duration * self.segmentation_step,
        )
        hook("clustering", clusters)
        # never more speakers at once than allowed, nor than clusters found (no ghost speaker)
        cap = int(min(bounds[2], len(centroids), np.iinfo(np.int8).max))  # count.data is uint8
        count = SlidingWindowFeature(np.minimum(count.data, cap).astype(np.int8), count.sliding_window)
        # pyannote's to_diarization + to_annotation of the clustered activities, block by block
        # (memory independent of the number of speakers); column 0 alone: the exclusive one
        selected = reconstruct(segmentations, turns, clusters, len(centroids), count)
        frames = SlidingWindow(
            start=segmentations.sliding_window.start, duration=count.sliding_window.duration, step=count.sliding_window.step
        )
        outputs = []
        for columns in (selected, selected[:, :1]):
            annotation = selection_annotation(columns, frames, min_duration_off=self.segmentation.min_duration_off)
            annotation.uri = uri
            outputs.append(annotation.rename_labels({k: f"SPEAKER_{k:02d}" for k in annotation.labels()}))
        diarization, exclusive = outputs
        rows = [int(label.split("_")[1]) for label in diarization.labels()]
        return DiarizeOutput(diarization, exclusive, centroids[rows])

    def split_at_face_changes(self, segmentations, turns, embeddings, waveform, face_evidence) -> tuple:
        """Local turns split at the hard cuts where the face changes identity, the pieces re-embedded.

        Only with ``FaceTracks`` (shot cuts and embedded tracks) and a calibrated embedder
        (:func:`~xmodal_diar.pipelines.face_evidence.face_change_cuts`); anything else, or no
        such cut inside a turn, leaves ``(turns, embeddings)`` as they are.
        """
        if not self.face.split_turns or not hasattr(face_evidence, "shot_cuts") or not len(turns):
            return turns, embeddings
        cuts = face_mod.face_change_cuts(face_evidence, self.face._calibration(face_evidence.embedder or "dlib"))
        if not cuts:
            return turns, embeddings
        frames = self._segmentation.model.receptive_field
        new, origin, split = face_mod.split_turns_at_cuts(
            turns, segmentations.sliding_window, frames, cuts, min_clean_duration=self.min_embedding_duration
        )
        if not split.any():
            return turns, embeddings
        embedder = self.embedder
        pieces = [embedder.cut(waveform, new.clean[i]) for i in np.flatnonzero(split)]
        if self.max_embedding_duration:
            cap = int(self.max_embedding_duration * SAMPLE_RATE)
            pieces = [p[max(0, (len(p) - cap) // 2) :][:cap] for p in pieces]
        embeddings = np.asarray(embeddings)[origin].copy()
        embeddings[split] = embedder.pieces(pieces)
        return new, embeddings

    def _apply_classical(self, file, waveform, uri, bounds, face_evidence, hook) -> DiarizeOutput:
        duration = waveform.shape[-1] / SAMPLE_RATE
        if self.training and CACHED_SPEECH_SCORES in file:
            speech_scores = file[CACHED_SPEECH_SCORES]
        else:
            speech_scores = self.vad.speech_scores(waveform)
            if self.training:
                file[CACHED_SPEECH_SCORES] = speech_scores
        hook("speech_activity", speech_scores)
        speech = self.vad.speech_regions(speech_scores, duration)
        if len(speech) == 0:
            return self._empty(uri, f"{describe(file)}: no speech detected in {duration:.1f} s; empty output")
        turns, regions = self.get_turns(waveform, speech, hook)
        hook("embeddings", None, total=1, completed=0)
        embeddings = self.embedder.segments(
            waveform, turns, progress=lambda done, total: hook("embeddings", None, total=total, completed=done)
        )
        hook("embeddings", embeddings)
        clusters, centroids = self.cluster(embeddings, np.array([t.duration for t in turns]), turns, file, face_evidence, bounds)
        hook("clustering", clusters)
        if self.resegmentation_margin > 0 and len(np.unique(clusters)) > 1:
            turns = self.resegment(waveform, turns, regions, clusters, embeddings)
            hook("resegmentation", None)
        annotation = Annotation(uri=uri)
        for k, (turn, cluster) in enumerate(zip(turns, clusters)):
            annotation[turn, k] = f"SPEAKER_{cluster:02d}"
        annotation = annotation.support()
        rows = [int(label.split("_")[1]) for label in annotation.labels()]
        return DiarizeOutput(annotation, annotation.copy(), centroids[rows])


def write_pipeline_config(
    model_dir: Union[str, Path],
    params: Optional[Mapping] = None,
    embedding: str = f"$model/{CHECKPOINT_NAME}",
    **pipeline_kwargs,
) -> Path:
    """Write ``model_dir/config.yaml`` so that ``Pipeline.from_pretrained(model_dir)`` works.

    ``params``: (nested) hyper-parameters; missing ones take the pipeline's defaults.
    ``pipeline_kwargs``: constructor arguments (``vad``, ``change_detection``, ...).
    ``embedding`` defaults to the pyannote checkpoint inside ``model_dir``, referenced as
    ``$model/pytorch_model.bin`` so the directory loads from any working directory.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir: {model_dir} is not a directory")
    if embedding.startswith("$model/") and not Path(resolve_model_path(model_dir, embedding)).exists():
        raise FileNotFoundError(f"model_dir: {resolve_model_path(model_dir, embedding)} does not exist")
    unknown = set(pipeline_kwargs) - set(inspect.signature(BroadcastDiarization.__init__).parameters)
    if unknown:
        raise ValueError(f"unknown BroadcastDiarization arguments {sorted(unknown)}")
    merged = default_hyper_parameters(
        pipeline_kwargs.get("turns", "segmentation"),
        pipeline_kwargs.get("clustering", "agglomerative"),
        pipeline_kwargs.get("vad", "silero"),
        pipeline_kwargs.get("change_detection", "embedding"),
    )
    _deep_update(merged, dict(params or {}))
    config = {
        "pipeline": {"name": PIPELINE_NAME, "params": {"embedding": embedding, **pipeline_kwargs}},
        "params": merged,
    }
    path = model_dir / "config.yaml"
    path.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    return path


def read_pipeline_config(model_dir: Union[str, Path]) -> tuple:
    """``(constructor arguments, hyper-parameters)`` of ``model_dir/config.yaml`` as
    :func:`write_pipeline_config` wrote them (``embedding`` still ``$model/...``: see
    :func:`resolve_model_path`), for scripts that rebuild the pipeline with other arguments."""
    path = Path(model_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model_dir {model_dir}: no config.yaml")
    config = yaml.safe_load(path.read_text())
    return dict(config.get("pipeline", {}).get("params", {})), dict(config.get("params", {}))


def resolve_model_path(model_dir: Union[str, Path], value):
    """``$model/<file>`` of a model directory's config as the path of that file; other values unchanged."""
    if isinstance(value, str) and value.startswith("$model/"):
        return str(Path(model_dir) / value[len("$model/") :])
    return value


def _deep_update(target: dict, update: Mapping) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _plain(value):
    """numpy scalars to Python ones, for yaml.safe_dump."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
