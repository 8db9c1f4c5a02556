"""Shot cuts, track purity and who speaks, on videos built at test time from real talking-head
clips (:mod:`xmodal_diar.faces.montage`): hard cuts between different people at known
frames, and two faces on screen with one speaker."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from xmodal_diar.faces import (
    IDENTITY_JUMP_FACTOR,
    FaceExtractor,
    extract_face_tracks,
    link_detections,
    pair_turns_with_tracks,
    split_identity_jumps,
)
from xmodal_diar.faces.embedding import DLIB_CALIBRATION
from xmodal_diar.faces.montage import Shot, build_montage
from xmodal_diar.faces.shots import video_shot_cuts

FOUR = ("00098", "741400104", "681100216", "00015")  # th05, th09, th07, th03


@pytest.fixture(scope="module")
def cuts_montage(talking_heads, tmp_path_factory, one_torch_thread):
    """Four people, 2 s each, hard cuts at frames 50, 100, 150; tracked WITHOUT shot cuts.

    Every sampled face is embedded (``embed_every=1``): an identity split can only be
    placed as finely as the embedded faces.
    """
    shots = [Shot((talking_heads / f"{c}.mp4",), duration=2.0) for c in FOUR]
    montage = build_montage(shots, tmp_path_factory.mktemp("montage") / "four_people.mp4")
    extractor = FaceExtractor("blazeface", "dlib5", "dlib", keep_aligned=False)
    no_cuts = extract_face_tracks(
        montage.path, extractor=extractor, shot_threshold=1.0, identity_threshold=10.0, embed_every=1
    )
    return montage, no_cuts


def _identities(track, montage):
    """The identities of the shots that ``track``'s detections fall in."""
    shots = np.searchsorted(montage.shot_frames, [d.frame for d in track.detections], side="right") - 1
    return {montage.panels[s][0] for s in shots}


def test_every_hard_cut_is_found_within_one_frame(cuts_montage):
    montage, _ = cuts_montage
    assert montage.cut_frames == [50, 100, 150]
    found = [c.frame for c in video_shot_cuts(montage.path)]
    assert len(found) == len(montage.cut_frames), found
    assert all(abs(f - t) <= 1 for f, t in zip(found, montage.cut_frames)), found


def test_no_track_holds_two_identities(cuts_montage):
    montage, no_cuts = cuts_montage
    detections = [d for t in no_cuts.tracks for d in t.detections]
    # without shot cuts nor identity splits, the tracker chains different people (same place, same size)
    chained = link_detections(detections, min_detections=1)
    assert any(len(_identities(t, montage)) > 1 for t in chained)
    # with the detected cuts: pure tracks, one per person
    cuts = [c.time for c in video_shot_cuts(montage.path)]
    tracks = link_detections(detections, shot_cuts=cuts, min_detections=1)
    assert all(len(_identities(t, montage)) == 1 for t in tracks)
    assert {next(iter(_identities(t, montage))) for t in tracks} == {p[0] for p in montage.panels}
    # a missed cut: the identity split alone keeps every track pure
    threshold = IDENTITY_JUMP_FACTOR * DLIB_CALIBRATION.threshold
    split = split_identity_jumps(chained, threshold)
    assert all(len(_identities(t, montage)) == 1 for t in split), [
        sorted(_identities(t, montage)) for t in split
    ]
    assert len(split) <= len(chained) + 2 * (len(FOUR) - 1)  # no shattering of pure stretches


def test_old_threshold_merges_two_real_people_the_calibration_does_not(cuts_montage):
    montage, no_cuts = cuts_montage
    cuts = [c.time for c in video_shot_cuts(montage.path)]
    detections = [d for t in no_cuts.tracks for d in t.detections]
    tracks = link_detections(detections, shot_cuts=cuts)
    means = {next(iter(_identities(t, montage))): t.mean_embedding() for t in tracks}
    names = sorted(means)
    pairs = [(a, b, 1.0 - float(means[a] @ means[b])) for i, a in enumerate(names) for b in names[i + 1 :]]
    # every pair of these four different people is closer than the old 0.3 "same face" threshold
    assert all(d < 0.3 for _, _, d in pairs), pairs
    # the dlib calibration calls each pair different
    assert all(DLIB_CALIBRATION.probability(d) < 0.5 for _, _, d in pairs), pairs


@pytest.fixture(scope="module")
def two_faces(talking_heads, tmp_path_factory, one_torch_thread):
    """th05 left, th09 right, both on screen; th05 speaks 3 s (th09 still), then th09 3 s."""
    panels = (talking_heads / "00098.mp4", talking_heads / "741400104.mp4")
    shots = [Shot(panels, speaking=0, duration=3.0), Shot(panels, speaking=1, duration=3.0)]
    montage = build_montage(shots, tmp_path_factory.mktemp("montage") / "two_faces.mp4")
    extractor = FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=False)
    return montage, extract_face_tracks(montage.path, extractor=extractor)


def test_the_face_that_speaks_gets_the_turn(two_faces):
    montage, faces = two_faces
    assert montage.cut_frames == [] and len(faces.shot_cuts) == 0
    left = [t.track_id for t in faces.tracks if np.mean([d.box[0] for d in t.detections]) < 224]
    right = [t.track_id for t in faces.tracks if np.mean([d.box[0] for d in t.detections]) >= 224]
    assert left and right
    turns = Annotation(uri="two_faces")
    turns[Segment(0.2, 2.8)] = "first"
    turns[Segment(3.2, 5.8)] = "second"
    pairings = pair_turns_with_tracks(turns, faces.tracks)
    assert pairings[0].track_id in left and pairings[1].track_id in right, pairings
    assert min(p.confidence for p in pairings) > 0.6, pairings
    # without the mouth, the two similar faces split the turn: no confident pairing
    blind = pair_turns_with_tracks(turns, faces.tracks, cues={"mouth": 0.0})
    assert max(p.confidence for p in blind) < 0.6, blind
