"""The default engine: one file after another, in this process, one pipeline."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from xmodal_diar.batch.jobs import BatchOptions, DiarizeWorker, FileJob


def run_local(
    jobs: Sequence[FileJob], options: BatchOptions, out_dir: str, on_result: Callable[[Dict[str, Any]], None]
) -> None:
    """Diarize ``jobs`` in the given order; ``on_result(record)`` after each."""
    if not jobs:
        return
    worker = DiarizeWorker(options, out_dir)
    try:
        for job in jobs:
            record = worker.process(job)
            record["attempts"] = 1
            on_result(record)
    finally:
        worker.close()
