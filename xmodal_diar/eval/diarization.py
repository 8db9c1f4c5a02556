"""Diarization error rates through pyannote.metrics, per file and aggregated.

Two DER settings are always reported:

- ``full``: collar 0, overlapping speech scored (pyannote.audio's benchmark setting);
- ``forgiving``: collar 0.25 s and overlap skipped (``skip_overlap=True``). pyannote's
  ``collar`` is the TOTAL width centred on each reference boundary, i.e. ±0.125 s here
  (NIST md-eval's ``-c 0.25`` is ±0.25 s, pyannote ``collar=0.5``).

``DER = (false alarm + missed detection + confusion) / total reference speech`` (overlap
counted once per speaker), with the optimal one-to-one speaker mapping. JER is
pyannote.metrics' ``JaccardErrorRate`` (collar 0, overlap scored); purity and coverage are
its ``DiarizationPurity`` / ``DiarizationCoverage`` on the annotations cropped to the UEM.

Inputs: ``{uri: Annotation}`` mappings, loaded from RTTM/UEM files or folders
(:func:`load_rttms`, :func:`load_uems`) or from a pyannote.database protocol
(:func:`protocol_references`). :func:`read_rttm` / :func:`read_uem` are the one reader of
these formats: every line is checked (missing fields, negative or non-finite times,
reversed UEM segments raise :class:`AnnotationFileError` naming file and line), and an
empty RTTM file is a valid "no speech" output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

PathLike = Union[str, Path]

#: name -> (collar, skip_overlap)
DER_SETTINGS = {"full": (0.0, False), "forgiving": (0.25, True)}
COMPONENTS = ("false alarm", "missed detection", "confusion", "total")


def _files(path: PathLike, suffix: str) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"*{suffix}"))
        if not files:
            raise FileNotFoundError(f"{path}: no *{suffix} file in this folder")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


class AnnotationFileError(ValueError):
    """A malformed RTTM or UEM file; the message names the file and the line."""


def _fields(path: Path, n_min: int, what: str):
    """``(line number, fields)`` of each data line of ``path`` (blank and ``;;``/``#`` lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationFileError(f"{path}: unreadable {what} file ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith((";;", "#")):
            continue
        if len(fields) < n_min:
            raise AnnotationFileError(
                f"{path}, line {number}: {len(fields)} field(s), a {what} line needs at least {n_min}: {line.strip()!r}"
            )
        yield number, fields


def _time(value: str, path: Path, number: int, name: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise AnnotationFileError(f"{path}, line {number}: {name} {value!r} is not a number") from None
    if not math.isfinite(t) or t < 0:
        raise AnnotationFileError(f"{path}, line {number}: {name} {value!r} must be a finite number >= 0")
    return t


def read_rttm(path: PathLike) -> dict:
    """``{uri: Annotation}`` of one RTTM file, every line checked.

    ``SPEAKER <uri> <channel> <start> <duration> <NA> <NA> <label> ...``: a line with fewer
    than 8 fields, a start or duration that is not a finite number >= 0 raises
    :class:`AnnotationFileError` naming the file and line; lines of other types are
    skipped. An EMPTY file is a valid "no speech" output: it gives ``{<file stem>: empty
    Annotation}`` (``xmodal-diar diarize`` names its RTTMs after their uri). Tracks are
    numbered by data line, as in ``pyannote.database.util.load_rttm``.
    """
    from pyannote.core import Annotation, Segment

    path = Path(path)
    annotations: dict = {}
    for index, (number, f) in enumerate(_fields(path, 8, "RTTM")):
        if f[0] != "SPEAKER":
            continue
        start = _time(f[3], path, number, "start")
        duration = _time(f[4], path, number, "duration")
        uri = f[1]
        annotation = annotations.setdefault(uri, Annotation(uri=uri))
        if duration > 0:
            annotation[Segment(start, start + duration), index] = f[7]
    if not annotations:
        annotations[path.stem] = Annotation(uri=path.stem)
    return annotations


def read_uem(path: PathLike) -> dict:
    """``{uri: Timeline}`` of one UEM file (``<uri> <channel> <start> <end>``), every line
    checked: 4 fields, finite times >= 0 and ``start < end``, else :class:`AnnotationFileError`
    naming the file and line. An empty UEM file is an error (it would score nothing)."""
    from pyannote.core import Segment, Timeline

    path = Path(path)
    uems: dict = {}
    for number, f in _fields(path, 4, "UEM"):
        start = _time(f[2], path, number, "start")
        end = _time(f[3], path, number, "end")
        if end <= start:
            raise AnnotationFileError(f"{path}, line {number}: empty or reversed UEM segment [{f[2]}, {f[3]}]")
        uems.setdefault(f[0], Timeline(uri=f[0])).add(Segment(start, end))
    if not uems:
        raise AnnotationFileError(f"{path}: empty UEM file (no <uri> <channel> <start> <end> line)")
    return uems


def load_rttms(path: PathLike) -> dict:
    """``{uri: Annotation}`` from one RTTM file or every ``*.rttm`` of a folder (:func:`read_rttm`)."""
    annotations: dict = {}
    for f in _files(path, ".rttm"):
        for uri, annotation in read_rttm(f).items():
            if uri in annotations:
                annotations[uri] = annotations[uri].update(annotation)
            else:
                annotations[uri] = annotation
    return annotations


def load_uems(path: PathLike) -> dict:
    """``{uri: Timeline}`` from one UEM file or every ``*.uem`` of a folder (:func:`read_uem`)."""
    uems: dict = {}
    for f in _files(path, ".uem"):
        uems.update(read_uem(f))
    return uems


def protocol_references(database: PathLike, protocol: str, subset: str = "test") -> tuple[dict, dict]:
    """``({uri: reference}, {uri: uem})`` of a pyannote.database protocol subset.

    ``database`` is the ``database.yml`` defining ``protocol`` (e.g. the ami-debug one
    defines ``Debug.SpeakerDiarization.Debug``); ``subset`` is train, development or test.
    """
    from pyannote.database import registry

    database = Path(database)
    if not database.is_file():
        raise FileNotFoundError(f"{database}: no such database.yml")
    with warnings.catch_warnings():  # re-loading the same database.yml is expected, not news
        warnings.filterwarnings("ignore", message="Replacing existing")
        registry.load_database(database)
    try:
        proto = registry.get_protocol(protocol)
    except Exception as exc:
        raise ValueError(f"{database}: no protocol {protocol!r} ({exc})") from exc
    if subset not in ("train", "development", "test"):
        raise ValueError(f"subset: expected train, development or test, got {subset!r}")
    references, uems = {}, {}
    try:
        files = list(getattr(proto, subset)())
    except Exception as exc:
        raise ValueError(f"{protocol}: subset {subset!r} is not available ({exc})") from exc
    for file in files:
        references[file["uri"]] = file["annotation"]
        if "annotated" in file:
            uems[file["uri"]] = file["annotated"]
    return references, uems


@dataclass
class DiarizationReport:
    """Per-file and aggregated figures (rates in [0, +inf), durations in seconds)."""

    per_file: dict = field(default_factory=dict)
    total: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"per_file": self.per_file, "total": self.total}


def _metrics(settings: Mapping[str, tuple[float, bool]]) -> dict:
    from pyannote.metrics.diarization import (
        DiarizationCoverage,
        DiarizationErrorRate,
        DiarizationPurity,
        JaccardErrorRate,
    )

    metrics = {
        f"der_{name}": DiarizationErrorRate(collar=collar, skip_overlap=skip)
        for name, (collar, skip) in settings.items()
    }
    metrics["jer"] = JaccardErrorRate(collar=0.0, skip_overlap=False)
    metrics["purity"] = DiarizationPurity()
    metrics["coverage"] = DiarizationCoverage()
    return metrics


def _row(metric, detail: Mapping) -> dict:
    row = {"value": float(metric.compute_metric(detail))}
    for c in COMPONENTS:
        if c in detail:
            row[c] = float(detail[c])
    return row


def evaluate_diarization(
    references: Mapping,
    hypotheses: Mapping,
    uems: Optional[Mapping] = None,
    settings: Mapping[str, tuple[float, bool]] = DER_SETTINGS,
) -> DiarizationReport:
    """DER (for each ``name: (collar, skip_overlap)`` of ``settings``, reported as
    ``der_<name>``) with components, JER, purity and coverage for every reference file.

    A reference without hypothesis is an error (a missing output would otherwise be scored
    as 100 % missed detection silently); hypotheses without reference are ignored; so is a
    UEM holding none of its file's reference speech, or no reference speech at all (DER
    would be 0 % over nothing). An empty hypothesis ("no speech") is scored: all missed. Without a
    UEM, pyannote.metrics evaluates the union extent of reference and hypothesis.
    """
    missing = sorted(set(references) - set(hypotheses))
    if missing:
        raise ValueError(
            f"hypothesis: no output for {len(missing)} reference file(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    if not references:
        raise ValueError("references: empty, nothing to evaluate")
    uems = uems or {}
    _check_scoreable(references, uems)
    metrics = _metrics(settings)
    report = DiarizationReport()
    for uri in sorted(references):
        reference, hypothesis, uem = references[uri], hypotheses[uri], uems.get(uri)
        row = {}
        for name, metric in metrics.items():
            if name in ("purity", "coverage") and uem is not None:
                detail = metric(reference.crop(uem), hypothesis.crop(uem), detailed=True)
            else:
                detail = metric(reference, hypothesis, uem=uem, detailed=True)
            row[name] = _row(metric, detail)
        report.per_file[uri] = row
    for name, metric in metrics.items():
        detail = {c: metric[c] for c in metric.components_}
        report.total[name] = _row(metric, detail)
    return report


def _check_scoreable(references: Mapping, uems: Mapping) -> None:
    """Refuse to score nothing: a UEM that holds none of its file's reference speech
    (outside the file, or a typo) or references without any speech in the scored regions
    would give DER 0 % over nothing."""
    total = 0.0
    for uri in sorted(references):
        reference, uem = references[uri], uems.get(uri)
        speech = reference.get_timeline().support()
        if uem is None:
            total += speech.duration()
            continue
        inside = speech.crop(uem, mode="intersection").duration()
        if speech and inside == 0:
            extent = speech.extent()
            raise ValueError(
                f"{uri}: the UEM ({', '.join(f'[{s.start:g}, {s.end:g}]' for s in uem)} s) holds none of the "
                f"reference speech (which spans {extent.start:g} to {extent.end:g} s): a UEM outside the file?"
            )
        total += inside
    if total == 0:
        raise ValueError(
            f"references: no speech in the scored regions of {len(references)} file(s); "
            "DER is undefined (nothing to score)"
        )


def format_report(report: DiarizationReport) -> str:
    """A plain-text table: one line per file then the aggregate, rates in %. The false
    alarm / missed / confusion columns are those of the first DER setting."""
    ders = [k for k in report.total if k.startswith("der_")]
    first = ders[0]
    header = f"{'file':<16} " + " ".join(f"{'DER(' + k[4:] + ')%':>16}" for k in ders)
    header += f" {'FA%':>6} {'Miss%':>6} {'Conf%':>6} {'JER%':>6} {'Pur%':>6} {'Cov%':>6}"

    def line(name: str, row: dict) -> str:
        der = row[first]
        total = der.get("total", 0.0) or float("nan")
        return (
            f"{name:<16} "
            + " ".join(f"{100 * row[k]['value']:16.2f}" for k in ders)
            + f" {100 * der['false alarm'] / total:6.2f} {100 * der['missed detection'] / total:6.2f}"
            f" {100 * der['confusion'] / total:6.2f} {100 * row['jer']['value']:6.2f}"
            f" {100 * row['purity']['value']:6.2f} {100 * row['coverage']['value']:6.2f}"
        )

    lines = [header]
    lines += [line(uri, row) for uri, row in report.per_file.items()]
    lines.append(line("TOTAL", report.total))
    return "\n".join(lines)
