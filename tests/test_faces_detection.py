"""Video decoding and face detection (issue 3, part A): real clips and photos from ../shared/data."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from xmodal_diar.faces.detection import (
    BLAZEFACE_FILES,
    SFD_FILE,
    build_detector,
    hub_checkpoints_dir,
    install_blazeface_weights,
)
from xmodal_diar.faces.video import VideoError, as_rgb, iter_frames, load_image, video_info
from xmodal_diar.shared_data import shared_weights_root


def _clips(talking_heads):
    with open(talking_heads / "identities.csv") as f:
        return [talking_heads / f"{row['clip']}.mp4" for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def blazeface(shared_data):
    if not (shared_weights_root() / "blazeface").is_dir() and not all(
        (hub_checkpoints_dir() / name).is_file() for name in BLAZEFACE_FILES
    ):
        pytest.skip("BlazeFace weights are neither in shared/weights/blazeface nor in the torch hub dir")
    return build_detector("blazeface")  # front and back models


def _write_video(path, frames, pix_fmt="yuv420p", codec="mpeg4", rate=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        for image in frames:
            fmt = "gray" if image.ndim == 2 else "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)))
        container.mux(stream.encode())


# ---------------------------------------------------------------- video


def test_sampling_rate_and_frame_indices(talking_heads):
    clip = talking_heads / "00002.mp4"
    info = video_info(clip)
    assert (info.width, info.height, info.fps) == (224, 224, 25.0)
    every = list(iter_frames(clip, fps=None))
    assert len(every) == info.frames == 126
    sampled = list(iter_frames(clip, fps=5.0))
    indices = [index for index, _, _ in sampled]
    times = np.array([time for _, time, _ in sampled])
    assert indices == list(range(0, 126, 5))  # 25 fps sampled at 5 fps: every 5th frame
    assert np.allclose(np.diff(times), 0.2, atol=1e-6)
    assert sampled[3][2].shape == (224, 224, 3) and sampled[3][2].dtype == np.uint8
    assert np.array_equal(sampled[3][2], every[15][2])  # the same decoded picture
    two = list(iter_frames(clip, fps=2.0))
    assert len(two) == int(np.ceil(info.duration * 2)) and np.all(np.diff([t for _, t, _ in two]) >= 0.48)


def test_grey_video_and_grey_image_become_rgb(tmp_path, shared_data):
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    path = tmp_path / "grey.mkv"
    _write_video(path, [ramp] * 5, pix_fmt="gray", codec="ffv1")
    frames = list(iter_frames(path, fps=None))
    assert len(frames) == 5
    rgb = frames[0][2]
    assert rgb.shape == (48, 64, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    assert np.abs(rgb[..., 0].astype(int) - ramp).max() <= 2
    orl = load_image(shared_data / "faces" / "orl" / "s1" / "1.pgm")  # ORL images are grey
    assert orl.shape == (112, 92, 3) and np.array_equal(orl[..., 0], orl[..., 2])
    assert as_rgb(orl[..., 0]).shape == (112, 92, 3)


def test_bad_video_inputs_name_the_file(tmp_path, talking_heads):
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        iter_frames(tmp_path / "missing.mp4")  # raised at the call, before iterating
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4: cannot open as a video"):
        video_info(garbage)
    truncated = tmp_path / "truncated.mp4"  # mp4 whose index (moov atom) is cut off
    truncated.write_bytes((talking_heads / "00002.mp4").read_bytes()[:20000])
    with pytest.raises(VideoError, match="truncated.mp4"):
        list(iter_frames(truncated))
    audio_only = tmp_path / "speech.wav"
    sf.write(audio_only, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(VideoError, match="speech.wav: the file has no video stream"):
        list(iter_frames(audio_only))
    with pytest.raises(ValueError, match="fps must be positive"):
        iter_frames(talking_heads / "00002.mp4", fps=0)
    with pytest.raises(VideoError, match="nothing.png: no such image file"):
        load_image(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="expected a uint8 image"):
        as_rgb(np.zeros((4, 4, 3), dtype=np.float32))


# ---------------------------------------------------------------- detection


def test_a_face_in_95_percent_of_sampled_frames_of_every_clip(talking_heads, blazeface):
    rates = {}
    for clip in _clips(talking_heads):
        hits = [len(blazeface.detect(rgb)) > 0 for _, _, rgb in iter_frames(clip, fps=2.0)]
        rates[clip.stem] = sum(hits) / len(hits)
    assert len(rates) == 10
    assert min(rates.values()) >= 0.95, rates  # measured: 1.0 for every clip


def test_two_person_photo_gives_two_faces_and_no_face_gives_none(celebrities, blazeface):
    photo = load_image(celebrities / "test" / "kit_with_rose.jpg")
    for detector in (build_detector("dlib-hog"), blazeface):
        faces = detector.detect(photo)
        assert len(faces) == 2, detector
        (a, score_a), (b, score_b) = faces
        assert score_a >= score_b and 0 < score_b <= 1
        assert min(a[2], b[2]) <= max(a[0], b[0])  # side by side, not overlapping
        assert np.all(a[:2] >= 0) and a[2] <= photo.shape[1] and a[3] <= photo.shape[0]
    background = load_image(celebrities / "test" / "obama_and_biden.jpg")[900:, :700]  # suits, no face
    for detector in (build_detector("dlib-hog"), blazeface):
        assert detector.detect(background) == []
        assert detector.detect(np.zeros((8, 8, 3), dtype=np.uint8)) == []


def test_faces_below_min_size_are_dropped(celebrities):
    photo = load_image(celebrities / "test" / "obama1.jpg")
    (box, _), *_ = build_detector("dlib-hog").detect(photo)
    side = min(box[2] - box[0], box[3] - box[1])
    assert side > 300
    assert len(build_detector("dlib-hog", min_size=side - 1).detect(photo)) == 1
    assert build_detector("dlib-hog", min_size=side + 1).detect(photo) == []
    small = photo[::8, ::8].copy()  # the face is now about 45 px
    found = build_detector("dlib-hog", upsample=1).detect(small)
    assert len(found) == 1 and min(found[0][0][2:] - found[0][0][:2]) < 60
    assert build_detector("dlib-hog", upsample=1, min_size=60).detect(small) == []
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        build_detector("dlib-hog", min_size=-1)


def test_blazeface_front_model_for_large_faces_back_model_for_small(talking_heads, celebrities, blazeface):
    _, _, frame = next(iter_frames(talking_heads / "00010.mp4", fps=1.0))  # face fills the picture
    front = build_detector("blazeface", model="front", min_score=0.3)
    back = build_detector("blazeface", model="back", min_score=0.3)
    (_, front_score), = front.detect(frame)
    (_, back_score), = back.detect(frame)
    assert front_score > 0.75 and back_score < front_score - 0.2  # measured 0.79 and 0.49
    group = load_image(celebrities / "test" / "obama_and_biden.jpg")  # 180 px faces in a 2000 px photo
    front_group = build_detector("blazeface", model="front").detect(group)
    back_group = build_detector("blazeface", model="back").detect(group)
    assert len(front_group) < 2 and len(back_group) == 3  # Obama, Biden and a child
    assert len(blazeface.detect(group)) == 3  # the union ("both", the default) keeps each face once


def test_boxes_inside_a_better_face_are_dropped(talking_heads):
    """BlazeFace's front model finds an ear inside the face box in frame 15 of clip 00086."""
    frame = next(rgb for index, _, rgb in iter_frames(talking_heads / "00086.mp4", fps=None) if index == 15)
    everything = build_detector("blazeface", model="front", max_inside=1.0).detect(frame)
    assert len(everything) == 2
    (face, _), (ear, _) = everything
    assert ear[2] - ear[0] < 0.4 * (face[2] - face[0])
    (kept, _), = build_detector("blazeface", model="front").detect(frame)
    assert np.array_equal(kept, face)


