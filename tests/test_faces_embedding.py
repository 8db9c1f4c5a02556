"""Landmarks, alignment, face embeddings, quality and detect_and_embed (issue 3, part A)."""

from __future__ import annotations

import csv
import sys

import av
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from xmodal_diar.faces.alignment import (
    ARCFACE_TEMPLATE,
    FanLandmarker,
    align_arcface,
    build_landmarker,
    eyes_and_nose,
    similarity_matrix,
)
from xmodal_diar.faces.detection import BLAZEFACE_FILES, hub_checkpoints_dir
from xmodal_diar.faces.embedding import (
    FaceExtractor,
    OnnxEmbedder,
    build_embedder,
    detect_and_embed,
)
from xmodal_diar.faces.quality import estimate_pose, face_quality, frontality, sharpness
from xmodal_diar.faces.types import FaceDetection
from xmodal_diar.faces.video import load_image
from xmodal_diar.shared_data import shared_weights_root


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive pair scores above a negative one (ties count 1/2)."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def pair_auc(embeddings: np.ndarray, identities) -> float:
    identities = np.asarray(identities)
    upper = np.triu_indices(len(identities), 1)
    similarity = (embeddings @ embeddings.T)[upper]
    return roc_auc(similarity, (identities[:, None] == identities[None])[upper])


@pytest.fixture(scope="module")
def faces(shared_data):
    path = shared_data / "faces"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    if not (shared_weights_root() / "blazeface").is_dir() and not all(
        (hub_checkpoints_dir() / name).is_file() for name in BLAZEFACE_FILES
    ):
        pytest.skip("BlazeFace weights are neither in shared/weights/blazeface nor in the torch hub dir")
    return path


@pytest.fixture(scope="module")
def extractor(faces):
    return FaceExtractor(detector="blazeface", landmarks="dlib5", embedder="dlib")


@pytest.fixture(scope="module")
def obama(faces, extractor):
    """A real frontal photo, its best detection (with 5 landmarks) and its 68 landmarks."""
    rgb = load_image(faces / "celebrities" / "test" / "obama1.jpg")
    detection = extractor(rgb)[0]
    points68 = build_landmarker("dlib68").landmarks(rgb, [detection.box])[0]
    return rgb, detection, points68


# ---------------------------------------------------------------- verification on real faces


def test_orl_same_person_pairs_are_closer(faces, extractor):
    embeddings, identities = [], []
    for person in range(1, 21):  # 20 people x 3 grey 92x112 images (the whole set: AUC 0.9999)
        for shot in range(1, 4):
            found = extractor(load_image(faces / "orl" / f"s{person}" / f"{shot}.pgm"))
            if found:
                embeddings.append(found[0].embedding)
                identities.append(person)
    assert len(embeddings) >= 58  # blazeface misses 1 of the 400 ORL images
    auc = pair_auc(np.stack(embeddings), identities)
    assert auc >= 0.98, auc  # measured 1.000 on this subset


def test_celebrities_verification_and_two_person_photos(faces, extractor):
    root = faces / "celebrities"
    embeddings, identities = [], []
    for photo in sorted((root / "train").glob("*/*")):
        found = extractor(load_image(photo))
        assert found, photo
        embeddings.append(found[0].embedding)
        identities.append(photo.parent.name)
    embeddings = np.stack(embeddings)
    auc = pair_auc(embeddings, identities)
    assert auc >= 0.9, auc  # measured 1.000 (4 same-person and 32 different-person pairs)

    def who(embedding):
        return identities[int(np.argmax(embeddings @ embedding))]

    assert who(extractor(load_image(root / "test" / "johnsnow_test1.jpg"))[0].embedding) == "kit_harington"
    assert who(extractor(load_image(root / "test" / "alex_lacamoire1.jpg"))[0].embedding) == "alex_lacamoire"
    pair = extractor(load_image(root / "test" / "kit_with_rose.jpg"))
    assert len(pair) == 2 and {who(d.embedding) for d in pair} == {"kit_harington", "rose_leslie"}
    group = extractor(load_image(root / "test" / "obama_and_biden.jpg"))  # with a child in a corner
    assert len(group) >= 2 and {who(d.embedding) for d in group[:2]} == {"obama", "biden"}


