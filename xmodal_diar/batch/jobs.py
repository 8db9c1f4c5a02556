"""The per-file diarization job, the same for every engine.

:class:`DiarizeWorker` loads the pipeline once (and the face models on the first
``--video`` job); :meth:`DiarizeWorker.process` diarizes one :class:`FileJob` and writes
its outputs atomically (:mod:`xmodal_diar.outputs`): ``<uri>.rttm``, with ``--video``
the face tracks ``<uri>.faces.npz``, with ``--plot`` ``<uri>.png``, then the manifest
record (written last: a file is done when its record is there). It never raises for a bad file: the returned record says ``status: failed``
with an error naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from xmodal_diar.batch import manifest
from xmodal_diar.outputs import atomic_write

SAMPLE_RATE = 16000


def model_fingerprint(model: Optional[str]) -> Optional[str]:
    """SHA-256 (16 hex) of the model directory's ``config.yaml`` (the embedded default's when
    ``model`` is None), so that a rerun after the model or its tuned values changed (e.g. a
    package upgrade) recomputes instead of keeping the old RTTMs; None for other models."""
    import hashlib

    from xmodal_diar.pipelines import DEFAULT_MODEL_DIR

    folder = Path(DEFAULT_MODEL_DIR) if model is None else Path(model).expanduser()
    config = folder / "config.yaml"
    return hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What every file of a batch is diarized with (the manifest records ``config()``)."""

    model: Optional[str] = None
    num_speakers: Optional[int] = None
    min_speakers: Optional[int] = None
    max_speakers: Optional[int] = None
    video: bool = False
    device: str = "cpu"
    plot: bool = False
    reference: Optional[str] = None
    torch_threads: Optional[int] = None
    face_embed_workers: int = 0
    #: face detector of ``--video`` (blazeface, dlib-hog, dlib-cnn, sfd)
    detector: str = "blazeface"
    #: a progress bar during face extraction (local runs)
    face_progress: bool = False

    def config(self) -> Dict[str, Any]:
        """The options that change a file's outputs: a rerun with other values recomputes."""
        model = None if self.model is None else str(Path(self.model).expanduser().resolve())
        return {
            "model": model,
            "model_config": model_fingerprint(self.model),
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
            "video": self.video,
            "detector": self.detector if self.video else None,
            "plot": self.plot,
            "reference": None if self.reference is None else str(Path(self.reference).resolve()),
        }


@dataclasses.dataclass(frozen=True)
class FileJob:
    """One input: ``source`` as given, ``path`` absolute (what workers read, whatever their
    working folder), its RTTM ``uri`` (no white space, unique in the batch), its size and
    mtime (the manifest's change check), its duration (0 if unknown)."""

    source: str
    uri: str
    size: int
    mtime_ns: int
    duration: float = 0.0
    path: str = ""

    @property
    def file(self) -> Path:
        return Path(self.path or self.source)


def read_reference(path: str) -> Dict[str, Any]:
    """Reference RTTM as ``{uri: Annotation}``: :func:`xmodal_diar.eval.diarization.read_rttm`
    (every line checked, errors naming the file and line), with ``--reference`` named."""
    from xmodal_diar.eval.diarization import read_rttm

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--reference: {path} is a directory, expected an RTTM file")
    if not p.exists():
        raise FileNotFoundError(f"--reference: {path} does not exist")
    try:
        return read_rttm(p)
    except ValueError as exc:
        raise ValueError(f"--reference: {exc}") from exc


def has_video(path: Path) -> bool:
    """Whether ``path`` holds a video stream (False for audio-only files)."""
    import av

    with av.open(str(path)) as container:
        return len(container.streams.video) > 0


def _error_text(exc: BaseException, job: FileJob) -> str:
    text = str(exc) or type(exc).__name__
    if not any(name in text for name in (job.source, str(job.file), job.file.name)):
        text = f"{type(exc).__name__}: {text}"
    return text


