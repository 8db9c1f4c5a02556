"""SpeechBrain CSV manifests of speech turns, with the face teacher's columns.

One row per speech turn, in the format of SpeechBrain's VoxCeleb recipe::

    ID,duration,wav,start,stop,spk_id,face_emb,face_quality

- ``duration`` in seconds, ``start``/``stop`` in SAMPLES at 16 kHz (as SpeechBrain's
  ``voxceleb_prepare.py`` and :func:`xmodal_diar.eval.embedders.list_utterances`);
- ``face_emb``: empty (no face paired with the turn), a path to a ``.npy`` file holding
  ``(D,)`` or ``(N, D)`` face embeddings (N per-window means over N equal windows of
  the turn, used by the Nagrani objective; the teacher ``t`` is their normalised mean),
  or ``D`` space-separated floats inline;
- ``face_quality``: empty or space-separated quality measures in [0, 1]
  (:class:`xmodal_diar.faces.FaceQuality` fields: score, size, sharpness, frontality).

Builders, one per source, all ending in :func:`write_manifest`:

- :func:`prepare_shared_data` the real data under :func:`~xmodal_diar.shared_data.shared_data_root`;
- :func:`prepare_videos` a folder of videos + RTTM (the broadcast case);
- :func:`prepare_voxceleb` VoxCeleb1/2 layout;
- :func:`prepare_protocol` any ``pyannote.database`` protocol.

Turns are split into equal parts of at most ``max_turn`` seconds (short turns on
purpose, as broadcast turns are short), and identities with fewer than
``min_turns_per_identity`` turns are dropped (triplet mining needs two samples).
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

SAMPLE_RATE = 16000
REQUIRED_COLUMNS = ("ID", "duration", "wav", "start", "stop", "spk_id")
FACE_COLUMNS = ("face_emb", "face_quality")
COLUMNS = REQUIRED_COLUMNS + FACE_COLUMNS
AUDIO_SUFFIXES = (".wav", ".flac", ".m4a", ".mp3", ".ogg", ".mp4", ".mkv", ".avi", ".webm")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")

PathLike = Union[str, Path]
logger = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A manifest (or the data a builder reads) that cannot be used; the message names file and fix."""


@dataclass(frozen=True)
class Turn:
    """One speech turn of a recording, in seconds."""

    start: float
    end: float
    label: str


# --------------------------------------------------------------------------- reading


def parse_face_embedding(value: str, base: Path) -> Optional[np.ndarray]:
    """A ``face_emb`` cell as a float32 ``(D,)`` or ``(N, D)`` array (None when empty)."""
    value = (value or "").strip()
    if not value:
        return None
    if value.endswith(".npy"):
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            raise ManifestError(f"face embedding file {path} does not exist")
        return np.load(path).astype(np.float32)
    return np.array([float(x) for x in value.split()], dtype=np.float32)


def parse_quality(value: str) -> Optional[np.ndarray]:
    value = (value or "").strip()
    return np.array([float(x) for x in value.split()], dtype=np.float32) if value else None


