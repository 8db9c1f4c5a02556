"""Pairing speech turns with face tracks: synthetic cues, then a real montage of talking heads."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from xmodal_diar.faces.pairing import MAX_RATIO, MOUTH_FLOOR, TurnPairing, load_turns, mouth_motion, mouth_opening, pair_turns_with_tracks
from xmodal_diar.faces.types import FaceDetection, FaceQuality, FaceTrack

FPS = 5.0


def _track(track_id, start, end, x=0.0, side=60.0, frontality=1.0, mouth=None):
    """A still face seen from ``start`` to ``end`` s; ``mouth(k)`` gives the inner-lip gap in pixels."""
    dets = []
    for k in range(int(round(start * FPS)), int(round(end * FPS)) + 1):
        lm = None
        if mouth is not None:
            lm = np.zeros((68, 2), dtype=np.float32)
            for up, low in ((61, 67), (62, 66), (63, 65)):
                lm[low, 1] = mouth(k)
        dets.append(FaceDetection(
            frame=k * 5, time=k / FPS, box=np.array([x, 0, x + side, side], dtype=np.float32), score=0.9,
            landmarks=lm, quality=FaceQuality(0.9, side / 112, 0.5, frontality),
        ))
    return FaceTrack(track_id, dets)


def _turns(*spans):
    a = Annotation(uri="synthetic")
    for i, (s, e, label) in enumerate(spans):
        a[Segment(s, e), i] = label
    return a


def test_single_face_over_the_turn_is_paired_with_full_confidence():
    (p,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [_track(7, 0.0, 4.0)])
    assert p == TurnPairing(Segment(1.0, 3.0), "A", 7, pytest.approx(1.0))


def test_turn_without_any_face_stays_unpaired():
    (p,) = pair_turns_with_tracks(_turns((6.0, 8.0, "B")), [_track(0, 0.0, 4.0)])
    assert p.track_id is None and p.confidence == 0.0 and p.label == "B"


def test_partly_covered_turn_is_unpaired_below_min_coverage():
    tracks = [_track(0, 0.0, 1.0)]  # covers [0, 1.1] of the turn [0.5, 3.5]: 20 %
    (p,) = pair_turns_with_tracks(_turns((0.5, 3.5, "A")), tracks)
    assert p.track_id is None and p.confidence == pytest.approx(0.6 / 3.0)
    (q,) = pair_turns_with_tracks(_turns((0.5, 3.5, "A")), tracks, min_coverage=0.1)
    assert q.track_id == 0


def test_larger_more_frontal_face_wins_with_reduced_confidence():
    big = _track(0, 0.0, 4.0, x=0.0, side=120.0, frontality=0.9)
    small = _track(1, 0.0, 4.0, x=200.0, side=40.0, frontality=0.3)
    (p,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [small, big])
    assert p.track_id == 0
    # another face competes: the runner-up scores (1/3 + 1/3 + 1) / 3 = 0.56 of the winner
    assert p.confidence == pytest.approx(1.0 - (5 / 9) / MAX_RATIO)
    (r,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [small, big], max_ratio=1.0)
    assert r.confidence == pytest.approx(4 / 9)
    # the prominence cues can be switched off: then the two tie on persistence, no clear winner
    (q,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [small, big], cues={"size": 0, "frontality": 0})
    assert q.confidence == pytest.approx(0.0)


def test_moving_mouth_wins_between_two_equal_faces():
    still = _track(0, 0.0, 4.0, x=0.0, mouth=lambda k: 2.0)
    talking = _track(1, 0.0, 4.0, x=100.0, mouth=lambda k: 2.0 + 6.0 * (k % 2))
    assert mouth_opening(talking.detections[1]) == pytest.approx(8.0 / 60.0)
    assert mouth_motion(talking.detections) == pytest.approx(6.0 / 60.0) and mouth_motion(still.detections) == 0.0
    (p,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [still, talking])
    assert p.track_id == 1
    assert p.confidence == pytest.approx(1.0 - (MOUTH_FLOOR / 0.1) / MAX_RATIO)  # the still face at the floor: a clear winner
    (q,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [still, talking], cues={"mouth": 0})
    assert q.confidence == pytest.approx(0.0)  # without the mouth cue, a tie: no confidence
    both = _track(2, 0.0, 4.0, x=200.0, mouth=lambda k: 2.0 + 5.0 * (k % 2))
    (r,) = pair_turns_with_tracks(_turns((1.0, 3.0, "A")), [both, talking])
    assert r.track_id == 1 and r.confidence == pytest.approx(0.0)  # two moving mouths: 5/6 > MAX_RATIO


def test_turns_from_an_rttm_file(tmp_path):
    rttm = tmp_path / "show.rttm"
    rttm.write_text(
        "SPEAKER show 1 0.50 2.00 <NA> <NA> anchor <NA> <NA>\n"
        "SPEAKER show 1 5.00 1.00 <NA> <NA> voiceover <NA> <NA>\n"
    )
    pairs = pair_turns_with_tracks(rttm, [_track(3, 0.0, 3.0)])
    assert [(p.label, p.track_id) for p in pairs] == [("anchor", 3), ("voiceover", None)]
    two = tmp_path / "two.rttm"
    two.write_text(rttm.read_text() + "SPEAKER other 1 0.00 1.00 <NA> <NA> x <NA> <NA>\n")
    with pytest.raises(ValueError, match=r"two.rttm: holds 2 uris"):
        load_turns(two)
    assert len(load_turns(two, uri="other")) == 1
    with pytest.raises(FileNotFoundError, match="missing.rttm"):
        load_turns(tmp_path / "missing.rttm")


def test_pairing_rejects_unknown_cues():
    with pytest.raises(ValueError, match="unknown pairing cues"):
        pair_turns_with_tracks(_turns((0, 1, "A")), [], cues={"voice": 1.0})


# ---------------------------------------------------------------- a real montage

MONTAGE_CLIPS = ("00010", "00015", "00086")  # three identities (th02, th03, th04)
OFF_SCREEN_SECONDS = 2.0  # black frames over the voice of another clip, after the first clip


def write_montage(parts, path, rate=25, sample_rate=16000):
    """Encode ``parts`` = [(frames, waveform)] one after the other as an H.264 + AAC mp4 (PyAV).

    Each part's audio is cut or zero-padded to its video length, so sound and picture stay
    in step. Returns the ``(start, end)`` seconds of each part.
    """
    import av

    spans, audio, start = [], [], 0.0
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.height, video.width = parts[0][0][0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for frames, waveform in parts:
            n = int(round(len(frames) * sample_rate / rate))
            audio.append(np.pad(waveform[:n], (0, max(0, n - len(waveform)))))
            for frame in frames:
                out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            spans.append((start, start + len(frames) / rate))
            start += len(frames) / rate
        out.mux(video.encode())
        samples = np.concatenate(audio).astype(np.float32)
        for i in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, i : i + 1024], format="flt", layout="mono")
            chunk.sample_rate = sample_rate
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    return spans


@pytest.fixture(scope="module")
def montage(talking_heads, tmp_path_factory):
    """clip 00010 | 2 s black with speech (off screen) | clip 00015 | clip 00086, and its tracks."""
    from xmodal_diar.audio import load_audio
    from xmodal_diar.faces import extract_face_tracks
    from xmodal_diar.faces.video import iter_frames

    def clip(name):
        path = talking_heads / f"{name}.mp4"
        return [rgb for _, _, rgb in iter_frames(path, None)], load_audio(path).numpy()

    first, second, third = (clip(name) for name in MONTAGE_CLIPS)
    black = [np.zeros_like(first[0][0])] * int(OFF_SCREEN_SECONDS * 25)
    voice = load_audio(talking_heads / "00098.mp4").numpy()
    path = tmp_path_factory.mktemp("montage") / "montage.mp4"
    spans = write_montage([first, (black, voice), second, third], path)
    result = extract_face_tracks(path, 2.0, detector="dlib-hog", keep_aligned=False)
    return path, spans, result


def test_montage_has_sound_and_picture_of_the_same_length(montage):
    from xmodal_diar.audio import load_audio
    from xmodal_diar.faces.video import video_info

    path, spans, _ = montage
    assert video_info(path).duration == pytest.approx(spans[-1][1], abs=0.05)
    assert len(load_audio(path)) / 16000 == pytest.approx(spans[-1][1], abs=0.15)


def test_shot_cuts_are_found_at_the_clip_boundaries(montage):
    _, spans, result = montage
    boundaries = [start for start, _ in spans[1:]]
    assert len(result.shot_cuts) == len(boundaries)
    for cut, boundary in zip(result.shot_cuts, boundaries):
        assert boundary <= cut <= boundary + 0.5 + 1e-6  # the first sample (2 fps) after the boundary
    # no track crosses a cut
    for track in result.tracks:
        assert not any(track.start < cut <= track.end for cut in result.shot_cuts)


def test_turns_from_clip_boundaries_are_paired_with_the_right_track(montage):
    _, spans, result = montage
    turns = Annotation(uri="montage")
    labels = ["th02", "offscreen", "th03", "th04"]
    for (start, end), label in zip(spans, labels):
        turns[Segment(start, end)] = label
    pairs = {p.label: p for p in pair_turns_with_tracks(turns, result.tracks)}
    tracks = {t.track_id: t for t in result.tracks}
    for (start, end), label in zip(spans, labels):
        p = pairs[label]
        if label == "offscreen":
            assert p.track_id is None  # a voice over black frames: no face to pair with
            continue
        track = tracks[p.track_id]
        assert start <= track.start and track.end <= end, label  # the face of that clip
        assert p.confidence > 0.7, label
    # the three paired faces are three different people
    means = np.stack([tracks[pairs[label].track_id].mean_embedding() for label in ("th02", "th03", "th04")])
    similarity = means @ means.T
    assert np.all(similarity[~np.eye(3, dtype=bool)] < 0.95)
