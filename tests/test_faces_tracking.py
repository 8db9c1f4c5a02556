"""Face tracking, shot cuts and the face-track file: synthetic unit tests, then real talking heads."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from xmodal_diar.faces.io import FACES_FORMAT, FaceTracks, load_face_tracks
from xmodal_diar.faces.shots import color_histogram, detect_shot_cuts
from xmodal_diar.faces.tracking import box_iou, link_detections, track_quality
from xmodal_diar.faces.types import FaceDetection, FaceQuality, FaceTrack

FPS = 5.0


def _unit(rng, dim=128):
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _noisy(e, rng, scale=0.02):  # cos(e, noisy) ~ 0.97 in 128-D
    v = e + scale * rng.standard_normal(e.shape).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _det(k, x, y=50.0, side=40.0, embedding=None, quality=None, landmarks=None):
    return FaceDetection(
        frame=int(k * 25 / FPS),
        time=k / FPS,
        box=np.array([x, y, x + side, y + side], dtype=np.float32),
        score=0.9,
        embedding=embedding,
        quality=quality,
        landmarks=landmarks,
    )


# ---------------------------------------------------------------- tracking, synthetic


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 10]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.5])


def test_crossing_faces_keep_their_ids_by_embedding():
    rng = np.random.default_rng(0)
    e_a, e_b = _unit(rng), _unit(rng)
    dets, plain = [], []
    for k in range(12):  # A goes right, B goes left; they swap places between k = 5 and 6
        for x, e in ((20.0 * k, e_a), (220.0 - 20.0 * k, e_b)):
            dets.append(_det(k, x, embedding=_noisy(e, rng)))
            plain.append(_det(k, x))
    rng.shuffle(dets)  # input order must not matter
    tracks = link_detections(dets)
    assert len(tracks) == 2
    for t in tracks:
        assert len(t.detections) == 12
        xs = np.array([d.box[0] for d in t.detections])
        identity = e_a if np.dot(t.mean_embedding(), e_a) > np.dot(t.mean_embedding(), e_b) else e_b
        # every detection carries the track's identity, and the motion never reverses
        assert all(np.dot(d.embedding, identity) > 0.9 for d in t.detections)
        assert np.all(np.diff(xs) > 0) if identity is e_a else np.all(np.diff(xs) < 0)
    # boxes alone bounce at the crossing (IoU prefers the swap): the embeddings are what keeps the ids
    bounced = link_detections(plain)
    assert [float(d.box[0]) for d in bounced[0].detections][4:8] == [80.0, 100.0, 100.0, 80.0]


def test_a_different_person_in_the_same_place_starts_a_new_track():
    """B replaces A in the same box (no cut): the cosine gate splits the track."""
    rng = np.random.default_rng(1)
    e_a, e_b = _unit(rng), _unit(rng)
    dets = [_det(k, 100.0, embedding=_noisy(e_a if k < 10 else e_b, rng)) for k in range(20)]
    tracks = link_detections(dets)
    assert [len(t.detections) for t in tracks] == [10, 10]
    # with the box alone (no embeddings) it is one track
    plain = [_det(k, 100.0) for k in range(20)]
    assert len(link_detections(plain)) == 1


def test_a_gap_splits_a_track():
    dets = [_det(k, 100.0 + k) for k in range(10)] + [_det(k, 100.0 + k) for k in range(20, 30)]  # 2 s gap
    assert [(t.start, t.end) for t in link_detections(dets, max_gap=1.0)] == [(0.0, 1.8), (4.0, 5.8)]
    assert len(link_detections(dets, max_gap=3.0)) == 1


def test_a_shot_cut_splits_a_track():
    dets = [_det(k, 100.0) for k in range(20)]
    tracks = link_detections(dets, shot_cuts=[2.1])  # between samples 2.0 and 2.2
    assert [(t.start, t.end) for t in tracks] == [(0.0, 2.0), (2.2, 3.8)]


def test_short_tracks_are_dropped_by_detections_or_seconds():
    dets = [_det(k, 100.0) for k in range(10)] + [_det(k, 10.0) for k in (3, 4)]
    assert [len(t.detections) for t in link_detections(dets, min_detections=3)] == [10]
    assert [len(t.detections) for t in link_detections(dets, min_detections=1)] == [10, 2]
    assert [len(t.detections) for t in link_detections(dets, min_detections=1, min_duration=1.0)] == [10]


def test_track_ids_follow_start_time():
    dets = [_det(k, 150.0) for k in range(5, 15)] + [_det(k, 10.0) for k in range(0, 10)]
    tracks = link_detections(dets)
    assert [t.track_id for t in tracks] == [0, 1]
    assert tracks[0].start == 0.0 and tracks[1].start == 1.0


def test_track_quality_is_the_mean_of_detection_qualities():
    qs = [FaceQuality(0.8, 0.5, 0.2, 1.0), FaceQuality(0.6, 0.7, 0.4, 0.0)]
    track = FaceTrack(0, [_det(0, 0, quality=qs[0]), _det(1, 0, quality=qs[1])])
    np.testing.assert_allclose(track_quality(track).as_vector(), [0.7, 0.6, 0.3, 0.5], atol=1e-6)
    assert track_quality(FaceTrack(1, [_det(0, 0)])) is None


def test_tracking_rejects_bad_options():
    with pytest.raises(ValueError, match="iou_weight"):
        link_detections([], iou_weight=2.0)
    with pytest.raises(ValueError, match="max_gap"):
        link_detections([], max_gap=0)
    assert link_detections([]) == []


# ---------------------------------------------------------------- shot cuts, synthetic


def test_shot_cuts_on_a_synthetic_montage():
    rng = np.random.default_rng(0)
    shots = [np.full((64, 64, 3), c, dtype=np.uint8) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames = []
    for k in range(30):  # three shots of 2 s at 5 fps, with pixel noise inside each shot
        base = shots[k // 10].astype(np.int16) + rng.integers(-20, 20, (64, 64, 3))
        frames.append((k * 5, k / FPS, np.clip(base, 0, 255).astype(np.uint8)))
    cuts = detect_shot_cuts(frames)
    assert [c.frame for c in cuts] == [50, 100]
    assert all(c.distance > 0.9 for c in cuts)


def test_color_histogram_is_normalised_and_accepts_grey():
    h = color_histogram(np.zeros((10, 12), dtype=np.uint8), bins=4)
    assert h.shape == (64,) and h[0] == 1.0 and h.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        color_histogram(np.zeros((4, 4, 2), dtype=np.uint8))


# ---------------------------------------------------------------- npz file


def _synthetic_result():
    rng = np.random.default_rng(2)
    e = _unit(rng)
    lm = rng.uniform(0, 100, (68, 2)).astype(np.float32)
    dets = [
        _det(k, 10.0 + k, embedding=_noisy(e, rng), quality=FaceQuality(0.9, 0.5, 0.3, 0.8), landmarks=lm)
        for k in range(6)
    ]
    dets[2].aligned = np.full((150, 150, 3), 7, dtype=np.uint8)
    stray = _det(3, 180.0)  # no embedding, no quality: must survive as None
    return FaceTracks(
        video="clip.mp4", fps=FPS, tracks=link_detections(dets), untracked=[stray],
        shot_cuts=[1.5], duration=2.0, detector="dlib-hog", embedder="dlib-resnet",
    )


def test_npz_round_trip(tmp_path):
    result = _synthetic_result()
    path = result.save(tmp_path / "clip.faces.npz")
    assert path.name == "clip.faces.npz" and path.is_file()
    back = load_face_tracks(path, embedding_dim=128)
    assert (back.video, back.fps, back.shot_cuts, back.detector, back.embedder) == (
        "clip.mp4", FPS, [1.5], "dlib-hog", "dlib-resnet")
    assert back.embedding_dim == 128 and len(back.tracks) == 1 and len(back.untracked) == 1
    for a, b in zip(result.tracks[0].detections, back.tracks[0].detections):
        assert (a.frame, a.time, a.score) == (b.frame, b.time, pytest.approx(b.score))
        np.testing.assert_allclose(a.box, b.box)
        np.testing.assert_allclose(a.embedding, b.embedding)
        np.testing.assert_allclose(a.landmarks, b.landmarks)
        np.testing.assert_allclose(a.quality.as_vector(), b.quality.as_vector())
        assert b.aligned is None  # not stored unless asked
    np.testing.assert_allclose(back.tracks[0].mean_embedding(), result.tracks[0].mean_embedding(), atol=1e-6)
    stray = back.untracked[0]
    assert stray.embedding is None and stray.quality is None and stray.landmarks is None


def test_npz_round_trip_of_a_video_without_faces(tmp_path):
    empty = FaceTracks(video="black.mp4", fps=FPS, duration=3.0, detector="blazeface", embedder="dlib")
    back = load_face_tracks(empty.save(tmp_path / "black.faces.npz"))
    assert back.tracks == [] and back.untracked == [] and back.embedding_dim == 0 and back.duration == 3.0
    assert back.dominant_track() is None


def test_npz_rejects_wrong_kind_and_dimension(tmp_path):
    path = _synthetic_result().save(tmp_path / "a.faces.npz")
    with pytest.raises(ValueError, match=r"128-D, expected 512-D"):
        load_face_tracks(path, embedding_dim=512)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match=rf"other.npz: not an xmodal-diar face-track file.*{FACES_FORMAT}"):
        load_face_tracks(other)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="garbage.npz: not an .npz face-track file"):
        load_face_tracks(garbage)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_face_tracks(tmp_path / "missing.npz")


# ---------------------------------------------------------------- real talking heads

#: dlib's HOG detector keeps this file fast on a 2-core CPU; the detectors themselves are
#: tested in the detection tests.
DETECTOR = "dlib-hog"
TEST_FPS = 2.0


@pytest.fixture(scope="module")
def talking_head_tracks(talking_heads):
    from xmodal_diar.faces import FaceExtractor, extract_face_tracks

    extractor = FaceExtractor(DETECTOR, keep_aligned=False)
    return {p.stem: extract_face_tracks(p, TEST_FPS, extractor=extractor) for p in sorted(talking_heads.glob("*.mp4"))}


def test_each_talking_head_clip_yields_one_dominant_track(talking_head_tracks):
    assert len(talking_head_tracks) == 10
    for clip, result in talking_head_tracks.items():
        dominant = result.dominant_track()
        assert dominant is not None, clip
        others = [len(t.detections) for t in result.tracks if t is not dominant]
        assert len(dominant.detections) >= 0.8 * len(result.detections), clip
        assert all(n <= len(dominant.detections) / 3 for n in others), clip
        assert result.shot_cuts == [], clip  # one shot per clip
        assert result.embedding_dim == 128 and result.detector == DETECTOR


def test_th01_clips_are_closer_to_each_other_than_to_any_other_identity(talking_heads, talking_head_tracks):
    with open(talking_heads / "identities.csv") as f:
        identity = {row["clip"]: row["identity"] for row in csv.DictReader(f)}
    means = {clip: r.dominant_track().mean_embedding() for clip, r in talking_head_tracks.items()}
    same = float(np.dot(means["00002"], means["517600055"]))
    for clip in ("00002", "517600055"):
        for other, e in means.items():
            if identity[other] != "th01":
                assert float(np.dot(means[clip], e)) < same, (clip, other)


def test_real_tracks_survive_the_npz_round_trip(tmp_path, talking_head_tracks):
    result = talking_head_tracks["00010"]
    back = load_face_tracks(result.save(tmp_path / "00010.faces.npz"))
    assert [len(t.detections) for t in back.tracks] == [len(t.detections) for t in result.tracks]
    np.testing.assert_allclose(back.tracks[0].mean_embedding(), result.tracks[0].mean_embedding(), atol=1e-6)
    assert back.duration == pytest.approx(4.24) and back.fps == TEST_FPS