def read_manifest(path: PathLike, face_dim: Optional[int] = None) -> list[dict]:
    """Rows of a manifest, validated early.

    Raises :class:`ManifestError` naming the file (and row) for: a missing or empty
    file, missing columns, non-numeric or inconsistent ``duration``/``start``/``stop``,
    an empty ``spk_id``, a face embedding whose dimension is not ``face_dim``, a
    malformed ``face_quality``. Rows get parsed ``face`` (array or None) and ``quality``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest; build it with `xmodal-diar prepare ... --out DIR`")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)} "
            f"(+ optional {list(FACE_COLUMNS)}); rebuild it with `xmodal-diar prepare`"
        )
    if not rows:
        raise ManifestError(f"{path}: no row; the data folder it was built from may be empty")
    n_quality = None
    for k, row in enumerate(rows, start=2):  # line numbers, header is line 1
        where = f"{path}, line {k} (ID {row.get('ID')!r})"
        try:
            duration, start, stop = float(row["duration"]), int(float(row["start"])), int(float(row["stop"]))
        except (TypeError, ValueError):
            raise ManifestError(
                f"{where}: duration/start/stop must be numbers (seconds, samples, samples), "
                f"got {row.get('duration')!r}, {row.get('start')!r}, {row.get('stop')!r}"
            ) from None
        if not 0 <= start < stop or duration <= 0:
            raise ManifestError(f"{where}: need 0 <= start < stop (samples) and duration > 0, got {start}, {stop}, {duration}")
        if not (row.get("spk_id") or "").strip() or not (row.get("wav") or "").strip():
            raise ManifestError(f"{where}: empty spk_id or wav")
        try:
            face = parse_face_embedding(row.get("face_emb", ""), path.parent)
            quality = parse_quality(row.get("face_quality", ""))
        except ValueError as exc:
            raise ManifestError(f"{where}: malformed face_emb or face_quality ({exc})") from None
        if face is not None:
            if face.ndim not in (1, 2) or not np.isfinite(face).all():
                raise ManifestError(f"{where}: face_emb must be a finite (D,) or (N, D) array, got shape {face.shape}")
            if face_dim is not None and face.shape[-1] != face_dim:
                raise ManifestError(
                    f"{where}: face embedding of dimension {face.shape[-1]}, expected face_dim={face_dim}; "
                    f"re-extract the faces with the embedder the recipe expects or set face_dim={face.shape[-1]}"
                )
        if quality is not None:
            n_quality = n_quality or len(quality)
            if len(quality) != n_quality or not np.isfinite(quality).all():
                raise ManifestError(f"{where}: face_quality must hold {n_quality} finite numbers, got {row['face_quality']!r}")
        row.update(duration=duration, start=start, stop=stop, face=face, quality=quality)
    return rows


def check_identities(rows: Sequence[dict], path: PathLike, min_samples: int = 2) -> Counter:
    """Turn counts per ``spk_id``; :class:`ManifestError` if one has fewer than ``min_samples``."""
    counts = Counter(r["spk_id"] for r in rows)
    few = sorted(spk for spk, n in counts.items() if n < min_samples)
    if few:
        shown = ", ".join(f"{s} ({counts[s]})" for s in few[:5]) + (" ..." if len(few) > 5 else "")
        raise ManifestError(
            f"{path}: {len(few)} identit{'y has' if len(few) == 1 else 'ies have'} fewer than {min_samples} "
            f"samples: {shown}; triplet mining needs {min_samples} per identity in a batch: drop them, "
            f"or rebuild with a smaller max_turn so long turns split into several"
        )
    return counts


#: Slack (s) between a row's ``stop`` and the end of its audio: rounding to samples, and
#: container durations that differ from the decoded length by a frame.
STOP_TOLERANCE = 0.01


def check_audio(rows: Sequence[dict], path: PathLike, max_listed: int = 50) -> None:
    """Check the audio of every row before training: the file exists, its header reads
    (:func:`xmodal_diar.audio.audio_info`: headers only, each file once) and it lasts at
    least ``stop``. All bad rows are reported at once in one :class:`ManifestError`, so
    that a bad path does not crash a run hours in, at the batch that first draws it."""
    from xmodal_diar.audio import AudioError, audio_info

    durations: dict = {}
    problems = []
    for row in rows:
        wav = row["wav"]
        if wav not in durations:
            try:
                durations[wav] = audio_info(wav).duration
            except AudioError as exc:
                durations[wav] = exc
        duration = durations[wav]
        where = f"ID {row['ID']!r}"
        if isinstance(duration, AudioError):
            problems.append(f"{where}: {duration}")
        elif row["stop"] / SAMPLE_RATE > duration + STOP_TOLERANCE:
            problems.append(
                f"{where}: stop {row['stop']} samples ({row['stop'] / SAMPLE_RATE:.2f} s) is after the end of "
                f"{wav} ({duration:.2f} s)"
            )
    if problems:
        listed = "\n  ".join(problems[:max_listed])
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise ManifestError(
            f"{path}: {len(problems)} of {len(rows)} rows have unusable audio (fix or drop them, or rebuild "
            f"the manifest with `xmodal-diar prepare`):\n  {listed}{more}"
        )


# --------------------------------------------------------------------------- writing


def split_turn(start: float, end: float, max_turn: float = 3.0, min_parts: int = 1) -> list[tuple[float, float]]:
    """``[start, end]`` in ``max(min_parts, ceil(duration / max_turn))`` equal parts."""
    if end <= start:
        raise ValueError(f"split_turn: empty turn [{start}, {end}]")
    n = max(min_parts, math.ceil((end - start) / max_turn - 1e-9))
    step = (end - start) / n
    return [(start + i * step, start + (i + 1) * step) for i in range(n)]


def manifest_row(
    uid: str, wav: PathLike, start: float, end: float, spk_id: str,
    face_emb: str = "", face_quality: Optional[Sequence[float]] = None,
) -> dict:
    """One manifest row (times in seconds here, written in samples)."""
    return {
        "ID": uid,
        "duration": f"{end - start:.3f}",
        "wav": str(wav),
        "start": int(round(start * SAMPLE_RATE)),
        "stop": int(round(end * SAMPLE_RATE)),
        "spk_id": spk_id,
        "face_emb": face_emb,
        "face_quality": "" if face_quality is None else " ".join(f"{q:.4f}" for q in face_quality),
    }


def drop_rare_identities(rows: list[dict], min_turns: int = 2, source: str = "") -> list[dict]:
    """Rows of the identities with at least ``min_turns`` turns (the others are logged)."""
    counts = Counter(r["spk_id"] for r in rows)
    kept = [r for r in rows if counts[r["spk_id"]] >= min_turns]
    dropped = sorted(s for s, n in counts.items() if n < min_turns)
    if dropped:
        logger.info("%s: dropped %d identities with fewer than %d turns: %s", source, len(dropped), min_turns, dropped)
    return kept


def write_manifest(rows: Sequence[dict], path: PathLike) -> Path:
    """Write ``rows`` as a SpeechBrain CSV (columns :data:`COLUMNS`)."""
    from xmodal_diar.outputs import atomic_write

    path = Path(path)
    if not rows:
        raise ManifestError(f"{path}: nothing to write (no turn found in the source)")
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepare_once(out_dir: PathLike, names: Sequence[str], options: dict, build: Callable[[], object]) -> bool:
    """``build()`` the manifests ``<out_dir>/<name>.csv`` unless they exist AND were built
    with the same ``options`` (recorded in ``<out_dir>/<names joined by +>.options.json``
    after a build): changing ``--max_*`` or ``max_turn`` rebuilds instead of reusing stale
    files. Returns whether it built."""
    import json

    out = Path(out_dir)
    key = json.loads(json.dumps(options, sort_keys=True, default=str))
    record = out / f"{'+'.join(names)}.options.json"
    if all((out / f"{name}.csv").is_file() for name in names) and record.is_file():
        if json.loads(record.read_text()) == key:
            return False
    if record.is_file():
        logger.info("%s: manifest options changed, rebuilding (%s)", out, key)
        record.unlink()
    build()
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    return True


# --------------------------------------------------------------------------- faces


def cached_face_tracks(
    video: PathLike, cache_dir: PathLike, fps: float = 5.0, detector: str = "dlib-hog", stem: Optional[str] = None
):
    """:func:`xmodal_diar.faces.extract_face_tracks` of ``video``, cached as ``<stem>.faces.npz``.

    ``stem`` defaults to the video's name less its LAST suffix (``show.part1.mp4`` ->
    ``show.part1``, as ``xmodal-diar faces`` names its outputs); callers caching videos
    of several folders in one ``cache_dir`` pass :func:`xmodal_diar.outputs.output_stems`.
    A cached file recorded for a video of another name raises :class:`ManifestError`:
    pairing one video's turns with another video's faces is silently wrong training data.
    """
    from xmodal_diar.faces import extract_face_tracks, load_face_tracks

    cache = Path(cache_dir) / f"{stem or Path(video).stem}.faces.npz"
    if cache.is_file():
        tracks = load_face_tracks(cache)
        if Path(tracks.video).name != Path(video).name:
            raise ManifestError(
                f"{cache}: holds the face tracks of {tracks.video}, not of {video}; "
                "delete it or use another face cache folder"
            )
        return tracks
    tracks = extract_face_tracks(video, fps=fps, detector=detector, keep_aligned=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tracks.save(cache)
    return tracks


def turn_face_features(track, start: float, end: float, n_windows: int = 4) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Face embeddings ``(n_windows, D)`` of ``track`` over equal windows of ``[start, end]``
    (the mean of the detections inside each window, else the nearest detection) and the
    mean quality vector of the detections inside the turn (the track's if none)."""
    from xmodal_diar.faces import FaceQuality

    dets = [d for d in track.detections if d.embedding is not None]
    if not dets:
        raise ValueError(f"track {track.track_id} has no face embedding")
    times = np.array([d.time for d in dets])
    emb = np.stack([d.embedding for d in dets]).astype(np.float32)
    windows = []
    edges = np.linspace(start, end, n_windows + 1)
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (times >= a) & (times < b)
        w = emb[inside].mean(0) if inside.any() else emb[np.argmin(np.abs(times - 0.5 * (a + b)))]
        windows.append(w / max(np.linalg.norm(w), 1e-12))
    in_turn = [d.quality.as_vector() for d in dets if start <= d.time <= end and d.quality is not None]
    if not in_turn:
        in_turn = [d.quality.as_vector() for d in dets if d.quality is not None]
    quality = np.mean(in_turn, axis=0) if in_turn else None
    assert quality is None or len(quality) == len(FaceQuality.FIELDS)
    return np.stack(windows), quality


