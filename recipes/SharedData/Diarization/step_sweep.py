#!/usr/bin/env python3
"""DER and time of the tuned pipeline versus its segmentation step, on the TRAIN files.

    python step_sweep.py MODEL_DIR [--steps 1.0 0.5] [--conversations 0] [--out step_sweep.json]

The model dir's pipeline (tuned hyper-parameters) is rebuilt with each
``segmentation_step`` (a fraction of the 10 s chunk: 1.0 = chunks side by side, 0.5 = 5 s
hop, every second segmented and embedded twice) and scored on ami-debug train (plus
``--conversations`` LibriSpeech-train conversations, as tune.py builds them): total DER,
collar 0, overlap scored, and processing seconds (2-core CPU shared with other jobs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--steps", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--conversations", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from tune import build_pipeline, total_der, tuning_files
    from xmodal_diar.outputs import command_line, write_json
    from xmodal_diar.pipelines import read_pipeline_config

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    train, _ = tuning_files(args.conversations)
    _, params = read_pipeline_config(args.model_dir)
    rows = []
    for step in args.steps:
        pipeline, _ = build_pipeline(args.model_dir, [f"segmentation_step={step}"])
        started = time.perf_counter()
        der = total_der(pipeline, [dict(f) for f in train], params)
        rows.append({"segmentation_step": step, "der": der, "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    report = {"command": command_line("recipes/SharedData/Diarization/step_sweep.py", argv),
              "files": [f["uri"] for f in train], "machine": "2-core CPU shared with parallel work", "rows": rows}
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
