"""Detection on some sampled frames, faces followed in between, one embedding per face now and then (issue 10: speed)."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal_diar.faces import FaceExtractor, extract_face_tracks, iter_frame_detections
from xmodal_diar.faces.embedding import follow_box
from xmodal_diar.faces.tracking import box_iou
from xmodal_diar.faces.video import iter_frames


@pytest.fixture(scope="module")
def extractor(one_torch_thread):
    return FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=False)


def _counting(extractor, monkeypatch):
    calls = []
    detect = extractor.detector.detect

    def counted(rgb):
        calls.append(rgb)
        return detect(rgb)

    monkeypatch.setattr(extractor.detector, "detect", counted)
    return calls


def test_followed_faces_match_the_detector_and_keep_68_landmarks(talking_heads, extractor, monkeypatch):
    clip = talking_heads / "00098.mp4"  # the speaking face of the two-face montage
    calls = _counting(extractor, monkeypatch)
    frames = list(iter_frame_detections(clip, 5.0, extractor, detect_every=5, embed_every=10, progress=False))
    monkeypatch.undo()
    assert len(calls) == (len(frames) + 4) // 5  # detection on every 5th sampled frame, no face lost
    assert all(len(found) == 1 for *_, found in frames)
    for k, (_, _, rgb, found) in enumerate(frames):
        detected = extractor.detector.detect(rgb)[0][0]
        assert box_iou(found[0].box, detected)[0, 0] > 0.7, k  # the followed box stays on the face
        assert found[0].landmarks.shape == (68, 2) and found[0].quality is not None
    embedded = [k for k, (*_, found) in enumerate(frames) if found[0].embedding is not None]
    assert embedded == list(range(0, len(frames), 10))


def test_a_new_shot_calls_the_detector_and_embeds_its_faces(talking_heads, extractor, monkeypatch):
    clip = talking_heads / "00098.mp4"
    calls = _counting(extractor, monkeypatch)
    frames = list(iter_frame_detections(
        clip, 5.0, extractor, detect_every=100, embed_every=100, progress=False,
        on_frame=lambda index, time, thumbnail: index == 12,  # "a shot starts at frame 12"
    ))
    assert len(calls) == 2  # the first sampled frame, and the first one of the new shot (frame 15)
    embedded = [frame for frame, *_, found in frames if found and found[0].embedding is not None]
    assert embedded == [0, 15]


def test_a_face_that_leaves_is_lost_and_looked_for_again(talking_heads, extractor):
    rgb = next(iter_frames(talking_heads / "00098.mp4", 5.0))[2]
    found = extractor(rgb, embed=False)
    box, correlation = follow_box(rgb, rgb, found[0].box)
    assert correlation > 0.99 and np.array_equal(box, found[0].box)  # a still face keeps its box exactly
    shifted = np.roll(rgb, 10, axis=1)  # the face moved 10 px to the right
    box, correlation = follow_box(rgb, shifted, found[0].box)
    assert correlation > 0.9 and abs(box[0] - found[0].box[0] - 10) <= 5
    wall = np.full_like(rgb, 128)
    wall[::8] = 90  # a striped wall where the face was
    assert extractor.follow(wall, rgb, found) is None


def test_defaults_are_the_measured_ones(talking_heads, extractor):
    import inspect

    defaults = inspect.signature(extract_face_tracks).parameters
    assert defaults["detect_every"].default == 10 and defaults["embed_every"].default == 15
    with pytest.raises(ValueError, match="detect_every must be a positive"):
        next(iter_frame_detections(talking_heads / "00098.mp4", 5.0, extractor, detect_every=0))