def paired_rows(
    uid: str,
    media: PathLike,
    turns: Sequence[Turn],
    out_dir: Path,
    face_tracks=None,
    n_windows: int = 4,
    min_coverage: float = 0.5,
) -> list[dict]:
    """Rows of one recording; with ``face_tracks`` each turn is paired with a face track
    (:func:`xmodal_diar.faces.pair_turns_with_tracks`) and the paired turns get their
    ``face_emb`` (``.npy`` under ``out_dir/faces``) and ``face_quality``."""
    from pyannote.core import Annotation, Segment

    from xmodal_diar.outputs import atomic_write

    rows = []
    pairings = {}
    if face_tracks is not None and face_tracks.tracks:
        from xmodal_diar.faces import pair_turns_with_tracks

        annotation = Annotation(uri=uid)
        for k, t in enumerate(turns):
            annotation[Segment(t.start, t.end), k] = t.label
        for p in pair_turns_with_tracks(annotation, face_tracks.tracks, min_coverage=min_coverage):
            pairings[(round(p.segment.start, 3), round(p.segment.end, 3))] = p.track_id
    tracks = {t.track_id: t for t in (face_tracks.tracks if face_tracks is not None else [])}
    for k, t in enumerate(turns):
        row_id = f"{uid}_{k:04d}"
        face_path, quality = "", None
        track_id = pairings.get((round(t.start, 3), round(t.end, 3)))
        if track_id is not None:
            windows, quality = turn_face_features(tracks[track_id], t.start, t.end, n_windows)
            face_file = out_dir / "faces" / f"{row_id}.npy"
            with atomic_write(face_file, "wb") as fp:
                np.save(fp, windows)
            face_path = str(face_file.resolve())
        rows.append(manifest_row(row_id, Path(media).resolve(), t.start, t.end, t.label, face_path, quality))
    return rows


