"""DER / JER through pyannote.metrics on the ami-debug references (real data)."""

from __future__ import annotations

import pytest
from pyannote.core import Annotation, Segment

from xmodal_diar.eval.diarization import evaluate_diarization, load_rttms, load_uems, protocol_references

PROTOCOL = "Debug.SpeakerDiarization.Debug"
SHIFT = 0.5


@pytest.fixture(scope="module")
def development(ami_debug):
    return protocol_references(ami_debug / "database.yml", PROTOCOL, "development")


def test_protocol_and_rttm_loading_agree(ami_debug, development):
    references, uems = development
    assert sorted(references) == ["dev00", "dev01"]
    from_files = load_rttms(ami_debug / "debug.development.rttm")
    assert from_files["dev00"] == references["dev00"]
    assert load_uems(ami_debug / "debug.development.uem")["dev01"] == uems["dev01"]


def test_reference_against_itself_is_perfect(development):
    references, uems = development
    report = evaluate_diarization(references, references, uems)
    for row in [*report.per_file.values(), report.total]:
        assert row["der_full"]["value"] == 0.0
        assert row["der_forgiving"]["value"] == 0.0
        assert row["jer"]["value"] == 0.0
        assert row["purity"]["value"] == 1.0 and row["coverage"]["value"] == 1.0
    assert report.total["der_full"]["total"] > 0


def _isolated_segment(reference: Annotation, uem_end: float):
    """A single-speaker segment with no other speech within SHIFT s of it, ending SHIFT s
    before the end of the UEM (so a shift by SHIFT moves it into silence)."""
    segments = list(reference.itertracks(yield_label=True))
    for seg, track, label in segments:
        window = Segment(seg.start - SHIFT, seg.end + SHIFT)
        others = [s for s, t, _ in segments if (s, t) != (seg, track) and s.intersects(window)]
        if not others and seg.start > SHIFT and seg.end + SHIFT < uem_end and seg.duration > 1.0:
            return seg, track, label
    return None


def test_shifted_segment_gives_known_der(ami_debug):
    references = load_rttms(ami_debug / "debug.train.rttm")
    uems = load_uems(ami_debug / "debug.train.uem")
    for uri in sorted(references):
        found = _isolated_segment(references[uri], uems[uri].extent().end)
        if found:
            break
    else:
        pytest.fail("no isolated single-speaker segment in ami-debug train (data changed?)")
    seg, track, label = found
    reference = references[uri]
    hypothesis = reference.copy()
    del hypothesis[seg, track]
    hypothesis[Segment(seg.start + SHIFT, seg.end + SHIFT), track] = label
    # Independently: SHIFT s missed at the start, SHIFT s of false alarm after the end,
    # no confusion; the denominator is the summed reference speech (overlap per speaker).
    total = sum(s.duration for s, _ in reference.itertracks())
    report = evaluate_diarization({uri: reference}, {uri: hypothesis}, {uri: uems[uri]})
    full = report.per_file[uri]["der_full"]
    assert full["missed detection"] == pytest.approx(SHIFT, abs=1e-6)
    assert full["false alarm"] == pytest.approx(SHIFT, abs=1e-6)
    assert full["confusion"] == pytest.approx(0.0, abs=1e-6)
    assert full["total"] == pytest.approx(total, abs=1e-6)
    assert full["value"] == pytest.approx(2 * SHIFT / total, abs=1e-9)
    # collar 0.25 (±0.125 s around reference boundaries) forgives 0.125 s of each error
    forgiving = report.per_file[uri]["der_forgiving"]
    assert forgiving["missed detection"] == pytest.approx(SHIFT - 0.125, abs=1e-6)
    assert forgiving["false alarm"] == pytest.approx(SHIFT - 0.125, abs=1e-6)
    assert 0 < report.total["jer"]["value"] < 1


