"""Face evidence as a calibrated, confidence-weighted offset to the turns' distances."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Segment

from xmodal_diar.faces.calibration import FaceCalibration, fit_calibration
from xmodal_diar.faces.embedding import DLIB_CALIBRATION, embedder_calibration
from xmodal_diar.faces.pairing import TurnPairing
from xmodal_diar.faces.types import FaceDetection, FaceTrack
from xmodal_diar.pipelines.face_evidence import DEFAULT_PARAMETERS, FaceEvidence, turn_face_tracks
from xmodal_diar.pipelines.turn_clustering import TurnClustering


def clustering(threshold: float = 0.5) -> TurnClustering:
    c = TurnClustering()
    c.instantiate({"threshold": threshold, "linkage": "average", "min_turn_duration": 0.0, "min_cluster_duration": 0.0})
    return lambda *args, **kwargs: c(*args, **kwargs)[0]  # cluster labels (c also returns centroids)


def evidence(**params) -> FaceEvidence:
    face = FaceEvidence()
    face.instantiate({**DEFAULT_PARAMETERS, "min_confidence": 0.1, "weight": 1.0, **params})
    return face


def track(track_id, start, end, embedding, x=0.0):
    return FaceTrack(track_id, [
        FaceDetection(frame=int(round(t * 5)), time=t, box=np.array([x, 0, x + 100, 100], np.float32), score=0.9,
                      embedding=None if embedding is None else np.asarray(embedding, np.float32))
        for t in np.arange(start, end + 1e-9, 0.2)
    ])


def test_calibration_fit_recovers_a_known_logistic_model():
    # equal-variance Gaussians: LLR(d) = (mu_d - mu_s) / sigma^2 * ((mu_s + mu_d) / 2 - d)
    rng = np.random.default_rng(0)
    same, different = rng.normal(0.05, 0.03, 3000), rng.normal(0.19, 0.03, 9000)
    fitted = fit_calibration(same, different)
    assert fitted.threshold == pytest.approx(0.12, abs=0.005)  # class-balanced: not pulled by 3x more negatives
    assert fitted.scale == pytest.approx(0.14 / 0.03**2, rel=0.15)
    truth = FaceCalibration(threshold=0.12, scale=60.0)
    assert truth.evidence(0.12) == pytest.approx(0.0) and truth.evidence(0.0) > 0.9 and truth.evidence(0.3) < -0.9
    with pytest.raises(ValueError, match="scale"):
        FaceCalibration(threshold=0.1, scale=0.0)


def test_embedders_declare_their_calibration():
    assert embedder_calibration("dlib") is DLIB_CALIBRATION
    assert 0.0 < DLIB_CALIBRATION.threshold < 0.3 and DLIB_CALIBRATION.scale > 0
    assert embedder_calibration("torchscript") is None


def test_offset_signs_symmetry_and_confidence_weighting():
    turns = [Segment(0, 2), Segment(2, 4), Segment(4, 6), Segment(6, 8)]
    # turn 0 and 1: one person in two shots (close faces); turn 2: another; turn 3: no face
    calibration = FaceCalibration(threshold=0.1, scale=50.0)
    tracks = [track(1, 0.0, 1.8, [1, 0]), track(2, 2.0, 3.8, [0.999, 0.045]), track(3, 4.0, 5.8, [0.8, 0.6])]
    face = FaceEvidence(calibration=calibration)
    face.instantiate({**DEFAULT_PARAMETERS, "min_confidence": 0.1, "weight": 1.0})
    offset = face(turns, tracks)
    assert offset.shape == (4, 4) and np.allclose(offset, offset.T) and np.all(np.diag(offset) == 0)
    assert offset[0, 1] < -0.5  # d = 0.001: the same person
    assert offset[0, 2] > 0.5 and offset[1, 2] > 0.5  # d = 0.2: different people
    assert np.all(offset[3] == 0)  # no face, no evidence
    # weaker pairings give weaker evidence, proportionally
    pairings = [(s, k, c) for s, k, c in zip(turns, (1, 1, 2, None), (1.0, 0.5, 0.5, 0.0))]
    soft = evidence()(turns, pairings)
    assert soft[0, 1] == pytest.approx(-0.5) and soft[1, 2] == pytest.approx(0.25) and soft[0, 2] == pytest.approx(0.5)
    assert not evidence(min_confidence=0.6)(turns, pairings)[1].any()


def test_two_faces_on_screen_together_are_two_people_even_without_embeddings():
    turns = [Segment(0, 2), Segment(2, 4)]
    # both tracks span the whole video side by side: the pairing decides who takes each turn
    tracks = [track(1, 0.0, 4.0, None, x=0.0), track(2, 0.0, 4.0, None, x=300.0)]
    pairings = [TurnPairing(turns[0], "a", 1, 0.9), TurnPairing(turns[1], "b", 2, 0.9)]
    from xmodal_diar.pipelines.face_evidence import distance_offset, track_evidence

    ids, matrix = track_evidence(tracks, None)
    assert matrix[0, 1] == -1.0 and matrix[0, 0] == 1.0
    t, c = turn_face_tracks(turns, pairings)
    assert distance_offset(t, c, ids, matrix)[0, 1] == pytest.approx(0.81)


def test_face_evidence_changes_the_clustering():
    # turns 0 and 1 sound alike, turn 2 does not
    e = np.array([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]])
    assert clustering()(e).tolist() == [0, 0, 1]
    turns = [Segment(0, 2), Segment(2, 4), Segment(4, 6)]
    pairings = [TurnPairing(Segment(0, 2), "t", 7, 0.9), (Segment(2, 4), 8, 0.9), ((4.0, 6.0), 8, 0.8)]
    offset = evidence()(turns, pairings)
    assert clustering()(e, distance_offset=offset).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="distance_offset"):
        clustering()(e, distance_offset=np.zeros((2, 2)))


def test_turn_face_tracks_needs_coverage_and_validates():
    tracks, conf = turn_face_tracks([Segment(0, 4), Segment(4, 8)], [(Segment(0, 3), 1, 1.0), (Segment(7, 8), 2, 1.0)])
    assert tracks == [1, None] and conf[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"face_evidence\[0\]: confidence"):
        turn_face_tracks([Segment(0, 1)], [(Segment(0, 1), 1, 1.5)])
    with pytest.raises(ValueError, match=r"face_evidence\[0\]"):
        turn_face_tracks([Segment(0, 1)], ["nonsense"])


def test_an_uncalibrated_embedder_says_so():
    from xmodal_diar.faces.io import FaceTracks

    faces = FaceTracks(video="v.mp4", fps=5.0, tracks=[track(1, 0.0, 2.0, [1, 0])], embedder="torchscript")
    with pytest.warns(UserWarning, match="torchscript.*no calibration"):
        offset = evidence()([Segment(0, 2)], faces)
    assert offset.shape == (1, 1)


def test_anchored_short_turns_are_clustered_not_only_assigned():
    # voices alike; two long turns of face 0, four 0.5 s turns of face 1 (too short to be clustered)
    e = np.array([[1.0, 0.0], [0.999, 0.045], [0.998, 0.063], [0.997, 0.077], [0.999, 0.04], [0.998, 0.06]])
    durations = np.array([1.2, 1.2, 0.5, 0.5, 0.5, 0.5])
    faces = [0, 0, 1, 1, 1, 1]
    c = TurnClustering()
    c.instantiate({"threshold": 0.5, "linkage": "average", "min_turn_duration": 1.0, "min_cluster_duration": 0.0})
    offset = evidence()([Segment(k, k + 0.5) for k in range(6)], [((k, k + 0.5), f, 1.0) for k, f in enumerate(faces)])
    # only the long turns are clustered: one cluster, every short turn goes to its centroid
    assert c(e, durations=durations, distance_offset=offset)[0].tolist() == [0] * 6
    # anchored (confidently paired), the short turns are clustered: the second face is a speaker
    anchored = np.ones(6, dtype=bool)
    assert c(e, durations=durations, distance_offset=offset, anchored=anchored)[0].tolist() == faces
    # without the offset, anchoring alone changes nothing here (the voices decide)
    assert c(e, durations=durations, anchored=anchored)[0].tolist() == [0] * 6
    with pytest.raises(ValueError, match="anchored"):
        c(e, durations=durations, anchored=np.ones(3, dtype=bool))
