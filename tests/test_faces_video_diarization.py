"""`--video` in the default pipeline, on videos built at test time from real talking-head clips:
two faces on screen with one speaker at a time (who speaks), and 1 s turns of four people
with hard cuts (turns split where the face changes, face-anchored short turns)."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

from xmodal_diar.faces import FaceExtractor, extract_face_tracks, pair_turns_with_tracks
from xmodal_diar.faces.embedding import DLIB_CALIBRATION
from xmodal_diar.faces.montage import Shot, build_montage
from xmodal_diar.faces.video import video_info
from xmodal_diar.pipelines.face_evidence import face_change_cuts


@pytest.fixture(scope="module")
def pipeline(one_torch_thread):
    from xmodal_diar.pipelines import load_pipeline

    return load_pipeline()


@pytest.fixture(scope="module")
def extractor():
    extractor = FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=False, embed_workers=0)
    yield extractor
    extractor.close()


def _diarize(pipeline, montage, faces=None):
    from xmodal_diar.audio import load_audio

    waveform = load_audio(montage.path)
    file = {"waveform": waveform[None], "sample_rate": 16000, "uri": montage.path.stem}
    hypothesis = pipeline(file, face_evidence=faces).speaker_diarization
    uem = Timeline([Segment(0.0, waveform.shape[-1] / 16000)], uri=montage.path.stem)
    return 100 * DiarizationErrorRate()(montage.reference, hypothesis, uem=uem), hypothesis


@pytest.fixture(scope="module")
def two_faces(talking_heads, tmp_path_factory, extractor):
    """th05 left, th09 right, both on screen all along, taking turns A B A B (the listener is still)."""
    a, b = talking_heads / "00098.mp4", talking_heads / "741400104.mp4"
    half_a, half_b = video_info(a).duration / 2, video_info(b).duration / 2
    shots = [Shot((a, b), 0, half_a), Shot((a, b), 1, half_b), Shot((a, b), 0), Shot((a, b), 1)]
    montage = build_montage(shots, tmp_path_factory.mktemp("video") / "two_faces.mp4")
    return montage, extract_face_tracks(montage.path, extractor=extractor)


def test_two_faces_with_video_is_not_worse_than_audio_only(pipeline, two_faces):
    montage, faces = two_faces
    assert len(faces.tracks) == 2
    audio, _ = _diarize(pipeline, montage)
    video, _ = _diarize(pipeline, montage, faces)
    assert video <= audio + 0.5, (audio, video)


def test_the_still_face_never_gets_a_confident_turn(two_faces):
    montage, faces = two_faces
    panel = {t.track_id: int(np.mean([d.box[0] for d in t.detections]) >= 224) for t in faces.tracks}
    speaker_panel = {"th05": 0, "th09": 1}
    true_turns, straddling = Annotation(uri="two_faces"), Annotation(uri="two_faces")
    for segment, _, who in montage.reference.itertracks(yield_label=True):
        true_turns[Segment(segment.start + 0.2, segment.end - 0.2)] = who
    # 1 s turns straddling each change of speaker, 0.8 s of them the new speaker's
    for change in [s.start for s in montage.reference.itersegments()][1:]:
        straddling[Segment(change - 0.2, change + 0.8)] = montage.reference.argmax(Segment(change, change + 0.8))
    for turns in (true_turns, straddling):
        for p in pair_turns_with_tracks(turns, faces.tracks):
            if p.track_id is not None and panel[p.track_id] != speaker_panel[p.label]:
                assert p.confidence < 0.1, p  # the listener: ~0 confidence
            elif turns is true_turns:
                assert p.track_id is not None and p.confidence > 0.3, p  # the speaker


@pytest.fixture(scope="module")
def rapid(talking_heads, tmp_path_factory, extractor):
    """th03, th04, th05, th07 in 12 turns of about 1 s (three rounds), hard cuts between them."""
    clips = [talking_heads / f"{c}.mp4" for c in ("00015", "00086", "00098", "681100216")]
    shots = [Shot((clip,), 0, 0.25 * video_info(clip).duration if clip.stem != "00098" else 1.2) for _ in range(3) for clip in clips]
    montage = build_montage(shots, tmp_path_factory.mktemp("video") / "rapid.mp4")
    return montage, extract_face_tracks(montage.path, extractor=extractor)


def test_rapid_turns_are_split_where_the_face_changes_and_video_helps(pipeline, rapid):
    montage, faces = rapid
    cuts = face_change_cuts(faces, DLIB_CALIBRATION)
    # every hard cut is between two different people: every one is a face change, to the frame
    assert len(cuts) == len(montage.cut_frames)
    assert np.allclose(cuts, montage.cut_times, atol=0.05), (cuts, montage.cut_times)
    audio, _ = _diarize(pipeline, montage)
    video, hypothesis = _diarize(pipeline, montage, faces)
    assert video < audio - 5.0, (audio, video)
    assert len(hypothesis.labels()) >= 3