def test_grey_input_gives_the_same_embedding(faces, extractor):
    grey = load_image(faces / "orl" / "s3" / "2.pgm")[..., 0]
    from_grey, = extractor(grey)
    from_rgb, = extractor(np.repeat(grey[..., None], 3, axis=2))
    assert np.allclose(from_grey.embedding, from_rgb.embedding)
    assert np.linalg.norm(from_grey.embedding) == pytest.approx(1.0, abs=1e-5)


def test_embed_matches_extractor_and_needs_landmarks(obama, extractor):
    rgb, detection, _ = obama
    vectors = extractor.embedder.embed(rgb, [detection, detection])
    assert vectors.shape == (2, 128) and np.allclose(vectors[0], detection.embedding, atol=1e-6)
    assert extractor.embedder.embed(rgb, []).shape == (0, 128)
    bare = FaceDetection(frame=0, time=0.0, box=detection.box, score=detection.score)
    with pytest.raises(ValueError, match="detection 1 has no landmarks"):
        extractor.embedder.embed(rgb, [detection, bare])


# ---------------------------------------------------------------- landmarks and alignment


def test_five_and_68_point_landmarks_agree(obama):
    _, detection, points68 = obama
    assert detection.landmarks.shape == (5, 2) and points68.shape == (68, 2)
    five, sixty_eight = eyes_and_nose(detection.landmarks), eyes_and_nose(points68)
    eye_distance = np.linalg.norm(sixty_eight[1] - sixty_eight[0])
    assert eye_distance > 100
    assert np.linalg.norm(five[:2] - sixty_eight[:2], axis=1).max() < 0.1 * eye_distance
    assert five[0, 0] < five[1, 0]  # image-left eye first
    assert sixty_eight[2, 1] > sixty_eight[:2, 1].max()  # the nose is below the eyes
    with pytest.raises(ValueError, match=r"expected a \(5, 2\) dlib or \(68, 2\)"):
        eyes_and_nose(np.zeros((7, 2)))


def test_dlib_chip_from_68_points_is_the_5_point_chip(obama, extractor):
    """The dlib chip is aligned on dlib's 5 points even from 68 (the mouth must not move it)."""
    from xmodal_diar.faces.alignment import DLIB5_FROM_68

    rgb, detection, points68 = obama
    assert np.abs(points68[DLIB5_FROM_68] - detection.landmarks).max() < 5  # the same 5 points (pixels)
    from68 = extractor.embedder.embed_crops([extractor.embedder.align(rgb, points68)])[0]
    assert 1.0 - float(from68 @ detection.embedding) < 0.01
    opened = points68.copy()
    opened[48:68, 1] += 15  # a wide-open mouth: the chip does not move
    assert np.array_equal(extractor.embedder.align(rgb, opened), extractor.embedder.align(rgb, points68))


def test_arcface_alignment_lands_on_the_template_and_undoes_rotation(obama):
    import cv2

    rgb, _, points68 = obama
    crop = align_arcface(rgb, points68)
    assert crop.shape == (112, 112, 3)
    matrix = similarity_matrix(
        np.concatenate([eyes_and_nose(points68), points68[[48, 54]]]), ARCFACE_TEMPLATE
    )
    warped_eyes = eyes_and_nose(points68)[:2] @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(warped_eyes - ARCFACE_TEMPLATE[:2]).max() < 4.0  # pixels in the 112 crop
    # rotate the photo by 30 degrees about the face: the aligned crop stays the same face crop
    centre = tuple(float(v) for v in points68.mean(0))
    rotation = cv2.getRotationMatrix2D(centre, 30, 1.0)
    rotated = cv2.warpAffine(rgb, rotation, (rgb.shape[1], rgb.shape[0]))
    rotated_points = points68 @ rotation[:, :2].T + rotation[:, 2]
    again = align_arcface(rotated, rotated_points)
    assert np.abs(again.astype(float) - crop.astype(float)).mean() < 8  # grey levels
    assert np.abs(rotated.astype(float) - rgb.astype(float)).mean() > 30
    _, roll = estimate_pose(points68)
    _, rotated_roll = estimate_pose(rotated_points)
    assert rotated_roll - roll == pytest.approx(-30, abs=0.5)  # OpenCV turns counter-clockwise


