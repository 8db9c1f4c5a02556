"""The output folder's records: what is done (resume), ``summary.jsonl``, ``failures.csv``.

``<out>/manifest/<uri>.json`` is written (atomically) after a file's outputs: it holds the
input's resolved path, size and mtime, the options that shape the outputs, the outputs'
names and the file's figures. A rerun skips a file whose record matches its input and
options and whose outputs are all there. ``summary.jsonl`` (one JSON line per input: input
path, uri, rttm, duration, speakers, no_speech, rtf, der) and ``failures.csv`` (input,
uri, error, attempts) are rewritten, atomically, at the end of each run.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from xmodal_diar.outputs import write_text

MANIFEST_DIR = "manifest"
SUMMARY = "summary.jsonl"
FAILURES = "failures.csv"


def record_path(out_dir: Path, uri: str) -> Path:
    return Path(out_dir) / MANIFEST_DIR / f"{uri}.json"


def new_record(job, options) -> Dict[str, Any]:
    """The fields every record has, before the job runs."""
    return {
        "input": job.source,
        "resolved": str(job.file.expanduser().resolve()),
        "uri": job.uri,
        "rttm": f"{job.uri}.rttm",
        "size": job.size,
        "mtime_ns": job.mtime_ns,
        "config": options.config(),
        "status": "running",
    }


def write_record(out_dir: Path, record: Dict[str, Any]) -> Path:
    return write_text(record_path(out_dir, record["uri"]), json.dumps(record, ensure_ascii=False) + "\n")


def completed_record(out_dir: Path, job, options) -> Optional[Dict[str, Any]]:
    """The record of ``job`` if its outputs are complete for this input and these options."""
    try:
        record = json.loads(record_path(out_dir, job.uri).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    expected = new_record(job, options)
    if record.get("status") != "ok":
        return None
    if any(record.get(key) != expected[key] for key in ("resolved", "size", "mtime_ns", "config")):
        return None
    if not all((Path(out_dir) / name).is_file() for name in record.get("outputs", [record["rttm"]])):
        return None
    return record


def summary_line(record: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("input", "uri", "rttm", "status", "duration", "speakers", "turns", "no_speech", "rtf", "der",
            "warnings", "error", "attempts", "skipped")
    line = {k: record[k] for k in keys if k in record}
    if line.get("status") != "ok":
        line.pop("rttm", None)
    return line


def write_summary(out_dir: Path, records: Iterable[Dict[str, Any]]) -> Path:
    text = "".join(json.dumps(summary_line(r), ensure_ascii=False) + "\n" for r in records)
    return write_text(Path(out_dir) / SUMMARY, text)


def write_failures(out_dir: Path, records: Iterable[Dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["input", "uri", "error", "attempts"])
    for r in records:
        if r.get("status") != "ok":
            writer.writerow([r["input"], r["uri"], r.get("error", ""), r.get("attempts", 1)])
    return write_text(Path(out_dir) / FAILURES, buffer.getvalue())