# --------------------------------------------------------------------------- sources


def _require_dir(path: PathLike, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ManifestError(f"{path}: no such folder ({what}); {fix}")
    return path


def split_files(files: Sequence[Path], max_turn: float, min_parts: int, label: Callable[[Path], str]) -> list[dict]:
    """Rows of whole-file utterances, each split into equal turns of at most ``max_turn``."""
    from xmodal_diar.audio import audio_info

    rows = []
    for f in files:
        for k, (a, b) in enumerate(split_turn(0.0, audio_info(f).duration, max_turn, min_parts)):
            rows.append(manifest_row(f"{f.stem}_{k:02d}", f.resolve(), a, b, label(f)))
    return rows


def librispeech_rows(folder: PathLike, max_turn: float = 3.0, min_parts: int = 2, max_speakers: Optional[int] = None) -> list[dict]:
    """LibriSpeech flacs (``SPK-CHAPTER-UTT.flac``, any depth), split into turns; identity ``ls<SPK>``."""
    folder = _require_dir(folder, "LibriSpeech", "point to a folder of SPK-CHAPTER-UTT.flac files")
    files = sorted(folder.rglob("*.flac"))
    if not files:
        raise ManifestError(f"{folder}: no .flac file; expected LibriSpeech SPK-CHAPTER-UTT.flac files")
    if max_speakers is not None:
        keep = sorted({f.name.split("-")[0] for f in files})[:max_speakers]
        files = [f for f in files if f.name.split("-")[0] in keep]
    return split_files(files, max_turn, min_parts, lambda f: "ls" + f.name.split("-")[0])


def rttm_turns(rttm: PathLike, min_duration: float = 0.5) -> dict[str, list[Turn]]:
    """Speech turns per uri of an RTTM file (turns shorter than ``min_duration`` dropped)."""
    from xmodal_diar.eval.diarization import read_rttm

    rttm = Path(rttm)
    if not rttm.is_file():
        raise ManifestError(f"{rttm}: no such RTTM file")
    turns = {}
    for uri, annotation in read_rttm(rttm).items():
        turns[uri] = [
            Turn(s.start, s.end, str(label))
            for s, _, label in annotation.itertracks(yield_label=True)
            if s.duration >= min_duration
        ]
    if not turns:
        raise ManifestError(f"{rttm}: no SPEAKER line")
    return turns


def split_turns(turns: Iterable[Turn], max_turn: float, prefix: str = "") -> list[Turn]:
    return [Turn(a, b, prefix + t.label) for t in turns for a, b in split_turn(t.start, t.end, max_turn)]


def talking_heads_rows(
    folder: PathLike, out_dir: Path, face_cache: Optional[PathLike] = None, max_turn: float = 3.0,
    faces: bool = True, n_windows: int = 4, fps: float = 5.0, max_clips: Optional[int] = None,
) -> list[dict]:
    """Talking-head clips (one person on screen and speaking): each clip split into equal
    turns of at most ``max_turn`` (at least 2), identity from ``identities.csv``, faces
    from the clip's face tracks."""
    from xmodal_diar.audio import audio_info

    folder = _require_dir(folder, "talking heads", "point to the talking-heads folder with identities.csv")
    table = folder / "identities.csv"
    if not table.is_file():
        raise ManifestError(f"{table}: missing; it maps each clip to its identity (columns clip,identity)")
    with open(table, newline="") as f:
        identities = {r["clip"]: r["identity"] for r in csv.DictReader(f)}
    rows = []
    for clip, identity in sorted(identities.items())[:max_clips]:
        video = folder / f"{clip}.mp4"
        if not video.is_file():
            raise ManifestError(f"{table}: clip {clip!r} has no video {video}")
        duration = audio_info(video).duration
        turns = [Turn(a, b, identity) for a, b in split_turn(0.0, duration, max_turn, 2)]
        tracks = cached_face_tracks(video, face_cache or out_dir / "face_tracks", fps) if faces else None
        rows += paired_rows(clip, video, turns, out_dir, tracks, n_windows)
    return rows


def prepare_shared_data(
    out_dir: PathLike,
    data_root: Optional[PathLike] = None,
    *,
    max_turn: float = 3.0,
    faces: bool = True,
    face_cache: Optional[PathLike] = None,
    max_librispeech_speakers: Optional[int] = None,
    max_talking_heads: Optional[int] = None,
    n_windows: int = 4,
) -> dict[str, Path]:
    """Manifests of the real data under ``data_root`` (default :func:`shared_data_root`).

    - ``train.csv``: librispeech/train-clean-100-1utt (labels only), talking-heads (real
      faces, 9 identities), ami-debug train turns (labels only);
    - ``valid.csv``: ami-debug development turns (labels only);
    - ``test.csv``: librispeech/test-other-10x10, held-out speakers, whole utterances.
    """
    from xmodal_diar.shared_data import shared_data_root

    root = Path(data_root) if data_root is not None else shared_data_root()
    _require_dir(root, "shared data", "set $XMODAL_DATA or pass --data-folder")
    out = Path(out_dir)
    ls_train = librispeech_rows(root / "librispeech" / "train-clean-100-1utt", max_turn, 2, max_librispeech_speakers)
    th = talking_heads_rows(root / "talking-heads", out, face_cache, max_turn, faces, n_windows, max_clips=max_talking_heads)
    ami = root / "ami-debug"
    ami_train = [
        manifest_row(f"{uri}_{k:03d}", (ami / f"{uri}.wav").resolve(), t.start, t.end, t.label)
        for uri, turns in rttm_turns(ami / "debug.train.rttm").items()
        for k, t in enumerate(split_turns(turns, max_turn, "ami"))
    ]
    ami_dev = [
        manifest_row(f"{uri}_{k:03d}", (ami / f"{uri}.wav").resolve(), t.start, t.end, t.label)
        for uri, turns in rttm_turns(ami / "debug.development.rttm").items()
        for k, t in enumerate(split_turns(turns, max_turn, "ami"))
    ]
    test_files = sorted((root / "librispeech" / "test-other-10x10").rglob("*.flac"))
    test = [manifest_row(f.stem, f.resolve(), 0.0, _duration(f), "ls" + f.parent.name) for f in test_files]
    return {
        "train": write_manifest(drop_rare_identities(ls_train + th + ami_train, 2, "train"), out / "train.csv"),
        "valid": write_manifest(drop_rare_identities(ami_dev, 2, "valid"), out / "valid.csv"),
        "test": write_manifest(test, out / "test.csv"),
    }


def _duration(path: Path) -> float:
    from xmodal_diar.audio import audio_info

    return audio_info(path).duration


def prepare_videos(
    video_dir: PathLike, rttm: PathLike, out_dir: PathLike, *, max_turn: float = 3.0, min_duration: float = 0.5,
    faces: bool = True, face_cache: Optional[PathLike] = None, n_windows: int = 4, fps: float = 5.0,
    name: str = "train",
) -> Path:
    """A folder of videos (``<uri>.mp4`` ...) + an RTTM of their speech turns (broadcast case):
    turns from the RTTM (split at ``max_turn``), faces from each video's face tracks, turns
    paired with tracks; writes ``out_dir/<name>.csv``."""
    video_dir = _require_dir(video_dir, "videos", "point to the folder of <uri>.mp4 files named in the RTTM")
    out = Path(out_dir)
    videos: dict = {}
    for p in sorted(video_dir.iterdir()):
        if p.suffix.lower() in VIDEO_SUFFIXES:
            if p.stem in videos:  # show.mp4 and show.mkv: which one the RTTM's uri means is unknown
                raise ManifestError(f"{video_dir}: two videos for uri {p.stem!r}: {videos[p.stem].name} and {p.name}")
            videos[p.stem] = p
    if not videos:
        raise ManifestError(f"{video_dir}: no video file ({', '.join(VIDEO_SUFFIXES)})")
    rows = []
    for uri, turns in sorted(rttm_turns(rttm, min_duration).items()):
        if uri not in videos:
            logger.warning("%s: no video for uri %s in %s, skipped", rttm, uri, video_dir)
            continue
        tracks = cached_face_tracks(videos[uri], face_cache or out / "face_tracks", fps) if faces else None
        rows += paired_rows(uri, videos[uri], split_turns(turns, max_turn), out, tracks, n_windows)
    if not rows:
        raise ManifestError(f"{rttm}: none of its uris has a video in {video_dir} (expected <uri>.mp4)")
    return write_manifest(drop_rare_identities(rows, 2, str(rttm)), out / f"{name}.csv")


def prepare_voxceleb(
    audio_dirs: Sequence[PathLike], out_dir: PathLike, *, video_dir: Optional[PathLike] = None,
    max_turn: float = 3.0, faces: bool = True, face_cache: Optional[PathLike] = None, n_windows: int = 4,
    name: str = "train", max_files: Optional[int] = None,
) -> Path:
    """VoxCeleb1 (``wav/idXXXXX/VIDEO/NNNNN.wav``) or VoxCeleb2 (``aac/idXXXXX/VIDEO/NNNNN.m4a``)
    folders; with ``video_dir`` (``mp4/idXXXXX/VIDEO/NNNNN.mp4``, VoxCeleb2's videos) each
    utterance gets the face track of its video. Identity = the ``idXXXXX`` folder."""
    out = Path(out_dir)
    files = []
    for d in audio_dirs:
        d = _require_dir(d, "VoxCeleb audio", "point to VoxCeleb's wav/ (VoxCeleb1) or aac/ (VoxCeleb2) folder")
        files += sorted(p for p in d.rglob("*") if p.suffix.lower() in (".wav", ".m4a", ".flac"))
    if not files:
        raise ManifestError(f"{', '.join(map(str, audio_dirs))}: no .wav/.m4a file under idXXXXX/VIDEO/")
    files = files[:max_files] if max_files else files
    rows = []
    for f in files:
        spk, video, utt = f.parts[-3], f.parts[-2], f.stem
        uid = f"{spk}-{video}-{utt}"
        turns = [Turn(a, b, spk) for a, b in split_turn(0.0, _duration(f), max_turn)]
        tracks = None
        if video_dir is not None and faces:
            mp4 = Path(video_dir) / spk / video / f"{utt}.mp4"
            if mp4.is_file():
                tracks = cached_face_tracks(mp4, face_cache or out / "face_tracks" / spk / video)
        rows += paired_rows(uid, f, turns, out, tracks, n_windows)
    return write_manifest(drop_rare_identities(rows, 2, "voxceleb"), out / f"{name}.csv")


def _has_subset(proto, subset: str) -> bool:
    """Whether a pyannote.database protocol implements ``subset`` (it raises when iterated)."""
    try:
        next(iter(getattr(proto, subset)()), None)
    except (NotImplementedError, AttributeError):
        return False
    return True


def prepare_protocol(
    protocol: str, out_dir: PathLike, *, subsets: Sequence[str] = ("train", "development", "test"),
    max_turn: float = 3.0, min_duration: float = 0.5, faces: bool = True, face_cache: Optional[PathLike] = None,
    n_windows: int = 4, database_yml: Optional[PathLike] = None,
) -> dict[str, Path]:
    """Any ``pyannote.database`` protocol (REPERE, ETAPE ... through their plugins, or a
    ``database.yml``): turns from each file's ``annotation``, audio from ``audio``, faces
    from a ``video`` key when the protocol's files have one. One CSV per subset."""
    from pyannote.database import FileFinder, registry

    if database_yml is not None:
        registry.load_database(str(database_yml))
    try:
        proto = registry.get_protocol(protocol, preprocessors={"audio": FileFinder()})
    except Exception as exc:
        raise ManifestError(
            f"pyannote.database protocol {protocol!r} not found ({exc}); install its plugin or pass database_yml"
        ) from None
    from xmodal_diar.outputs import output_stems

    missing = [subset for subset in subsets if not _has_subset(proto, subset)]
    if missing:
        have = [subset for subset in ("train", "development", "test") if _has_subset(proto, subset)]
        raise ManifestError(f"{protocol} has no {' or '.join(missing)} subset (it has: {', '.join(have) or 'none'}); "
                            f"choose with --subsets {' '.join(have)}")
    out = Path(out_dir)
    files = {subset: list(getattr(proto, subset)()) for subset in subsets}
    videos = [f.get("video") for fs in files.values() for f in fs if hasattr(f, "get") and f.get("video")]
    stems = output_stems(videos)  # one cache folder: same-named videos of different folders stay apart
    written = {}
    for subset in subsets:
        rows = []
        for file in files[subset]:
            uri = file["uri"]
            turns = [Turn(s.start, s.end, str(label)) for s, _, label in file["annotation"].itertracks(yield_label=True)
                     if s.duration >= min_duration]
            video = file.get("video") if hasattr(file, "get") else None
            tracks = (cached_face_tracks(video, face_cache or out / "face_tracks", stem=stems[str(video)])
                      if (faces and video) else None)
            rows += paired_rows(uri, file["audio"], split_turns(turns, max_turn), out, tracks, n_windows)
        if rows:
            written[subset] = write_manifest(drop_rare_identities(rows, 2, f"{protocol} {subset}"), out / f"{subset}.csv")
    if not written:
        raise ManifestError(f"{protocol}: no speech turn in subsets {list(subsets)}")
    return written
