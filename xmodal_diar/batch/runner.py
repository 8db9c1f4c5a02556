"""``run_batch``: plan the jobs, skip what is done, run an engine, report, summarise.

Exit semantics for the CLI: :attr:`BatchReport.failed` non-empty -> status 1;
:class:`BatchInterrupted` (Ctrl-C) -> status 130, and a rerun of the same command resumes
(completed files are skipped: see :mod:`xmodal_diar.batch.manifest`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from xmodal_diar.batch import manifest
from xmodal_diar.batch.jobs import BatchOptions, FileJob
from xmodal_diar.outputs import OutputError, output_stems, remove_temporaries


class BatchInterrupted(Exception):
    """Ctrl-C: ``done`` of ``total`` files have complete outputs; rerun to resume."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted: {done} of {total} files done; rerun the same command to resume")
        self.done, self.total = done, total


@dataclasses.dataclass
class BatchReport:
    records: List[Dict[str, Any]]
    wall_seconds: float
    output_errors: List[str] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok" and not r.get("skipped")]

    @property
    def skipped(self) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("skipped")]

    @property
    def failed(self) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]

    @property
    def audio_hours(self) -> float:
        return sum(r.get("duration", 0.0) for r in self.done) / 3600

    @property
    def throughput(self) -> float:
        """Hours of audio diarized per wall-clock hour (skipped files not counted)."""
        return self.audio_hours / (self.wall_seconds / 3600) if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        silent = sum(bool(r.get("no_speech")) for r in self.done)
        return (
            f"{len(self.records)} files: {len(self.done)} diarized"
            + (f" ({silent} with no speech)" if silent else "")
            + f", {len(self.skipped)} skipped (already done), {len(self.failed)} failed; "
            f"{self.audio_hours:.3f} h of audio in {self.wall_seconds:.1f} s ({self.throughput:.1f} h of audio per hour)"
        )


def read_input_list(path: str) -> List[str]:
    """Inputs listed in a CSV (``--manifest``): the ``path`` (or ``input``/``audio``) column,
    else the first column; relative paths are relative to the CSV's folder."""
    csv_path = Path(path)
    if csv_path.is_dir():
        raise ValueError(f"--manifest: {path} is a directory, expected a CSV file")
    if not csv_path.is_file():
        raise FileNotFoundError(f"--manifest: {path} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as fp:
        rows = [row for row in csv.reader(fp) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"--manifest: {path} lists no input")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(n) for n in ("path", "input", "audio", "file") if n in header), None)
    has_header = column is not None
    rows, column = (rows[1:], column) if has_header else (rows, 0)
    inputs = []
    for number, row in enumerate(rows, start=2 if has_header else 1):
        if len(row) <= column or not row[column].strip():
            raise ValueError(f"--manifest: {path}: row {number} has no path")
        entry = Path(row[column].strip()).expanduser()
        inputs.append(str(entry if entry.is_absolute() else csv_path.parent / entry))
    return inputs


def plan_jobs(inputs: Sequence[str]) -> List[FileJob]:
    """One job per distinct input: unique whitespace-free uris, size, mtime, duration."""
    from xmodal_diar.audio import audio_info

    stems = output_stems(inputs, uri_safe=True)
    jobs, seen = [], set()
    for source in map(str, inputs):
        if stems[source] in seen:  # the same file given twice
            continue
        seen.add(stems[source])
        try:
            stat = os.stat(source)
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime_ns = -1, -1  # the worker reports the error
        try:
            duration = float(audio_info(Path(source)).duration)
        except Exception:
            duration = 0.0
        path = str(Path(source).expanduser().absolute())
        jobs.append(FileJob(source, stems[source], size, mtime_ns, duration, path))
    return jobs


def describe(record: Dict[str, Any]) -> str:
    """The one-line report of a file."""
    source = record["input"]
    if record.get("status") != "ok":
        return f"{source}: FAILED: {record.get('error', 'unknown error')}"
    if record.get("skipped"):
        return f"{source}: skipped, already done -> {record['rttm']}"
    text = (
        f"{source}: {record['duration']:.1f} s, {record['speakers']} speakers, {record['turns']} turns, "
        f"RTF {record['rtf']:.3f} -> {record['rttm']}"
    )
    if record.get("no_speech"):
        text += " (no speech: empty RTTM)"
    if "der" in record:
        text += f", DER {100 * record['der']:.1f} %"
    for warning in record.get("warnings", []):
        text += f" (warning: {warning})"
    return text


def run_batch(
    inputs: Sequence[str],
    options: BatchOptions,
    out_dir: str,
    *,
    engine: str = "local",
    quiet: bool = False,
    stdout=None,
    stderr=None,
    **engine_kwargs,
) -> BatchReport:
    """Diarize ``inputs`` into ``out_dir`` with ``engine`` (``local`` or ``ray``).

    Raises :class:`BatchInterrupted` on Ctrl-C (after writing the summaries of what is done).
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    remove_temporaries(out)  # left by a killed run
    remove_temporaries(out / manifest.MANIFEST_DIR)
    started = time.perf_counter()
    jobs = plan_jobs(inputs)
    records: Dict[str, Dict[str, Any]] = {}
    todo = []
    for job in jobs:
        record = manifest.completed_record(out, job, options)
        if record is None:
            todo.append(job)
        else:
            records[job.uri] = dict(record, input=job.source, skipped=True)
    bar = _progress_bar(jobs, records, quiet, stderr)
    hours = {job.uri: job.duration / 3600 for job in jobs}

    def on_result(record: Dict[str, Any]) -> None:
        record["finished_s"] = round(time.perf_counter() - started, 3)  # for benchmarks; not in the summary
        records[record["uri"]] = record
        line = describe(record)
        if bar is not None:
            bar.write(line, file=stdout if record.get("status") == "ok" else stderr)
            bar.update(hours[record["uri"]])
            bar.set_description_str(f"{len(records)}/{len(jobs)} files")
        else:
            print(line, file=stdout if record.get("status") == "ok" else stderr, flush=True)

    for record in records.values():
        print(describe(record), file=stdout)
    interrupted = False
    try:
        if engine == "local":
            from xmodal_diar.batch.local import run_local

            if engine_kwargs:
                raise ValueError(f"--engine local does not take {', '.join(engine_kwargs)}")
            run_local(todo, options, str(out.resolve()), on_result)
        elif engine == "ray":
            from xmodal_diar.batch.ray_engine import run_ray

            run_ray(todo, options, str(out.resolve()), on_result, **engine_kwargs)
        else:
            raise ValueError(f"unknown engine {engine!r} (local or ray)")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    order = {job.uri: k for k, job in enumerate(jobs)}
    report = BatchReport(sorted(records.values(), key=lambda r: order[r["uri"]]), time.perf_counter() - started)
    for write in (manifest.write_summary, manifest.write_failures):
        try:
            write(out, report.records)
        except OutputError as exc:
            report.output_errors.append(str(exc))
    if interrupted:
        raise BatchInterrupted(len([r for r in report.records if r.get("status") == "ok"]), len(jobs))
    return report


def _progress_bar(jobs, records, quiet, stream):
    if quiet:
        return None
    from tqdm import tqdm

    done = sum(j.duration for j in jobs if j.uri in records) / 3600
    total = sum(j.duration for j in jobs) / 3600
    return tqdm(
        total=total, initial=done, desc=f"{len(records)}/{len(jobs)} files", file=stream,
        unit="h", bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} h of audio "
        "[{elapsed}<{remaining}]", dynamic_ncols=True,
    )