def test_dlib_cnn_detector_finds_the_face(talking_heads):
    detector = build_detector("dlib-cnn")
    _, _, frame = next(iter_frames(talking_heads / "00002.mp4", fps=1.0))
    (box, score), = detector.detect(frame)
    assert 0.5 < score <= 1 and 60 < box[2] - box[0] < 224


def test_install_blazeface_weights(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = shared_weights_root() / "blazeface"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    target = install_blazeface_weights(source)
    assert target == tmp_path / "torch" / "hub" / "checkpoints"
    assert sorted(p.name for p in target.iterdir()) == sorted(BLAZEFACE_FILES)
    assert (target / "blazeface.pth").read_bytes() == (source / "blazeface.pth").read_bytes()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither in .*empty.* nor in .*nowhere"):
        install_blazeface_weights(tmp_path / "nowhere")


def test_sfd_loads_weights_from_path(tmp_path, monkeypatch):
    """S3FD's real weights cannot be downloaded here: the test builds face_alignment's own s3fd
    architecture, writes a state dict whose prediction layers are constant (the features are
    ignored) and checks the loading and box decoding end to end."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    network = s3fd()
    state = network.state_dict()
    levels = ["conv3_3", "conv4_3", "conv5_3", "fc7", "conv6_2", "conv7_2"]
    for index, level in enumerate(levels):
        prefix = level if level.startswith(("fc7", "conv6", "conv7")) else f"{level}_norm"
        for kind in ("conf", "loc"):
            state[f"{prefix}_mbox_{kind}.weight"].zero_()
            state[f"{prefix}_mbox_{kind}.bias"].zero_()
        # faces only at level 2 (stride 16, 64-px priors): face logit +10, background 0
        state[f"{prefix}_mbox_conf.bias"][-1] = 10.0 if index == 2 else -10.0
    path = tmp_path / "s3fd.pth"
    torch.save(state, path)
    faces = build_detector("sfd", path_to_detector=path).detect(np.full((128, 128, 3), 90, dtype=np.uint8))
    assert len(faces) > 0 and all(score > 0.99 for _, score in faces)
    for box, _ in faces:  # zero regression: each box is its prior, 64 px centred on the stride-16 grid
        assert box[2] - box[0] <= 64 + 1e-3 and box[0] >= 0 and box[2] <= 128
        if box[0] > 0 and box[2] < 128:
            assert (box[0] + box[2]) / 2 % 16 == pytest.approx(8)
    state["conv5_3_norm_mbox_conf.bias"][-1] = -10.0  # no level predicts a face any more
    torch.save(state, path)
    assert build_detector("sfd", path_to_detector=path).detect(np.full((128, 128, 3), 90, np.uint8)) == []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=f"{SFD_FILE} do not exist: pass path_to_detector"):
        build_detector("sfd")


def test_unknown_detector_lists_the_choices():
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn': choose one of dlib-hog, dlib-cnn, blazeface"):
        build_detector("mtcnn")
    with pytest.raises(ValueError, match="'front', 'back' or 'both'"):
        build_detector("blazeface", model="side")
