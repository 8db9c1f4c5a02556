"""Speed and memory of the face pipeline on the talking-head clips, per detector backend.

    python benchmarks/faces.py [--backends blazeface dlib-hog dlib-cnn] [--landmarks dlib68]
                               [--embed-every 10 3] [--detect-every 5 1] [--embed-workers 0 1]
                               [--every-frame-clips 2] [--threads 1]

For each detector (with dlib 68-point landmarks, as ``diarize --video``, and dlib's 128-D
embedder, the offline default), each ``embed_every`` / ``detect_every`` (see
:func:`xmodal_diar.faces.iter_frame_detections`) and each sampling (5 fps, and every
frame), it runs :func:`xmodal_diar.faces.extract_face_tracks` (decode + shot cuts on every
frame + detect or follow + landmarks + align + embed + quality + tracking) in a fresh
process and measures:

- with ``--embed-workers 1`` the dlib embedder runs in a second process
  (:class:`~xmodal_diar.faces.FaceExtractor`'s ``embed_workers``), overlapping with
  decoding and detection on the second core; CPU seconds are then the main process's only;
- frames per second (sampled frames processed / wall-clock seconds) and the CPU seconds
  per frame of the process (less sensitive to other jobs sharing the CPU);
- CPU seconds per second of video (the process, plus the embedding process when there is
  one: ``cpu_s_per_video_s_total``), and its inverse ``x_real_time_cpu``: the real-time
  factor on one free core (target: at most 0.25, at least 4x real time);
- the real-time factor ``RTF = processing seconds / video seconds`` and its inverse,
  ``x real time`` (target: at least 4x real time at 5 fps with the offline default);
- peak memory: the process's peak resident set (``resource.getrusage``) and the peak of
  Python-level allocations while processing (``tracemalloc``; numpy included, not torch/dlib).

Every-frame runs use the ``--every-frame-clips`` shortest clips only (they are 5x longer).
Prints a table and writes ``benchmarks/results/faces.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import List, Optional

from xmodal_diar.outputs import command_line, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "faces.json"
DEFAULT_BACKENDS = ("blazeface", "dlib-hog", "dlib-cnn")


def _measure(detector: str, fps: Optional[float], clips: List[str], threads: int, embed_every: int, embed_workers: int,
             landmarks: str = "dlib68", detect_every: int = 5) -> dict:
    """Run in a fresh process: extract the clips' face tracks and time them."""
    import tracemalloc

    import numpy as np
    import torch

    from xmodal_diar.faces import FaceExtractor, extract_face_tracks
    from xmodal_diar.faces.video import iter_frames

    torch.set_num_threads(threads)
    extractor = FaceExtractor(detector, landmarks, keep_aligned=False, embed_workers=embed_workers)
    warm = next(iter_frames(clips[0], 1.0))[2]
    extractor(warm)  # model loading and first-call costs are not throughput
    if embed_workers:
        extractor.embed_later([np.zeros((150, 150, 3), np.uint8)]).result()  # start the worker process
    frames = sum(1 for clip in clips for _ in iter_frames(clip, fps))  # sampled frames, counted before timing
    faces = tracks = 0
    duration = 0.0
    worker_cpu = _worker_cpu(extractor)
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for clip in clips:
        result = extract_face_tracks(clip, fps, extractor=extractor, embed_every=embed_every, detect_every=detect_every)
        faces += len(result.detections)
        tracks += len(result.tracks)
        duration += result.duration
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    worker_cpu = _worker_cpu(extractor) - worker_cpu
    extractor.close()  # a finished worker's peak memory shows in RUSAGE_CHILDREN
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "detector": detector,
        "landmarks": landmarks,
        "detect_every": detect_every,
        "torch_threads": threads,
        "embedder": extractor.embedder.name,
        "embed_every": embed_every,
        "embed_workers": embed_workers,
        "sampling": "every frame" if fps is None else f"{fps:g} fps",
        "clips": len(clips),
        "video_seconds": round(duration, 2),
        "frames": frames,
        "faces": faces,
        "tracks": tracks,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "frames_per_second": round(frames / wall, 2),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 1),
        "cpu_seconds_worker": round(worker_cpu, 2) if embed_workers else None,
        "cpu_s_per_video_s": round(cpu / duration, 4),
        "cpu_s_per_video_s_total": round((cpu + worker_cpu) / duration, 4),
        "x_real_time_cpu": round(duration / (cpu + worker_cpu), 2),
        "rtf": round(wall / duration, 3),
        "x_real_time": round(duration / wall, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1) if embed_workers else None,
        "peak_python_mb": round(python_peak / 2**20, 1),
    }