def test_fan_landmarker_integration(tmp_path, obama, monkeypatch):
    """face_alignment's 2DFAN4 weights cannot be downloaded here: the test writes a FAN state
    dict (one hourglass, to stay fast; 2DFAN4 has four) whose heatmap layer is all zeros, so
    every landmark is the heatmap's first pixel, and checks that FanLandmarker maps it back
    to the image through face_alignment's crop (centre shifted up by 0.12 h, side 200 s with
    s = (w + h) / 195)."""
    from face_alignment.models import FAN

    torch.manual_seed(0)
    state = FAN(1).state_dict()
    state["l0.weight"].zero_()
    state["l0.bias"].zero_()
    path = tmp_path / "fan1.pth"
    torch.save(state, path)
    rgb, detection, _ = obama
    landmarker = FanLandmarker(path=path, num_modules=1, num_threads=1)
    points, = landmarker.landmarks(rgb, [detection.box])
    assert points.shape == (68, 2) and np.allclose(points, points[0])
    x1, y1, x2, y2 = detection.box
    side = 200 * ((x2 - x1) + (y2 - y1)) / 195
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2 - 0.12 * (y2 - y1)])
    expected = centre + side * (0.5 / 64 - 0.5)
    assert np.abs(points[0] - expected).max() < 2.0, (points[0], expected)
    assert landmarker.landmarks(rgb, []) == []
    with pytest.raises(ValueError, match="not a FAN\\(4\\) state dict"):
        FanLandmarker(path=path)  # default: four hourglasses, as 2DFAN4
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="2DFAN4-11f355bf06.pth.tar do not exist .* use landmarks='dlib5'"):
        build_landmarker("fan")


# ---------------------------------------------------------------- user models


