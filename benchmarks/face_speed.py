"""CPU seconds of the face tracks per second of video, on the montages of ``benchmarks/video.py``.

    python benchmarks/face_speed.py [--baseline DIR] [--montages DIR] [--out benchmarks/results/face_speed.json]

The extraction of ``diarize --video`` (BlazeFace, dlib 68 landmarks, dlib embedder,
:func:`xmodal_diar.faces.extract_face_tracks` with its defaults, 5 fps, one process, one
torch thread), timed in a fresh process per montage after a warm-up on one clip (model
loading is not throughput). ``--baseline DIR``: a checkout of another commit (its
``xmodal_diar`` package is imported from DIR, e.g. ``git worktree add /tmp/old main`` or
``git archive main xmodal_diar | tar -x -C /tmp/old``), timed the same way, alternating
with this tree so that both see the same load. Reports CPU seconds per video second
(``time.process_time`` of the process: every thread of it, decoding threads included),
``x real time`` on one core (its inverse), the shot cuts and tracks found, and the
machine's load average (a shared machine inflates CPU seconds too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from xmodal_diar.outputs import command_line, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "face_speed.json"
HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, os, sys, time, resource
import torch
torch.set_num_threads(1)
from xmodal_diar.faces import FaceExtractor, extract_face_tracks
extractor = FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=True, embed_workers=0)
extract_face_tracks(sys.argv[2], extractor=extractor)  # warm-up: first calls, lazy imports
load = os.getloadavg()
wall, cpu = time.perf_counter(), time.process_time()
faces = extract_face_tracks(sys.argv[1], extractor=extractor)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
import xmodal_diar
print(json.dumps({"package": xmodal_diar.__file__, "cpu": cpu, "wall": wall, "duration": faces.duration, "tracks": len(faces.tracks),
                  "detections": len(faces.detections),
                  "embedded": sum(d.embedding is not None for d in faces.detections),
                  "cut_frames": [round(c * 25) for c in faces.shot_cuts],
                  "load": [round(x, 2) for x in load]}))
"""


def _time(tree: Path, montage: Path, warm: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    # -P: no current directory on sys.path, so that the package comes from ``tree`` only
    out = subprocess.run([sys.executable, "-P", "-c", _CHILD, str(montage), str(warm)], env=env, check=True,
                         capture_output=True, text=True, cwd=str(tree)).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of another commit to compare with")
    parser.add_argument("--montages", type=Path, default=Path("/tmp/xmodal-video-montages"), help="where the mp4s go")
    parser.add_argument("--only", nargs="*", default=None, help="montage names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    import video  # benchmarks/video.py: the montages

    from xmodal_diar.shared_data import require_shared_data

    folder = require_shared_data("talking-heads")
    warm = folder / "00010.mp4"
    trees = {"this": HERE.parent}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    rows = []
    for name in args.only or video.MONTAGES:
        montage = video.build(name, folder, args.montages)
        row = {"montage": name, "true_cut_frames": montage.cut_frames}
        for label, tree in trees.items():
            r = _time(tree, montage.path, warm)
            row[label] = {
                "cpu_s_per_video_s": round(r["cpu"] / r["duration"], 4),
                "x_real_time_cpu": round(r["duration"] / r["cpu"], 2),
                "x_real_time_wall": round(r["duration"] / r["wall"], 2),
                "seconds": round(r["duration"], 2),
                "tracks": r["tracks"],
                "detections": r["detections"],
                "embedded": r["embedded"],
                "cut_frames": r["cut_frames"],
                "load_average": r["load"],
            }
            assert Path(r["package"]).is_relative_to(tree), (r["package"], tree)
        rows.append(row)
        print(name, json.dumps({k: v for k, v in row.items() if k in trees}), flush=True)
    total = {label: round(sum(r[label]["cpu_s_per_video_s"] * r[label]["seconds"] for r in rows)
                          / sum(r[label]["seconds"] for r in rows), 4) for label in trees}
    report = {
        "command": command_line("benchmarks/face_speed.py", argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread, one process",
        "target_cpu_s_per_video_s": 0.25,
        "montages": rows,
        "duration_weighted_cpu_s_per_video_s": total,
    }
    write_json(args.out, report)
    print(f"duration-weighted CPU s per video s: {total} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
