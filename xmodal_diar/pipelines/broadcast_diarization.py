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
   ``face_evidence`` or key ``"face_evidence"`` of the file) adds a calibrated offset
   to the turns' distances (:mod:`xmodal_diar.pipelines.face_evidence`).

Progress goes through pyannote's hook protocol, so
``pyannote.audio.pipelines.utils.hook.ProgressHook`` works. Steps: ``speech_activity``,
``speaker_change``, ``embeddings``, ``clustering``, ``resegmentation``, ``diarization``.
"""

from __future__ import annotations

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
from pyannote.audio.pipelines.utils.diarization import set_num_speakers
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import GreedyDiarizationErrorRate
from pyannote.pipeline.parameter import Uniform
from torch import nn

from xmodal_diar.audio import SAMPLE_RATE, describe, load_audio
from xmodal_diar.pipelines import change_detection as change_mod
from xmodal_diar.pipelines import face_evidence as face_mod
from xmodal_diar.pipelines import turn_clustering as clustering_mod
from xmodal_diar.pipelines import vad as vad_mod
from xmodal_diar.pipelines.change_detection import SpeakerChangeDetection
from xmodal_diar.pipelines.face_evidence import FaceEvidence
from xmodal_diar.pipelines.turn_clustering import TurnClustering, cluster_centroids
from xmodal_diar.pipelines.vad import VoiceActivityDetection

logger = logging.getLogger(__name__)

PIPELINE_NAME = "xmodal_diar.pipelines.BroadcastDiarization"
CHECKPOINT_NAME = "pytorch_model.bin"
#: ``file`` key under which VAD scores are cached while the pipeline is being tuned.
CACHED_SPEECH_SCORES = "xmodal_diar/speech_scores"

EmbeddingSpec = Union[str, Path, Mapping, nn.Module]


def load_embedding_model(
    embedding: EmbeddingSpec, token: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None
) -> nn.Module:
    """The turn encoder named by ``embedding``, in eval mode.

    ``embedding`` is an ``nn.Module`` (a :class:`pyannote.audio.Model` taking ``(B, 1, T)``
    or a turn encoder taking ``(B, T)`` and optional ``wav_lens``), a path to a pyannote
    checkpoint (``pytorch_model.bin``) or to a directory holding one, or the dict that
    ``Pipeline.from_pretrained`` makes of ``"$model/<subfolder>"``.
    """
    if isinstance(embedding, nn.Module):
        return embedding.eval()
    if embedding is None:
        raise ValueError("embedding: a turn encoder (nn.Module) or a pyannote checkpoint path is required")
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
        model = Model.from_pretrained(path, strict=False, token=token, cache_dir=cache_dir)
    except Exception as exc:
        raise ValueError(f"embedding: {path} is not a loadable pyannote checkpoint ({exc})") from exc
    return model.eval()


class TurnEmbedder:
    """Batched embeddings of waveform segments by any turn encoder.

    Segments of a batch are brought to the same length by zero padding with relative
    lengths when the model's ``forward`` takes ``wav_lens``, else by repeat padding
    (tiling), which leaves average-pooled statistics nearly unchanged. Segments are
    sorted by length first, so a batch holds similar lengths.
    """

    def __init__(self, model: nn.Module, batch_size: int = 32, min_duration: float = 0.5, max_duration: float = 10.0):
        self.model = model
        self.batch_size = batch_size
        self.min_samples = max(1, int(min_duration * SAMPLE_RATE))
        self.max_duration = max_duration
        self.pyannote = isinstance(model, Model)
        try:
            self.takes_lengths = "wav_lens" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            self.takes_lengths = False

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
            if self.takes_lengths and p.shape[-1] >= self.min_samples:
                wavs[i, : p.shape[-1]] = p
                lengths[i] = p.shape[-1] / length
            else:
                wavs[i] = p.repeat(math.ceil(length / p.shape[-1]))[:length]
        wavs, lengths = wavs.to(self.device), lengths.to(self.device)
        if self.pyannote:
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
        """One embedding per segment; long ones chunked and averaged (see module docstring)."""
        owners, pieces, weights = [], [], []
        for k, segment in enumerate(segments):
            n_chunks = max(1, math.ceil(segment.duration / self.max_duration - 1e-9))
            edges = np.linspace(segment.start, segment.end, n_chunks + 1)
            for a, b in zip(edges[:-1], edges[1:]):
                s, e = int(round(a * SAMPLE_RATE)), int(round(b * SAMPLE_RATE))
                piece = waveform[s : max(e, s + 1)]
                if piece.shape[-1] == 0:
                    piece = waveform[-1:]
                owners.append(k)
                pieces.append(piece)
                weights.append(b - a)
        order = np.argsort([p.shape[-1] for p in pieces], kind="stable")
        n_batches = math.ceil(len(order) / self.batch_size)
        dimension, sums = None, None
        for i in range(n_batches):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            emb = self.forward([pieces[j] for j in idx])
            if sums is None:
                dimension = emb.shape[1]
                sums = np.zeros((len(segments), dimension))
            for j, e in zip(idx, emb):
                sums[owners[j]] += weights[j] * e
            if progress is not None:
                progress(i + 1, n_batches)
        if sums is None:
            return np.zeros((0, 0))
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def default_hyper_parameters(vad: str = "silero", change_detection: str = "embedding") -> dict:
    """Default (nested) hyper-parameters of a pipeline built with these methods."""
    return {
        "vad": dict(vad_mod.DEFAULT_PARAMETERS[vad]),
        "change_detection": dict(change_mod.DEFAULT_PARAMETERS[change_detection]),
        "min_turn_duration": 0.5,
        "clustering": dict(clustering_mod.DEFAULT_PARAMETERS),
        "resegmentation_margin": 0.0,
        "face": dict(face_mod.DEFAULT_PARAMETERS),
    }


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


class BroadcastDiarization(Pipeline):
    """Broadcast speaker diarization with face-regularised turn embeddings.

    Parameters
    ----------
    embedding : nn.Module, path or dict
        Turn encoder: a pyannote ``Model`` or checkpoint (``$model/pytorch_model.bin`` in a
        ``config.yaml``), or an ``nn.Module`` ``(B, T)[, wav_lens] -> (B, D)``.
    vad : {"silero", "energy"}
    change_detection : {"embedding", "bic"}
    change_window, change_step : float
        Window length and candidate spacing (s) of change detection.
    max_turn_duration : float
        Longer turns are embedded in chunks and averaged.
    min_embedding_duration : float
        Shorter segments are repeat-padded to this length before embedding.
    embedding_batch_size : int
    device : str or torch.device, optional
    token, cache_dir :
        Accepted for ``Pipeline.from_pretrained`` (used only by hub checkpoints).

    Hyper-parameters
    ----------------
    vad > onset, offset, min_duration_on, min_duration_off
    change_detection > threshold, min_duration
    min_turn_duration : shorter turns are merged with a neighbour
    clustering > threshold, method
    resegmentation_margin : 0 disables boundary re-segmentation
    face > min_confidence, weight

    Usage
    -----
    >>> pipeline = BroadcastDiarization(embedding="model_dir/pytorch_model.bin")
    >>> diarization = pipeline("broadcast.mp4", num_speakers=None, hook=ProgressHook())
    """

    def __init__(
        self,
        embedding: EmbeddingSpec = None,
        vad: str = "silero",
        change_detection: str = "embedding",
        change_window: float = 1.5,
        change_step: float = 0.25,
        max_turn_duration: float = 10.0,
        min_embedding_duration: float = 0.5,
        embedding_batch_size: int = 32,
        device: Optional[Union[str, torch.device]] = None,
        token: Optional[str] = None,
        cache_dir: Optional[Union[str, Path]] = None,
    ):
        super().__init__()
        if embedding_batch_size < 1:
            raise ValueError(f"embedding_batch_size must be >= 1, got {embedding_batch_size}")
        if max_turn_duration <= 0 or min_embedding_duration <= 0:
            raise ValueError("max_turn_duration and min_embedding_duration must be positive")
        self.embedding = embedding if not isinstance(embedding, nn.Module) else type(embedding).__name__
        self._embedding_model = load_embedding_model(embedding, token=token, cache_dir=cache_dir)
        self.embedding_batch_size = embedding_batch_size
        self.max_turn_duration = max_turn_duration
        self.min_embedding_duration = min_embedding_duration

        self.vad = VoiceActivityDetection(method=vad)
        self.change_detection = SpeakerChangeDetection(change_detection, window=change_window, step=change_step)
        self.clustering = TurnClustering()
        self.face = FaceEvidence()
        self.min_turn_duration = Uniform(0.0, 2.0)
        self.resegmentation_margin = Uniform(0.0, 1.0)

        self.instantiate(self.default_parameters())
        self.to(torch.device(device) if device is not None else torch.device("cpu"))

    # ----------------------------------------------------------------- pyannote API
    def default_parameters(self) -> dict:
        return default_hyper_parameters(self.vad.method, self.change_detection.method)

    def classes(self):
        speaker = 0
        while True:
            yield f"SPEAKER_{speaker:02d}"
            speaker += 1

    def get_metric(self) -> GreedyDiarizationErrorRate:
        return GreedyDiarizationErrorRate(collar=0.0, skip_overlap=False)

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
        """Speaker turns of every speech region (short ones merged) and their region index."""
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
        """Move boundaries between turns of different clusters (see module docstring)."""
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

    # ------------------------------------------------------------------- apply
    def apply(
        self,
        file: Mapping,
        num_speakers: Optional[int] = None,
        min_speakers: Optional[int] = None,
        max_speakers: Optional[int] = None,
        face_evidence: Optional[Sequence] = None,
        hook: Optional[Callable] = None,
    ) -> Annotation:
        """Diarize ``file``; return a pyannote ``Annotation`` (labels ``SPEAKER_00``, ...).

        ``face_evidence``: face pairings or face tracks of the same video (see
        :mod:`xmodal_diar.pipelines.face_evidence`); defaults to ``file["face_evidence"]``.
        """
        hook = self.setup_hook(file, hook=hook)
        num_speakers, min_speakers, max_speakers = set_num_speakers(num_speakers, min_speakers, max_speakers)
        uri = file.get("uri", "waveform")
        annotation = Annotation(uri=uri)

        waveform = self.load_waveform(file)
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
            message = f"{describe(file)}: no speech detected in {duration:.1f} s; returning an empty annotation"
            logger.warning(message)
            warnings.warn(message)
            hook("diarization", annotation)
            return annotation

        turns, regions = self.get_turns(waveform, speech, hook)

        hook("embeddings", None, total=1, completed=0)
        embeddings = self.embedder.segments(
            waveform, turns, progress=lambda done, total: hook("embeddings", None, total=total, completed=done)
        )
        hook("embeddings", embeddings)

        offset = None
        if face_evidence is None and "face_evidence" in file:
            face_evidence = file["face_evidence"]
        if face_evidence is not None:
            offset = self.face(turns, face_evidence, uri=uri)

        clusters = self.clustering(
            embeddings,
            distance_offset=offset,
            num_clusters=num_speakers,
            min_clusters=min_speakers,
            max_clusters=None if max_speakers == np.inf else max_speakers,
        )
        hook("clustering", clusters)

        if self.resegmentation_margin > 0 and len(np.unique(clusters)) > 1:
            turns = self.resegment(waveform, turns, regions, clusters, embeddings)
            hook("resegmentation", None)

        labels = self.classes()
        names = [next(labels) for _ in range(int(clusters.max()) + 1)]
        for k, (turn, cluster) in enumerate(zip(turns, clusters)):
            annotation[turn, k] = names[cluster]
        annotation = annotation.support()
        hook("diarization", annotation)
        return annotation


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
    if embedding.startswith("$model/") and not (model_dir / embedding[len("$model/") :]).exists():
        raise FileNotFoundError(f"model_dir: {model_dir / embedding[len('$model/'):]} does not exist")
    unknown = set(pipeline_kwargs) - set(inspect.signature(BroadcastDiarization.__init__).parameters)
    if unknown:
        raise ValueError(f"unknown BroadcastDiarization arguments {sorted(unknown)}")
    merged = default_hyper_parameters(pipeline_kwargs.get("vad", "silero"), pipeline_kwargs.get("change_detection", "embedding"))
    _deep_update(merged, dict(params or {}))
    config = {
        "pipeline": {"name": PIPELINE_NAME, "params": {"embedding": embedding, **pipeline_kwargs}},
        "params": merged,
    }
    path = model_dir / "config.yaml"
    path.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    return path


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