class _ChannelMeans(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Flat(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten()


def test_torchscript_embedder(tmp_path, obama):
    """A TorchScript model the test scripts itself (per-channel mean of its input) shows the
    preprocessing: (pixel - mean) / std, RGB or BGR order, then L2 normalisation."""
    path = tmp_path / "means.pt"
    torch.jit.script(_ChannelMeans()).save(str(path))
    crop = np.empty((112, 112, 3), dtype=np.uint8)
    crop[...] = (255, 127, 0)
    rgb_model = build_embedder("torchscript", path=path, mean=127.5, std=127.5)
    expected = np.array([127.5, -0.5, -127.5]) / np.linalg.norm([127.5, -0.5, -127.5])
    assert np.allclose(rgb_model.embed_crops([crop])[0], expected, atol=1e-6)
    bgr_model = build_embedder("torchscript", path=path, mean=(0, 0, 0), std=1.0, bgr=True)
    assert np.allclose(bgr_model.embed_crops([crop])[0], np.array([0, 127, 255]) / np.linalg.norm([0, 127, 255]))
    rgb, detection, _ = obama
    vectors = rgb_model.embed(rgb, [detection])  # aligned on the ArcFace template from dlib's 5 points
    assert vectors.shape == (1, 3) and rgb_model.align(rgb, detection.landmarks).shape == (112, 112, 3)
    flat = tmp_path / "flat.pt"
    torch.jit.script(_Flat()).save(str(flat))
    with pytest.raises(ValueError, match="flat.pt: expected an \\(N, D\\) embedding output"):
        build_embedder("torchscript", path=flat).embed_crops([crop])
    with pytest.raises(ValueError, match="expects 112x112 crops"):
        rgb_model.embed_crops([crop[:100, :100]])
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a TorchScript model"):
        build_embedder("torchscript", path=tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        build_embedder("torchscript", path=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="needs path="):
        build_embedder("torchscript")
    with pytest.raises(ValueError, match="unknown face embedder 'facenet'"):
        build_embedder("facenet")


def test_onnx_without_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        OnnxEmbedder(tmp_path / "model.onnx")


# ---------------------------------------------------------------- quality


def test_quality_terms(obama):
    rgb, detection, points68 = obama
    crop = detection.aligned
    blurred = np.stack([gaussian_filter(crop[..., c], 2.0) for c in range(3)], axis=2)
    assert sharpness(blurred) < 0.5 * sharpness(crop)
    # a profile: the nose moves sideways towards the image-right eye and the eyes close up
    left, right, _ = eyes_and_nose(points68)
    profile = points68.copy()
    profile[27:36, 0] += 0.4 * (right[0] - left[0])
    profile[36:48, 0] = (profile[36:48, 0] - left[0]) * 0.5 + left[0]
    assert abs(estimate_pose(profile)[0]) > abs(estimate_pose(points68)[0]) + 20
    assert frontality(profile) < frontality(points68) - 0.2
    angle = np.radians(35)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (points68 - points68.mean(0)) @ rotation.T + points68.mean(0)
    assert frontality(rolled) < 0.75 * frontality(points68)
    quality = face_quality(detection.score, detection.box, crop, detection.landmarks)
    assert quality == detection.quality and 0.6 < quality.frontality <= 1 and quality.size == 1.0
    x1, y1, _, _ = detection.box
    small = face_quality(1.7, np.array([x1, y1, x1 + 56, y1 + 56]), crop, points68)
    assert small.size == pytest.approx(0.5) and small.score == 1.0  # 56 px of the 112 px reference


# ---------------------------------------------------------------- the entry point


def test_detect_and_embed_on_talking_heads(talking_heads, faces):
    with open(talking_heads / "identities.csv") as f:
        identity = {row["clip"]: row["identity"] for row in csv.DictReader(f)}
    extractor = FaceExtractor(keep_aligned=False)
    means = {}
    for clip in identity:
        detections = detect_and_embed(talking_heads / f"{clip}.mp4", fps=0.5, detector=extractor.detector,
                                      embedder=extractor.embedder, progress=False, keep_aligned=(clip == "00002"))
        times = [d.time for d in detections]
        assert times == sorted(times) and times[0] == 0.0 and detections[0].frame == 0
        assert {round(t / 2) for t in times} == set(range(round(times[-1] / 2) + 1))  # a face every 2 s
        for d in detections:
            assert np.linalg.norm(d.embedding) == pytest.approx(1.0, abs=1e-5)
            assert d.landmarks.shape == (5, 2) and np.all((d.quality.as_vector() >= 0) & (d.quality.as_vector() <= 1))
            assert (d.aligned is not None) == (clip == "00002")
        mean = np.mean([d.embedding for d in detections], axis=0)
        means[clip] = mean / np.linalg.norm(mean)
    assert means["00002"] @ means["517600055"] > max(
        means["00002"] @ means[c] for c in means if identity[c] != "th01"
    )  # the two clips of th01 (measured cosine distance 0.03 vs 0.11 and more)


def test_embed_every_nth_sampled_frame(talking_heads, faces):
    detections = detect_and_embed(talking_heads / "00002.mp4", fps=2.0, embed_every=3, progress=False)
    frames = sorted({d.frame for d in detections})
    assert len(frames) == 11  # 5.04 s at 2 fps, a face in each
    embedded = {d.frame for d in detections if d.embedding is not None}
    assert embedded == set(frames[::3])
    assert all(d.quality is not None and d.aligned is not None for d in detections)
    with pytest.raises(ValueError, match="embed_every must be a positive"):
        detect_and_embed(talking_heads / "00002.mp4", embed_every=0, progress=False)


def test_video_without_faces_gives_no_detections(tmp_path, faces):
    path = tmp_path / "sky.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(10):
            image = np.zeros((96, 128, 3), dtype=np.uint8)
            image[..., 2] = np.linspace(100, 250, 128, dtype=np.uint8)[None]
            image[..., 1] = 40 + 5 * i
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert detect_and_embed(path, fps=5.0, progress=False) == []


def test_embedding_in_a_worker_process_gives_the_same_tracks(talking_heads, faces):
    """``embed_workers=1``: dlib runs in a spawned process (dlib holds the GIL); the
    embeddings must be those computed in-process, on the same detections."""
    from xmodal_diar.faces import extract_face_tracks

    clip = talking_heads / "00002.mp4"
    here = extract_face_tracks(clip, fps=2.0, embed_every=2, extractor=FaceExtractor(keep_aligned=False))
    worker = FaceExtractor(keep_aligned=False, embed_workers=1)
    try:
        there = extract_face_tracks(clip, fps=2.0, embed_every=2, extractor=worker)
        again = extract_face_tracks(clip, fps=2.0, embed_every=2, extractor=worker)  # the process is reused
    finally:
        worker.close()
    for result in (there, again):
        assert len(result.tracks) == len(here.tracks) == 1
        ours, theirs = here.tracks[0].detections, result.tracks[0].detections
        assert [d.frame for d in ours] == [d.frame for d in theirs]
        assert [d.embedding is None for d in ours] == [d.embedding is None for d in theirs]
        assert sum(d.embedding is not None for d in theirs) == 6  # 11 sampled frames, every 2nd
        for a, b in zip(ours, theirs):
            if a.embedding is not None:
                np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    with pytest.raises(ValueError, match="embed_workers must be 0"):
        FaceExtractor(embed_workers=2)
