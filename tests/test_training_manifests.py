"""Manifests and data pipeline of the training recipes: builders on real data, early errors."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal_diar.training.dataio import (
    IdentityBatchSampler,
    build_label_encoder,
    identity_face_centroids,
    make_dataset,
    random_crop_bounds,
    turn_segments,
)
from xmodal_diar.training.manifests import (
    ManifestError,
    check_identities,
    librispeech_rows,
    prepare_shared_data,
    prepare_videos,
    read_manifest,
    rttm_turns,
    split_turn,
    write_manifest,
)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def flac(librispeech_test) -> Path:
    return sorted(librispeech_test.rglob("*.flac"))[0]


def test_split_turn_gives_equal_parts_covering_the_turn():
    parts = split_turn(1.0, 8.5, max_turn=3.0)
    assert len(parts) == 3
    assert parts[0][0] == 1.0 and parts[-1][1] == pytest.approx(8.5)
    assert all(b - a == pytest.approx(2.5) for a, b in parts)
    assert len(split_turn(0.0, 1.6, max_turn=3.0, min_parts=2)) == 2


def test_librispeech_rows_are_valid_manifest_rows(tmp_path, librispeech_test):
    rows = librispeech_rows(librispeech_test, max_turn=3.0, min_parts=2)
    path = write_manifest(rows, tmp_path / "t.csv")
    parsed = read_manifest(path, face_dim=128)
    assert len(parsed) == len(rows) >= 200
    assert {r["spk_id"] for r in parsed} == {"ls" + d.name for d in librispeech_test.iterdir() if d.is_dir()}
    for r in parsed[:20]:
        assert r["stop"] - r["start"] <= 3.0 * 16000 + 1
        assert r["duration"] == pytest.approx((r["stop"] - r["start"]) / 16000, abs=1e-3)
        assert r["face"] is None


def test_missing_column_names_file_and_columns(tmp_path, flac):
    path = _write_csv(tmp_path / "bad.csv", ["ID", "wav", "start", "stop", "spk_id"], [["a", flac, 0, 16000, "s"]])
    with pytest.raises(ManifestError, match=r"bad\.csv.*missing column.*duration"):
        read_manifest(path)


def test_malformed_numbers_name_the_line(tmp_path, flac):
    path = _write_csv(tmp_path / "bad.csv", ["ID", "duration", "wav", "start", "stop", "spk_id"],
                      [["a", "1.0", flac, 0, 16000, "s"], ["b", "1.0", flac, "zero", 16000, "s"]])
    with pytest.raises(ManifestError, match=r"bad\.csv, line 3 \(ID 'b'\).*numbers"):
        read_manifest(path)
    path = _write_csv(tmp_path / "bad2.csv", ["ID", "duration", "wav", "start", "stop", "spk_id"],
                      [["a", "1.0", flac, 16000, 100, "s"]])
    with pytest.raises(ManifestError, match="start < stop"):
        read_manifest(path)


def test_wrong_face_dimension_names_the_file_and_fix(tmp_path, flac):
    np.save(tmp_path / "f.npy", np.ones((4, 64), np.float32))
    path = _write_csv(tmp_path / "faces.csv", ["ID", "duration", "wav", "start", "stop", "spk_id", "face_emb"],
                      [["a", "1.0", flac, 0, 16000, "s", str(tmp_path / "f.npy")]])
    with pytest.raises(ManifestError, match=r"faces\.csv.*dimension 64, expected face_dim=128.*face_dim=64"):
        read_manifest(path, face_dim=128)
    assert read_manifest(path, face_dim=64)[0]["face"].shape == (4, 64)
    path = _write_csv(tmp_path / "inline.csv", ["ID", "duration", "wav", "start", "stop", "spk_id", "face_emb"],
                      [["a", "1.0", flac, 0, 16000, "s", "0.1 x 0.3"]])
    with pytest.raises(ManifestError, match="malformed face_emb"):
        read_manifest(path)


def test_single_sample_identity_is_rejected(tmp_path, flac):
    path = _write_csv(tmp_path / "one.csv", ["ID", "duration", "wav", "start", "stop", "spk_id"],
                      [["a", "1.0", flac, 0, 16000, "s1"], ["b", "1.0", flac, 16000, 32000, "s1"],
                       ["c", "1.0", flac, 0, 16000, "s2"]])
    rows = read_manifest(path)
    with pytest.raises(ManifestError, match=r"one\.csv: 1 identity has fewer than 2 samples: s2 \(1\)"):
        check_identities(rows, path)
    with pytest.raises(ManifestError, match="single sample.*s2"):
        IdentityBatchSampler([r["spk_id"] for r in rows], 2, 2)


def test_empty_data_folders_fail_early(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"empty: no \.flac file"):
        librispeech_rows(tmp_path / "empty")
    with pytest.raises(ManifestError, match="no such folder"):
        prepare_shared_data(tmp_path / "out", tmp_path / "absent")
    with pytest.raises(ManifestError, match="no video file"):
        prepare_videos(tmp_path / "empty", tmp_path / "x.rttm", tmp_path / "out")
    header_only = _write_csv(tmp_path / "h.csv", ["ID", "duration", "wav", "start", "stop", "spk_id"], [])
    with pytest.raises(ManifestError, match="no row"):
        read_manifest(header_only)


def test_rttm_turns_of_ami(ami_debug):
    turns = rttm_turns(ami_debug / "debug.train.rttm", min_duration=0.5)
    assert set(turns) == {f"trn{k:02d}" for k in range(10)}
    assert all(t.end - t.start >= 0.5 for ts in turns.values() for t in ts)


def test_identity_batch_sampler_pk_batches_with_faces():
    labels = [f"s{k // 3}" for k in range(30)]  # 10 identities x 3
    sampler = IdentityBatchSampler(labels, identities_per_batch=4, samples_per_identity=2,
                                   face_identities=["s0", "s1"], face_identities_per_batch=2, n_batches=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {2}
        assert {"s0", "s1"} <= set(counts)
    assert batches != list(sampler)  # the next epoch draws other batches
    sampler.set_epoch(0)
    assert list(sampler) == batches


def test_random_crops_stay_inside_the_turn_and_in_range():
    torch.manual_seed(0)
    for _ in range(50):
        a, b = random_crop_bounds(16000, 16000 * 6, 0.5, 3.0)
        assert 16000 <= a < b <= 16000 * 6
        assert 0.5 * 16000 - 1 <= b - a <= 3.0 * 16000 + 1
    assert random_crop_bounds(0, 4000, 0.5, 3.0) == (0, 4000)


def test_dataset_items_on_real_faces(tmp_path, shared_data):
    """Talking-heads turns carry their real face teacher; librispeech turns carry none."""

    paths = prepare_shared_data(tmp_path, shared_data, max_librispeech_speakers=3, max_talking_heads=2,
                                face_cache=_face_cache())
    rows = read_manifest(paths["train"], face_dim=128)
    with_face = [r for r in rows if r["face"] is not None]
    assert {r["spk_id"] for r in with_face} == {"th01", "th02"}
    assert all(r["face"].shape == (4, 128) and r["quality"].shape == (4,) for r in with_face)
    enc = build_label_encoder(rows)
    ds = make_dataset(paths["train"], rows, enc, train=True, crop_min=0.5, crop_max=1.0, face_dim=128,
                      two_crops=True, n_segments=4, segment_duration=0.5)
    ids = [r["ID"] for r in rows]
    item = ds[ids.index(with_face[0]["ID"])]
    assert 8000 - 1 <= item["sig"].shape[0] <= 16000 + 1 and item["sig_key"].ndim == 1
    assert item["has_face"].item() == 1.0
    assert torch.linalg.norm(item["teacher"]).item() == pytest.approx(1.0, abs=1e-5)
    assert item["segments"].shape == (4, 8000) and item["teacher_segments"].shape == (4, 128)
    other = ds[ids.index(next(r["ID"] for r in rows if r["face"] is None))]
    assert other["has_face"].item() == 0.0 and float(other["teacher"].abs().sum()) == 0.0
    centroids, face_rows = identity_face_centroids(rows, enc)
    assert centroids.shape == (2, 128)
    assert sorted(face_rows[face_rows >= 0].tolist()) == [0, 1]
    # the two talking-head identities are different people: their face centroids differ clearly
    assert float(centroids[0] @ centroids[1]) < 0.95


def test_turn_segments_are_synchronised_windows(flac):
    seg = turn_segments(str(flac), 0, 4 * 16000, 4, 0.5)
    assert seg.shape == (4, 8000)
    assert not torch.equal(seg[0], seg[1])


def _face_cache() -> Path:
    import os

    return Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal-diar")) / "face_tracks"


def test_pyannote_database_protocol(tmp_path, ami_debug):
    from xmodal_diar.training.manifests import prepare_protocol

    written = prepare_protocol("Debug.SpeakerDiarization.Debug", tmp_path, subsets=["train", "development"],
                               database_yml=ami_debug / "database.yml")
    train = read_manifest(written["train"])
    assert Path(train[0]["wav"]).name == "trn00.wav"
    assert all(r["stop"] - r["start"] <= 3.0 * 16000 + 1 for r in train)
    assert min(Counter(r["spk_id"] for r in train).values()) >= 2
    with pytest.raises(ManifestError, match="No.Such.Protocol.*not found"):
        prepare_protocol("No.Such.Protocol", tmp_path)


# ------------------------------------------------------------------ reliability (issue 12, point 2)


def test_prepare_videos_keeps_dotted_names_apart(talking_heads, tmp_path):
    """``show.part1.mp4`` and ``show.part2.mp4`` (two different people) used to share one
    face cache ``show.faces.npz``: part2's turns got part1's face (teacher cosine 1.0)."""
    import shutil

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(talking_heads / "00010.mp4", videos / "show.part1.mp4")  # th02
    shutil.copy(talking_heads / "00015.mp4", videos / "show.part2.mp4")  # th03
    rttm = tmp_path / "turns.rttm"
    rttm.write_text("SPEAKER show.part1 1 0.0 4.0 <NA> <NA> A <NA> <NA>\n"
                    "SPEAKER show.part2 1 0.0 4.0 <NA> <NA> B <NA> <NA>\n")
    path = prepare_videos(videos, rttm, tmp_path / "out", max_turn=2.0, fps=2.0)
    rows = read_manifest(path, face_dim=128)
    assert sorted(p.name for p in (tmp_path / "out" / "face_tracks").iterdir()) == [
        "show.part1.faces.npz", "show.part2.faces.npz"]
    teacher = {}
    for r in rows:
        assert r["face"] is not None, r["ID"]
        t = r["face"].mean(0)
        teacher.setdefault(r["spk_id"], []).append(t / np.linalg.norm(t))
    a, b = (np.mean(teacher[k], axis=0) for k in ("A", "B"))
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) < 0.95  # two people, two faces

    # a cache file recorded for another video is refused, not silently reused
    from xmodal_diar.training.manifests import cached_face_tracks

    cache = tmp_path / "foreign"
    cache.mkdir()
    shutil.copy(tmp_path / "out" / "face_tracks" / "show.part1.faces.npz", cache / "show.part2.faces.npz")
    with pytest.raises(ManifestError, match=r"show\.part2\.faces\.npz: holds the face tracks of .*show\.part1\.mp4"):
        cached_face_tracks(videos / "show.part2.mp4", cache)


from _faults import listing, output_fault  # noqa: E402,F401  (fixture)


def test_prepare_to_an_unwritable_folder_is_one_line(talking_heads, tmp_path, capsys, output_fault):
    from xmodal_diar.cli import main

    rttm = tmp_path / "turns.rttm"
    rttm.write_text("SPEAKER 00010 1 0.0 4.0 <NA> <NA> A <NA> <NA>\n")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["prepare", "videos", str(talking_heads), str(rttm), "--out", str(out), "--no-faces"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {out / 'train.csv'}" in err
    assert listing(out) == []


# ------------------------------------------------------------------ reliability (issue 12, point 7)


def test_bad_audio_rows_are_all_reported_before_training(librispeech_test, tmp_path):
    """A missing file, random bytes and a stop past the end: one error listing the three,
    raised by dataio_prep before any dataset or batch exists."""
    from xmodal_diar.audio import audio_info
    from xmodal_diar.training.dataio import dataio_prep

    flacs = sorted(librispeech_test.rglob("*.flac"))[:4]
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(np.random.default_rng(0).bytes(20_000))
    header = ["ID", "duration", "wav", "start", "stop", "spk_id"]
    rows = [[f"good{k}", 1.0, str(f), 0, 16000, f"s{k % 2}"] for k, f in enumerate(flacs)]
    end = int(audio_info(flacs[0]).duration * 16000)
    rows += [["missing", 1.0, str(tmp_path / "gone.flac"), 0, 16000, "s0"],
             ["garbage", 1.0, str(garbage), 0, 16000, "s1"],
             ["too_long", 1.0, str(flacs[0]), end - 8000, end + 16000, "s0"]]
    csv_path = _write_csv(tmp_path / "train.csv", header, rows)
    with pytest.raises(ManifestError) as info:
        dataio_prep({"train_annotation": str(csv_path), "face_dim": 128, "save_folder": str(tmp_path / "save")})
    message = str(info.value)
    assert message.startswith(f"{csv_path}: 3 of 7 rows have unusable audio")
    assert "ID 'missing'" in message and "gone.flac: no such file" in message
    assert "ID 'garbage'" in message and "unreadable audio" in message
    assert "ID 'too_long'" in message and "is after the end of" in message
    assert "good" not in message
