"""How sparse face detection and embedding may be: identity measurements per setting.

    python benchmarks/face_sampling.py [--settings 3,1 10,5 15,10 ...] [--out benchmarks/results/face_sampling.json]

Each setting is ``embed_every,detect_every`` of :func:`xmodal_diar.faces.extract_face_tracks`
(5 fps, BlazeFace, dlib 5-point landmarks and dlib's embedder, as
``python -m xmodal_diar.faces.calibrate``). On the ten talking-head clips it measures:

- ``embedded_faces``: faces embedded in the clips' main tracks;
- ``track_mean_max_distance``: the largest cosine distance between a main track's mean
  embedding and the mean of ALL its faces embedded (``embed_every=1, detect_every=1``): what
  the face evidence loses by embedding fewer faces (the calibrated same-person threshold is 0.0745);
- ``identity_jump_fit`` / ``identity_jump_held_out``: ``(own, other)`` of
  :func:`xmodal_diar.faces.calibrate.identity_jump_distances` on th01-th05 / th06-th09: the
  largest distance of a face (two in a row) to the mean of its track so far, and the
  smallest distance of a face to another identity's track mean; the identity-jump threshold
  (0.69 x 0.0745 = 0.051) must stay between them;
- ``cpu_seconds`` of the three passes (one per clip and the two identity-jump measurements).

Writes the JSON (with the machine's load average: on a shared machine CPU seconds are
inflated by other jobs).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

from xmodal_diar.outputs import command_line, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "face_sampling.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["3,1", "3,5", "10,5", "15,5", "10,10", "15,10"],
                        help="embed_every,detect_every pairs (default: the former default 3,1 and sparser ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    import xmodal_diar.faces as faces
    from xmodal_diar.faces import FaceExtractor
    from xmodal_diar.faces import calibrate
    from xmodal_diar.shared_data import require_shared_data

    torch.set_num_threads(1)
    root = require_shared_data("talking-heads")
    identity = calibrate._identities(root)
    fit = sorted(c for c, w in identity.items() if w in calibrate.FIT_IDENTITIES)
    held_out = sorted(c for c, w in identity.items() if w not in calibrate.FIT_IDENTITIES)
    extractor = FaceExtractor("blazeface", "dlib5", "dlib", keep_aligned=False)
    extract = faces.extract_face_tracks

    def main_track(clip, embed_every, detect_every):
        return extract(root / f"{clip}.mp4", extractor=extractor, identity_threshold=10.0,
                       embed_every=embed_every, detect_every=detect_every).dominant_track()

    reference = {clip: main_track(clip, 1, 1).mean_embedding() for clip in identity}
    rows = []
    try:
        for setting in args.settings:
            embed_every, detect_every = (int(v) for v in setting.split(","))
            # identity_jump_distances calls faces.extract_face_tracks: give it this setting
            faces.extract_face_tracks = functools.partial(extract, embed_every=embed_every, detect_every=detect_every)
            cpu = time.process_time()
            drift, embedded = [], 0
            for clip in identity:
                track = main_track(clip, embed_every, detect_every)
                embedded += sum(d.embedding is not None for d in track.detections)
                drift.append(float(1.0 - track.mean_embedding() @ reference[clip]))
            jump_fit = calibrate.identity_jump_distances(root, extractor, fit)
            jump_held_out = calibrate.identity_jump_distances(root, extractor, held_out)
            row = {
                "embed_every": embed_every,
                "detect_every": detect_every,
                "embedded_faces": embedded,
                "track_mean_max_distance": round(max(drift), 4),
                "identity_jump_fit": [round(v, 3) for v in jump_fit],
                "identity_jump_held_out": [round(v, 3) for v in jump_held_out],
                "cpu_seconds": round(time.process_time() - cpu, 1),
                "load_average": [round(v, 2) for v in os.getloadavg()],
            }
            rows.append(row)
            print(row, flush=True)
    finally:
        faces.extract_face_tracks = extract
    report = {
        "command": command_line("benchmarks/face_sampling.py", argv),
        "reference": "embed_every=1, detect_every=1 (every sampled face detected and embedded), 5 fps",
        "cpu_count": os.cpu_count(),
        "settings": rows,
    }
    write_json(args.out, report)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
