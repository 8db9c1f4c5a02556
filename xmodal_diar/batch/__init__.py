"""Batch diarization of many files: one per-file job, two engines.

- :mod:`.jobs`: the per-file job (load audio, optional faces, pipeline, outputs written
  atomically) and :class:`DiarizeWorker`, which loads the pipeline once for many files.
- :mod:`.manifest`: the output folder's manifest (resume), ``summary.jsonl`` and
  ``failures.csv``.
- :mod:`.local`: the default engine, one file after another in this process.
- :mod:`.ray_engine`: Ray Core actors, one pipeline each, longest files first, dynamic
  dispatch, dead workers replaced (``pip install xmodal-diar[ray]``).
- :mod:`.runner`: :func:`run_batch`, which plans, skips what is done, runs an engine,
  reports progress and writes the summaries.
"""

from xmodal_diar.batch.jobs import BatchOptions, DiarizeWorker, FileJob, read_reference
from xmodal_diar.batch.runner import BatchInterrupted, BatchReport, read_input_list, run_batch

__all__ = [
    "BatchInterrupted",
    "BatchOptions",
    "BatchReport",
    "DiarizeWorker",
    "FileJob",
    "read_input_list",
    "read_reference",
    "run_batch",
]