def _worker_cpu(extractor) -> float:
    """CPU seconds the embedding worker process has used so far (0 without one)."""
    pool = extractor._pool
    return 0.0 if pool is None else pool.submit(time.process_time).result()


def main(argv=None) -> int:
    import inspect

    from xmodal_diar.faces import extract_face_tracks

    defaults = inspect.signature(extract_face_tracks).parameters
    EMBED_EVERY, DETECT_EVERY = defaults["embed_every"].default, defaults["detect_every"].default
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--every-frame-clips", type=int, default=2, help="shortest clips used every frame (0: skip)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: the per-frame networks are small, and extra threads "
        "spin against other jobs on a shared 2-core CPU)",
    )
    parser.add_argument("--landmarks", default="dlib68", help="dlib68 (default: diarize --video's, for the mouth) or dlib5")
    parser.add_argument("--embed-every", type=int, nargs="+", default=[EMBED_EVERY, 3],
                        help="embed each face every K-th sampled frame (one run per value; default "
                        f"{EMBED_EVERY} = extract_face_tracks' default, and 3 = the former default)")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[DETECT_EVERY, 1],
                        help=f"run the detector every K-th sampled frame, follow the faces in between (one run per "
                        f"value; default {DETECT_EVERY} = extract_face_tracks' default, and 1 = detect everywhere, as before)")
    parser.add_argument("--embed-workers", type=int, nargs="+", default=[0, 1], choices=(0, 1),
                        help="0: embed in the process; 1: in a second process (one run per value; default 0 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from xmodal_diar.shared_data import require_shared_data

    folder = require_shared_data("talking-heads")
    from xmodal_diar.faces.video import video_info

    clips = sorted(str(p) for p in folder.glob("*.mp4"))
    shortest = sorted(clips, key=lambda c: video_info(c).duration)[: args.every_frame_clips]
    runs = []
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    for detector in args.backends:
        for embed_every, detect_every, embed_workers in itertools.product(
            args.embed_every, args.detect_every, args.embed_workers
        ):
            for fps, subset in ((args.fps, clips), (None, shortest)):
                if not subset:
                    continue
                with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                    try:
                        runs.append(pool.submit(
                            _measure, detector, fps, subset, args.threads, embed_every, embed_workers,
                            args.landmarks, detect_every,
                        ).result())
                    except (OSError, ValueError, RuntimeError) as exc:  # e.g. sfd without its weights
                        print(f"{detector}: skipped ({exc})")
                        break
                r = runs[-1]
                print(f"{detector:10s} {r['sampling']:12s} embed 1/{embed_every} detect 1/{detect_every} workers {embed_workers} "
                      f"{r['frames']:5d} frames {r['frames_per_second']:6.2f} fps {r['x_real_time']:6.2f}x real time (wall), "
                      f"{r['cpu_s_per_video_s_total']:.3f} CPU s per video s", flush=True)

    header = f"{'detector':10s} {'sampling':12s} {'embed':>5s} {'detect':>6s} {'wrk':>3s} {'clips':>5s} {'video s':>8s} {'frames':>6s} " \
             f"{'faces':>6s} {'fps':>7s} {'cpu ms/f':>8s} {'cpu s/s':>7s} {'x RT cpu':>8s} {'RTF':>6s} {'x RT':>6s} {'RSS MB':>7s} {'py MB':>6s}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in runs:
        print(f"{r['detector']:10s} {r['sampling']:12s} {'1/' + str(r['embed_every']):>5s} {'1/' + str(r['detect_every']):>6s} "
              f"{r['embed_workers']:3d} {r['clips']:5d} {r['video_seconds']:8.1f} {r['frames']:6d} "
              f"{r['faces']:6d} {r['frames_per_second']:7.2f} {r['cpu_ms_per_frame']:8.1f} {r['cpu_s_per_video_s_total']:7.3f} "
              f"{r['x_real_time_cpu']:8.2f} {r['rtf']:6.3f} {r['x_real_time']:6.2f} {r['peak_rss_mb']:7.0f} {r['peak_python_mb']:6.1f}")
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_json(args.out, {"command": command_line("benchmarks/faces.py", argv), "machine": machine, "runs": runs})
    print(f"\nwritten {args.out} (load average {machine['load_average_at_end']} on {machine['cpu_count']} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