def test_relabelled_speaker_is_confusion_only_when_mapping_cannot_fix_it(development):
    references, uems = development
    reference = references["dev00"]
    (a, _), (b, _) = reference.chart()[:2]  # a speaks longest: the optimal mapping keeps a -> a
    # renaming every label is free (optimal mapping) ...
    renamed = reference.rename_labels({lab: f"x{k}" for k, lab in enumerate(reference.labels())})
    assert evaluate_diarization({"dev00": reference}, {"dev00": renamed}, uems).total["der_full"]["value"] == 0
    # ... merging speaker b into a is not: b's speech not overlapped by a becomes confusion
    merged = reference.rename_labels({b: a}).support()
    report = evaluate_diarization({"dev00": reference}, {"dev00": merged}, uems)
    full = report.total["der_full"]
    b_alone = reference.label_timeline(b).extrude(reference.label_timeline(a)).duration()
    overlap = reference.label_timeline(b).crop(reference.label_timeline(a)).duration()
    assert full["confusion"] == pytest.approx(b_alone, abs=1e-6)
    assert full["missed detection"] == pytest.approx(overlap, abs=1e-6)
    assert full["false alarm"] == pytest.approx(0.0, abs=1e-6)
    assert report.total["purity"]["value"] < 1.0 and report.total["coverage"]["value"] == 1.0


def test_missing_hypothesis_and_bad_paths_raise(development, tmp_path):
    references, uems = development
    with pytest.raises(ValueError, match="dev01"):
        evaluate_diarization(references, {"dev00": references["dev00"]}, uems)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_rttms(tmp_path / "nothing.rttm")
    with pytest.raises(FileNotFoundError, match=r"\*\.rttm"):
        load_rttms(tmp_path)
    empty_db = tmp_path / "database.yml"
    empty_db.write_text("Protocols: {}\n")
    with pytest.raises(ValueError, match="NoSuch"):
        protocol_references(empty_db, "NoSuch.Protocol")


# ------------------------------------------------------------------ reliability (issue 12, point 3)


def _dev00_reference(ami_debug, tmp_path):
    path = tmp_path / "ref.rttm"
    lines = [l for l in (ami_debug / "debug.development.rttm").read_text().splitlines() if " dev00 " in l]
    path.write_text("\n".join(lines) + "\n")
    return path, lines


@pytest.mark.parametrize("uem", ["dev00 NA 100.0 200.0", "dev00 NA 20.0 10.0"])
def test_uem_outside_file_or_reversed_is_an_error(ami_debug, tmp_path, capsys, uem):
    from xmodal_diar.cli import main

    reference, _ = _dev00_reference(ami_debug, tmp_path)
    (tmp_path / "x.uem").write_text(uem + "\n")
    code = main(["evaluate", "--reference", str(reference), "--hypothesis", str(reference),
                 "--uem", str(tmp_path / "x.uem")])
    err = capsys.readouterr().err
    assert code == 1
    assert "DER" not in capsys.readouterr().out
    assert ("x.uem, line 1" in err and "reversed" in err) or ("UEM" in err and "none of the reference speech" in err)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda f: f[:5], "needs at least 8"),  # missing fields
        (lambda f: f[:4] + ["-0.5"] + f[5:], "duration '-0.5'"),
        (lambda f: f[:3] + ["nan"] + f[4:], "start 'nan'"),
    ],
)
def test_malformed_rttm_line_names_file_and_line(ami_debug, tmp_path, edit, problem):
    from xmodal_diar.eval.diarization import AnnotationFileError, read_rttm

    _, lines = _dev00_reference(ami_debug, tmp_path)
    lines[2] = " ".join(edit(lines[2].split()))
    bad = tmp_path / "bad.rttm"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationFileError, match=rf"bad\.rttm, line 3: .*{problem}"):
        read_rttm(bad)


def test_empty_hypothesis_is_scored_as_all_missed(ami_debug, tmp_path):
    reference, _ = _dev00_reference(ami_debug, tmp_path)
    (tmp_path / "dev00.rttm").write_text("")
    hypotheses = load_rttms(tmp_path / "dev00.rttm")
    assert list(hypotheses) == ["dev00"] and not hypotheses["dev00"]
    report = evaluate_diarization(load_rttms(reference), hypotheses, load_uems(ami_debug / "debug.development.uem"))
    row = report.per_file["dev00"]["der_full"]
    assert row["value"] == 1.0 and row["missed detection"] == row["total"] > 0


from _faults import listing, output_fault  # noqa: E402,F401  (fixture)


def test_evaluate_out_unwritable_is_one_line_and_leaves_nothing(ami_debug, tmp_path, capsys, output_fault):
    from xmodal_diar.cli import main

    reference = ami_debug / "debug.development.rttm"
    out = tmp_path / "report"
    out.mkdir()
    status = main(["evaluate", "--reference", str(reference), "--hypothesis", str(reference),
                   "--uem", str(ami_debug / "debug.development.uem"), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and f"cannot write {out / 'diarization.json'}" in err
    assert listing(out) == []
