"""Embedders under evaluation, behind one small protocol, and the utterances they embed.

``Embedder.embed(waveforms: list[Tensor (T,)]) -> np.ndarray (N, D)`` for mono 16 kHz
waveforms. Implementations:

- :class:`SpeechBrainEmbedder`: a SpeechBrain model directory
  (``EncoderClassifier.from_hparams(source=dir, savedir=...)`` then ``encode_batch``);
- :class:`PyannoteEmbedder`: a pyannote.audio checkpoint (``Model.from_pretrained(path)``,
  forward on ``(B, 1, T)``);
- :class:`ResemblyzerEmbedder`: Resemblyzer's GE2E d-vectors (``VoiceEncoder('cpu')``,
  ``embed_utterance`` on the float waveform), the pretrained anchor;
- :class:`MFCCStatsEmbedder`: mean and standard deviation of SpeechBrain MFCCs over time,
  a classical baseline;
- :class:`PrecomputedEmbeddings`: saved ``.npz`` (``ids`` + ``embeddings``) or ``.npy``
  arrays, looked up by utterance id instead of computed.

Batches group waveforms of similar length (sorted by length) and a tqdm bar shows progress.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal_diar.audio import SAMPLE_RATE, load_audio

PathLike = Union[str, Path]
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".mkv", ".webm", ".aac"}


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed(self, waveforms: list[torch.Tensor]) -> np.ndarray: ...


def length_batches(lengths: Sequence[int], batch_size: int, same_length: bool = False) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), at most ``batch_size`` each;
    with ``same_length`` only equal lengths share a batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (
            not same_length or lengths[batches[-1][0]] == lengths[i]
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _pad(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T_max)`` zero-padded batch and the relative lengths SpeechBrain expects."""
    lengths = torch.tensor([w.shape[-1] for w in waveforms], dtype=torch.float32)
    batch = torch.nn.utils.rnn.pad_sequence([w.float() for w in waveforms], batch_first=True)
    return batch, lengths / lengths.max()


def _check_waveforms(waveforms: Sequence[torch.Tensor]) -> None:
    for k, w in enumerate(waveforms):
        if not isinstance(w, torch.Tensor) or w.ndim != 1 or w.numel() == 0:
            raise ValueError(
                f"waveforms[{k}]: expected a non-empty mono (time,) tensor, got "
                f"{type(w).__name__} of shape {tuple(getattr(w, 'shape', ()))}"
            )


def _embed_batched(waveforms, batch_size, forward, desc, same_length=False, progress=True) -> np.ndarray:
    _check_waveforms(waveforms)
    if not waveforms:
        raise ValueError("waveforms: empty list, nothing to embed")
    out: list[Optional[np.ndarray]] = [None] * len(waveforms)
    batches = length_batches([w.shape[-1] for w in waveforms], batch_size, same_length)
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            emb = np.asarray(forward([waveforms[i] for i in batch]), dtype=np.float32)
            for i, e in zip(batch, emb):
                out[i] = e
    return np.stack(out)


