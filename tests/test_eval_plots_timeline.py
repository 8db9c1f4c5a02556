"""Timeline plot: title with the file name and DER, hypothesis colours of mapped reference speakers."""

from __future__ import annotations

from pyannote.core import Annotation, Segment
from pyannote.database.util import load_rttm

from xmodal_diar.eval.plots import plot_timeline, timeline_colours, timeline_title


def _relabelled(reference: Annotation) -> Annotation:
    """The reference with speakers renamed in reverse order, plus a false-alarm speaker."""
    labels = sorted(reference.labels())
    rename = {old: f"SPEAKER_{k:02d}" for k, old in enumerate(reversed(labels))}
    hypothesis = reference.rename_labels(rename)
    hypothesis[Segment(0.0, 0.5), "extra"] = "SPEAKER_99"
    return hypothesis, rename


def test_colours_follow_the_optimal_mapping(ami_debug):
    reference = load_rttm(ami_debug / "debug.development.rttm")["dev00"]
    hypothesis, rename = _relabelled(reference)
    ref_colour, hyp_colour = timeline_colours(hypothesis, reference)
    assert sorted(ref_colour.values()) == list(range(len(ref_colour)))
    for old, new in rename.items():
        assert hyp_colour[new] == ref_colour[old]
    assert hyp_colour["SPEAKER_99"] == len(ref_colour)  # unmapped: the next free colour
    _, alone = timeline_colours(hypothesis)
    assert sorted(alone.values()) == list(range(len(hypothesis.labels())))


def test_title_names_the_file_and_its_der(ami_debug, tmp_path):
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = load_rttm(ami_debug / "debug.development.rttm")["dev00"]
    hypothesis, _ = _relabelled(reference)
    der = DiarizationErrorRate()(reference, hypothesis)
    assert der > 0
    assert timeline_title(hypothesis, reference) == f"dev00 - DER {100 * der:.1f} %"
    assert timeline_title(hypothesis) == "dev00"
    png = plot_timeline(tmp_path / "dev00.png", hypothesis, reference)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