class DiarizeWorker:
    """Diarizes files into ``out_dir`` with one pipeline loaded once (a Ray actor wraps it)."""

    def __init__(self, options: BatchOptions, out_dir: str) -> None:
        import torch

        from xmodal_diar.devices import resolve_device
        from xmodal_diar.pipelines import load_pipeline

        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        self.options = options
        self.out_dir = Path(out_dir).resolve()
        self.pipeline = load_pipeline(options.model)
        self.pipeline.to(resolve_device(options.device))
        self.references = read_reference(options.reference) if options.reference else {}
        self._faces = None

    def ready(self) -> str:
        """Host and process id: answers once the pipeline is loaded."""
        return f"{os.uname().nodename}:{os.getpid()}"

    def face_extractor(self):
        """The face models, loaded on the first ``--video`` job (the one place they are built)."""
        if self._faces is None:
            from xmodal_diar.faces import FaceExtractor

            self._faces = FaceExtractor(  # 68 landmarks: mouth motion tells who speaks
                self.options.detector, "dlib68", "dlib", keep_aligned=False, embed_workers=self.options.face_embed_workers
            )
        return self._faces

    def close(self) -> None:
        if self._faces is not None and hasattr(self._faces, "close"):
            self._faces.close()
        self._faces = None

    def process(self, job: FileJob) -> Dict[str, Any]:
        """Diarize ``job`` and write its outputs; the manifest record (status ok or failed)."""
        record = manifest.new_record(job, self.options)
        try:
            record.update(self._diarize(job))
            manifest.write_record(self.out_dir, record)
        except Exception as exc:  # one bad file must not stop the batch: report it
            record.update(status="failed", error=_error_text(exc, job))
        return record

    def _diarize(self, job: FileJob) -> Dict[str, Any]:
        from xmodal_diar.audio import load_audio

        path = job.file
        warnings: List[str] = []
        started = time.perf_counter()
        waveform = load_audio(path)
        duration = waveform.shape[-1] / SAMPLE_RATE
        file: Dict[str, Any] = {"waveform": waveform[None], "sample_rate": SAMPLE_RATE, "uri": job.uri}
        outputs = [f"{job.uri}.rttm"]
        if self.options.video:
            if has_video(path):
                from xmodal_diar.faces import extract_face_tracks

                file["face_evidence"] = extract_face_tracks(
                    path, extractor=self.face_extractor(), progress=self.options.face_progress
                )
                outputs.append(f"{job.uri}.faces.npz")
                file["face_evidence"].save(self.out_dir / outputs[-1])  # atomic
            else:
                warnings.append("no video stream: diarized from audio only")
        output = self.pipeline(
            file,
            num_speakers=self.options.num_speakers,
            min_speakers=self.options.min_speakers,
            max_speakers=self.options.max_speakers,
        )
        annotation = getattr(output, "speaker_diarization", output)  # pyannote 4 DiarizeOutput or Annotation
        annotation.uri = job.uri
        elapsed = time.perf_counter() - started
        with atomic_write(self.out_dir / outputs[0]) as fp:
            annotation.write_rttm(fp)
        result: Dict[str, Any] = {
            "status": "ok",
            "duration": round(duration, 3),
            "speakers": len(annotation.labels()),
            "turns": len(annotation),
            "no_speech": len(annotation) == 0,
            "rtf": round(elapsed / duration, 4),
            "seconds": round(elapsed, 3),
            "warnings": warnings,
        }
        reference = None
        if self.options.reference is not None:
            reference = self.references.get(job.uri, self.references.get(path.stem))
            if reference is None:
                warnings.append(f"no reference for uri {job.uri!r} in {self.options.reference}")
            else:
                from pyannote.core import Segment, Timeline
                from pyannote.metrics.diarization import DiarizationErrorRate

                whole = Timeline([Segment(0.0, duration)], uri=job.uri)  # the reference covers the whole file
                der = DiarizationErrorRate()(reference, annotation, uem=whole)
                result["der"] = round(float(der), 6)
        if self.options.plot:
            from xmodal_diar.eval.plots import plot_timeline

            outputs.append(f"{job.uri}.png")
            plot_timeline(self.out_dir / outputs[-1], annotation, reference)
        result["outputs"] = outputs
        return result