class MFCCStatsEmbedder:
    """Mean and standard deviation over time of ``n_mfcc`` MFCCs (SpeechBrain ``MFCC``,
    25 ms windows, 10 ms hop, no deltas), with c0 (log energy) left out by default so
    that loudness does not dominate the cosine: ``D = 2 (n_mfcc - 1)``."""

    def __init__(self, n_mfcc: int = 20, drop_c0: bool = True, batch_size: int = 32, progress: bool = True):
        from speechbrain.lobes.features import MFCC

        self.features = MFCC(deltas=False, context=False, n_mfcc=n_mfcc, sample_rate=SAMPLE_RATE)
        self.drop_c0 = drop_c0
        self.batch_size = batch_size
        self.progress = progress
        self.name = f"mfcc-stats (SpeechBrain MFCC, {n_mfcc} coefficients{', c0 dropped' if drop_c0 else ''}, mean+std)"

    def _forward(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        batch, _ = _pad(waveforms)
        feats = self.features(batch)  # (B, frames, n_mfcc); centred STFT: 1 + T // hop frames
        if self.drop_c0:
            feats = feats[..., 1:]
        n = torch.tensor([1 + w.shape[-1] // 160 for w in waveforms])
        mask = (torch.arange(feats.shape[1])[None] < n[:, None]).unsqueeze(-1).float()
        mean = (feats * mask).sum(1) / n[:, None]
        var = (((feats - mean[:, None]) ** 2) * mask).sum(1) / n[:, None]
        return torch.cat([mean, var.sqrt()], dim=-1).numpy()

    def embed(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        return _embed_batched(waveforms, self.batch_size, self._forward, "MFCC stats", progress=self.progress)


class ResemblyzerEmbedder:
    """Resemblyzer's pretrained GE2E speaker encoder (256-D d-vectors, weights in the wheel)."""

    def __init__(self, device: str = "cpu", progress: bool = True):
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:  # an optional extra ("anchors")
            raise ImportError("the resemblyzer embedder needs `pip install resemblyzer`") from exc
        self.encoder = VoiceEncoder(device, verbose=False)
        self.progress = progress
        self.name = "resemblyzer (GE2E d-vector, 256-D, pretrained)"

    def embed(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        return _embed_batched(
            waveforms, 1, lambda ws: [self.encoder.embed_utterance(ws[0].numpy())], "GE2E", progress=self.progress
        )


class SpeechBrainEmbedder:
    """A SpeechBrain model directory (``hyperparams.yaml`` + checkpoint files)."""

    def __init__(self, model_dir: PathLike, savedir: Optional[PathLike] = None, device: str = "cpu",
                 batch_size: int = 16, progress: bool = True):
        from speechbrain.inference.speaker import EncoderClassifier

        model_dir = Path(model_dir)
        if not (model_dir / "hyperparams.yaml").is_file():
            raise FileNotFoundError(f"{model_dir}: not a SpeechBrain model directory (no hyperparams.yaml)")
        from xmodal_diar.checkpoints import load_checkpoint

        for ckpt in sorted(model_dir.glob("*.ckpt")):  # named errors, before SpeechBrain's bare ones
            load_checkpoint(ckpt, "any")
        savedir = savedir or tempfile.mkdtemp(prefix="xmodal-speechbrain-")
        self.model = EncoderClassifier.from_hparams(
            source=str(model_dir.resolve()), savedir=str(savedir), run_opts={"device": device}
        )
        self.model.eval()
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.name = f"speechbrain:{model_dir}"

    def _forward(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        batch, lens = _pad(waveforms)
        emb = self.model.encode_batch(batch.to(self.device), lens.to(self.device))
        return emb.reshape(len(waveforms), -1).cpu().numpy()

    def embed(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        return _embed_batched(waveforms, self.batch_size, self._forward, "SpeechBrain", progress=self.progress)


class PyannoteEmbedder:
    """A pyannote.audio embedding checkpoint; forward on ``(B, 1, T)``. pyannote models take
    no padding mask, so only waveforms of identical length share a batch."""

    def __init__(self, checkpoint: PathLike, device: str = "cpu", batch_size: int = 16, progress: bool = True):
        from pyannote.audio import Model

        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint}: no such pyannote checkpoint")
        if checkpoint.is_file():
            from xmodal_diar.checkpoints import load_checkpoint

            load_checkpoint(checkpoint, "pyannote", weights_only=False)
        model = Model.from_pretrained(checkpoint, map_location=device)
        if model is None:
            raise ValueError(f"{checkpoint}: pyannote could not load a model from it")
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.name = f"pyannote:{checkpoint}"

    def _forward(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(waveforms)[:, None].to(self.device)
        return self.model(batch).reshape(len(waveforms), -1).cpu().numpy()

    def embed(self, waveforms: list[torch.Tensor]) -> np.ndarray:
        return _embed_batched(
            waveforms, self.batch_size, self._forward, "pyannote", same_length=True, progress=self.progress
        )


class PrecomputedEmbeddings:
    """Saved embeddings: ``.npz`` with ``ids`` (N,) and ``embeddings`` (N, D) (optional
    ``labels``), or a ``.npy`` (N, D) array in the order of the sorted utterance ids."""

    def __init__(self, path: PathLike):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such embeddings file")
        self.path = path
        self.name = f"precomputed:{path}"
        self.labels = None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = {"ids", "embeddings"} - set(data.files)
                if missing:
                    raise ValueError(f"{path}: missing array(s) {sorted(missing)}; expected 'ids' and 'embeddings'")
                self.ids = [str(i) for i in data["ids"]]
                self.embeddings = np.asarray(data["embeddings"], dtype=np.float32)
                if "labels" in data.files:
                    self.labels = [str(x) for x in data["labels"]]
        elif path.suffix == ".npy":
            self.ids = None
            self.embeddings = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            raise ValueError(f"{path}: expected a .npz or .npy embeddings file")
        if self.embeddings.ndim != 2:
            raise ValueError(f"{path}: embeddings must be (N, D), got shape {self.embeddings.shape}")
        if self.ids is not None and len(self.ids) != len(self.embeddings):
            raise ValueError(f"{path}: {len(self.ids)} ids for {len(self.embeddings)} embeddings")

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Rows for ``ids`` (matched on the full id, else on its last path component)."""
        if self.ids is None:
            if len(ids) != len(self.embeddings):
                raise ValueError(
                    f"{self.path}: {len(self.embeddings)} rows for {len(ids)} utterances; "
                    "a .npy must hold one row per utterance in sorted-id order (use .npz with ids otherwise)"
                )
            order = np.argsort(np.asarray(ids))
            rows = np.empty(len(ids), dtype=np.int64)
            rows[order] = np.arange(len(ids))
            return self.embeddings[rows]
        index = {i: k for k, i in enumerate(self.ids)}
        short = {Path(i).name: k for k, i in enumerate(self.ids)}
        rows = []
        for i in ids:
            k = index.get(i, short.get(Path(i).name))
            if k is None:
                raise ValueError(f"{self.path}: no embedding for utterance {i!r}")
            rows.append(k)
        return self.embeddings[rows]


def load_embedder(spec: str, device: str = "cpu", progress: bool = True):
    """``mfcc`` | ``resemblyzer`` | a SpeechBrain model dir | a pyannote checkpoint | ``.npz``/``.npy``."""
    if spec == "mfcc":
        return MFCCStatsEmbedder(progress=progress)
    if spec == "resemblyzer":
        return ResemblyzerEmbedder(device, progress=progress)
    path = Path(spec)
    if path.suffix in (".npz", ".npy"):
        return PrecomputedEmbeddings(path)
    if path.is_dir() and (path / "hyperparams.yaml").is_file():
        return SpeechBrainEmbedder(path, device=device, progress=progress)
    if path.is_dir() and (path / "pytorch_model.bin").is_file():
        return PyannoteEmbedder(path / "pytorch_model.bin", device=device, progress=progress)
    if path.is_file():
        return PyannoteEmbedder(path, device=device, progress=progress)
    raise ValueError(
        f"--embedder {spec!r}: expected 'mfcc', 'resemblyzer', a SpeechBrain model directory "
        "(with hyperparams.yaml), a pyannote checkpoint (file or directory with pytorch_model.bin), "
        "or a .npz/.npy embeddings file"
    )


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance: ``path`` cropped to ``[start, stop]`` seconds when given."""

    id: str
    path: Path
    speaker: str
    start: Optional[float] = None
    stop: Optional[float] = None


def list_utterances(source: PathLike) -> list[Utterance]:
    """Utterances of a folder (speaker = parent folder name, id = relative path without
    suffix) or of a SpeechBrain CSV manifest (``ID``, ``wav``, ``spk_id``, optional ``start``
    and ``stop`` in SAMPLES at 16 kHz as in SpeechBrain's VoxCeleb recipe; relative ``wav``
    paths and ``$data_root`` resolve against the CSV's folder), sorted by id."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"{source}: no audio file ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
        utterances = [
            Utterance(id=str(p.relative_to(source).with_suffix("")), path=p, speaker=p.parent.name) for p in files
        ]
        if len({u.speaker for u in utterances}) == 1 and files[0].parent == source:
            raise ValueError(f"{source}: audio files must sit in one sub-folder per speaker (SPK/*.flac)")
        return utterances
    if source.suffix.lower() != ".csv":
        raise ValueError(f"{source}: expected a folder of SPK/ audio sub-folders or a SpeechBrain .csv manifest")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such manifest")
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"ID", "wav", "spk_id"}
    missing = required - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{source}: missing column(s) {sorted(missing)} (a SpeechBrain manifest has ID, wav, spk_id)")
    utterances = []
    for row in rows:
        wav = row["wav"].replace("$data_root", str(source.parent))
        path = Path(wav) if Path(wav).is_absolute() else source.parent / wav
        start = float(row["start"]) / SAMPLE_RATE if row.get("start") not in (None, "") else None
        stop = float(row["stop"]) / SAMPLE_RATE if row.get("stop") not in (None, "") else None
        utterances.append(Utterance(row["ID"], path, row["spk_id"], start, stop))
    return sorted(utterances, key=lambda u: u.id)


def middle_crop(waveform: torch.Tensor, duration: float, sample_rate: int = SAMPLE_RATE) -> Optional[torch.Tensor]:
    """The ``duration`` seconds in the middle of ``waveform``; None when it is shorter."""
    n = int(round(duration * sample_rate))
    if n <= 0:
        raise ValueError(f"duration: must be positive, got {duration}")
    if waveform.shape[-1] < n:
        return None
    start = (waveform.shape[-1] - n) // 2
    return waveform[..., start : start + n]


def load_waveforms(utterances: Sequence[Utterance]) -> list[torch.Tensor]:
    """Every utterance as a mono 16 kHz waveform (``xmodal_diar.audio.load_audio``)."""
    return [load_audio(u.path, start=u.start, end=u.stop) for u in utterances]


@dataclass
class Bucket:
    """Embeddings of one duration bucket: rows ``kept`` of the utterance list."""

    name: str
    duration: Optional[float]  # crop length in seconds; None = natural length
    kept: np.ndarray
    embeddings: np.ndarray
    n_skipped: int
    seconds: np.ndarray  # duration of each kept item


def bucket_name(duration: Optional[float]) -> str:
    return "natural" if duration is None else f"{duration:g}s"


def embed_by_duration(
    waveforms: Sequence[torch.Tensor],
    embedder,
    durations: Sequence[Optional[float]],
    ids: Optional[Sequence[str]] = None,
) -> dict[str, Bucket]:
    """Embed one middle crop of each waveform per duration (``None``: the whole waveform).

    Utterances shorter than the crop are skipped and counted. :class:`PrecomputedEmbeddings`
    are looked up by ``ids`` and only give the natural-length bucket.
    """
    seconds = np.array([w.shape[-1] / SAMPLE_RATE for w in waveforms])
    buckets = {}
    for duration in durations:
        name = bucket_name(duration)
        if isinstance(embedder, PrecomputedEmbeddings):
            if duration is not None:
                raise ValueError(
                    f"{embedder.path}: precomputed embeddings only give natural lengths; drop --durations "
                    f"or embed the {name} crops yourself"
                )
            if ids is None:
                raise ValueError("ids: precomputed embeddings are looked up by utterance id")
            kept = np.arange(len(ids))
            buckets[name] = Bucket(name, None, kept, embedder.lookup(list(ids)), 0, seconds[kept] if len(seconds) else np.ones(len(ids)))
            continue
        if duration is None:
            crops = list(waveforms)
        else:
            crops = [middle_crop(w, duration) for w in waveforms]
        kept = np.array([k for k, c in enumerate(crops) if c is not None], dtype=np.int64)
        embeddings = embedder.embed([crops[k] for k in kept]) if len(kept) else np.zeros((0, 0), np.float32)
        length = seconds[kept] if duration is None else np.full(len(kept), float(duration))
        buckets[name] = Bucket(name, duration, kept, embeddings, len(crops) - len(kept), length)
    return buckets
