"""Batch benchmark: throughput of the local engine and of the Ray engine (1 and 2 workers).

    python benchmarks/batch.py [--files 20] [--workers 1 2] [--out benchmarks/results/batch.json]

The same files for every engine: the 12 ami-debug excerpts (30 s each) then talking-heads
clips (audio only, 4 to 12 s) up to ``--files``, diarized with the embedded default
model into a fresh output folder each time (nothing skipped), torch on one thread per
worker. For each engine:

- ``wall_s``: wall-clock seconds of :func:`xmodal_diar.batch.run_batch`, pipeline loading
  included (Ray: ``ray_start_s``, the start of the local Ray, is measured apart);
- ``throughput``: hours of audio per wall-clock hour, ``audio_h / (wall_s / 3600)``;
- ``compute_s``: the sum of the per-file times measured inside the workers.

- ``steady_*``: from the first result on (pipelines loaded): the other files' audio over
  the time they took (``steady_throughput``, hours of audio per hour), wall and compute
  seconds per file.

Ray's overhead per file, ``amortised``: ``(wall_s(ray, 1 worker) - wall_s(local)) / files``
(both load the pipeline once and work on one core: what Ray adds, actor start included);
``steady``: the steady wall-minus-compute time per file of Ray with 1 worker less that of
the local engine (dispatch and result transfer). The cost of an archive is
``hours / per-core throughput`` core-hours, at the local engine's steady one-thread
throughput (``steady_throughput`` is in hours of audio per wall-clock hour on one core).
Also records the load average: the reference machine has 2 cores, shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def files(count: int):
    from xmodal_diar.shared_data import shared_data_root

    data = shared_data_root()
    found = sorted(p for p in (data / "ami-debug").glob("*.wav") if p.name != "empty.wav")
    found += sorted((data / "talking-heads").glob("*.mp4"))
    if len(found) < count:
        raise SystemExit(f"only {len(found)} shared files under {data}, asked for {count}")
    return [str(p) for p in found[:count]]


def measure(inputs, engine: str, **kwargs):
    from xmodal_diar.batch import BatchOptions, run_batch

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = run_batch(inputs, BatchOptions(torch_threads=1), out, engine=engine, quiet=True,
                           stdout=open(os.devnull, "w"), **kwargs)
        wall = time.perf_counter() - started
    if report.failed:
        raise SystemExit(f"{engine}: {len(report.failed)} files failed: {report.failed[0].get('error')}")
    audio_h = sum(r["duration"] for r in report.records) / 3600
    by_time = sorted(report.records, key=lambda r: r["finished_s"])
    first, rest = by_time[0], by_time[1:]
    span = rest[-1]["finished_s"] - first["finished_s"]
    return {
        "files": len(report.records),
        "audio_h": round(audio_h, 5),
        "wall_s": round(wall, 2),
        "first_result_s": first["finished_s"],
        "compute_s": round(sum(r["seconds"] for r in report.records), 2),
        "throughput": round(audio_h / (wall / 3600), 2),
        # after the first result (pipelines loaded): audio of the other files over the time they took
        "steady_throughput": round(sum(r["duration"] for r in rest) / span, 2),
        "steady_wall_per_file_s": round(span / len(rest), 3),
        "steady_compute_per_file_s": round(sum(r["seconds"] for r in rest) / len(rest), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch.json"))
    args = parser.parse_args()
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    import torch

    torch.set_num_threads(1)
    inputs = files(args.files)
    from xmodal_diar.shared_data import shared_data_root

    data = str(shared_data_root())
    listed = [f.replace(data, "$XMODAL_DATA", 1) for f in inputs]  # no machine-specific paths in the results
    results = {"machine": f"{os.cpu_count()} CPUs", "load_average_start": os.getloadavg(), "files": listed}
    results["local"] = measure(inputs, "local")
    print("local", results["local"], flush=True)
    import ray

    for workers in args.workers:
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        ray_start = time.perf_counter() - started
        row = measure(inputs, "ray", workers=workers)
        ray.shutdown()
        row["ray_start_s"] = round(ray_start, 2)
        results[f"ray_{workers}"] = row
        print(f"ray {workers}", row, flush=True)
    n = results["local"]["files"]
    if "ray_1" in results:
        local, ray1 = results["local"], results["ray_1"]
        results["ray_overhead_per_file_s"] = {
            "amortised": round((ray1["wall_s"] - local["wall_s"]) / n, 3),
            "steady": round((ray1["steady_wall_per_file_s"] - ray1["steady_compute_per_file_s"])
                            - (local["steady_wall_per_file_s"] - local["steady_compute_per_file_s"]), 3),
        }
    per_core = results["local"]["steady_throughput"]
    results["archive_10000_h"] = {
        "per_core_throughput": per_core,
        "core_hours": round(10000 / per_core, 1),
        "formula": f"10000 h / {per_core} h of audio per core-hour",
    }
    results["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "files"}, indent=1))


if __name__ == "__main__":
    main()
