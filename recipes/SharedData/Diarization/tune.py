#!/usr/bin/env python3
"""Tune the diarization pipelines on TRAIN files only, by grid search.

    python tune.py MODEL_DIR [--conversations 8] [--write]        # BroadcastDiarization of MODEL_DIR
    python tune.py MODEL_DIR --pipeline KEY=VALUE ... --out OUT.json  # its pipeline with other constructor args
    python tune.py MODEL_DIR --write-from A.json B.json ...          # the lowest-train-loss report into MODEL_DIR
    python tune.py --stock OUT.json [--conversations 8]            # stock pyannote SpeakerDiarization

Tuning set: the TRAIN subset (``trn00``..``trn09``) of the ami-debug protocol
``Debug.SpeakerDiarization.Debug`` (``$XMODAL_DATA/ami-debug/database.yml``), plus
``--conversations`` synthetic conversations (2 to 4 speakers, turns of 1 to 6 s, 0.1 to
0.6 s pauses, 40 s, seed 0) cut from the LibriSpeech TRAIN speakers of
``librispeech/train-clean-100-1utt`` (the broadcast-like clean-turn case), plus
``--interviews`` interviews of 3 such TRAIN speakers each (a host, two guests, 0.6-1.5 s
interjections: the held-out interview case's generator on train speakers). Never tuned on,
and never on any file a benchmark reports: ami-debug dev00/dev01 (scored here before and
after, for information), pyannote's sample, the talking-head montage, the interview case.

Loss: total DER, collar 0, overlap scored (``GreedyDiarizationErrorRate``, the pipelines'
``get_metric``) over the tuning set. The pipelines run in training mode, so their
segmentation and embeddings are computed once per file and cached in the file dict
(pyannote's own caching for the stock pipeline); each grid point only re-clusters.

- ours: ``clustering.threshold`` x ``clustering.min_turn_duration`` x
  ``clustering.min_cluster_duration`` x ``segmentation.min_duration_off``; ``--write``
  stores the best in ``MODEL_DIR/config.yaml`` and the report in ``MODEL_DIR/tuning.json``;
  ``--grid quality`` / ``overlap`` add ``clustering.short_turns`` and ``clustering.refine``
  (:mod:`xmodal_diar.pipelines.turn_clustering`); ``--pipeline KEY=VALUE`` changes a
  constructor argument (``segmentation_step=0.5``, ``embedding=ecapa-voxceleb``), ``--out``
  keeps the report, and ``--write-from`` writes the report of lowest train loss among
  several (the selection between pipelines, e.g. segmentation steps, on train only);
- ``--stock``: :func:`benchmarks.stock_pyannote.real_stock_pipeline` (segmentation-3.0 +
  SpeechBrain ECAPA, agglomerative clustering): ``clustering.threshold`` x
  ``clustering.min_cluster_size``; the report (with the best values) goes to ``OUT.json``,
  which ``benchmarks/diarization.py`` reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from xmodal_diar.outputs import command_line, write_json  # noqa: E402

GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.30, 0.951, 0.05)],
    "clustering.min_turn_duration": [0.5, 1.0, 2.0],
    "clustering.min_cluster_duration": [1.0, 3.0, 6.0],
    "segmentation.min_duration_off": [0.0, 0.2],
}
SMALL_GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.50, 0.801, 0.05)],
    "clustering.min_turn_duration": [1.0, 2.0],
    "clustering.min_cluster_duration": [3.0],
    "segmentation.min_duration_off": [0.0, 0.2],
}
#: ``--grid quality``: the small grid's threshold x min_turn_duration x min_duration_off, plus
#: the short-turn rule and the k-means refinement of TurnClustering (issue #9).
QUALITY_GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.45, 0.851, 0.05)],
    "clustering.min_turn_duration": [0.5, 1.0],
    "clustering.min_cluster_duration": [3.0],
    "segmentation.min_duration_off": [0.0, 0.2],
    "clustering.short_turns": ["assign", "cluster"],
    "clustering.refine": [0, 2],
}
#: ``--grid overlap``: for overlapping chunks (``segmentation_step < 1``), lower thresholds and
#: min_cluster_duration {3, 6} s (the quality grid's best threshold there was its lowest, 0.45).
OVERLAP_GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.35, 0.701, 0.05)],
    "clustering.min_turn_duration": [0.5, 1.0],
    "clustering.min_cluster_duration": [3.0, 6.0],
    "segmentation.min_duration_off": [0.0, 0.2],
    "clustering.refine": [0, 2],
}
#: ``--grid overlap-low``: min_cluster_duration below 3 s at the 5 s hop (see the recipe README)
OVERLAP_LOW_GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.50, 0.701, 0.05)],
    "clustering.min_turn_duration": [0.5, 1.0],
    "clustering.min_cluster_duration": [1.5, 2.0],
    "segmentation.min_duration_off": [0.2],
    "clustering.refine": [0, 2],
}
GRIDS = {"full": GRID, "small": SMALL_GRID, "quality": QUALITY_GRID, "overlap": OVERLAP_GRID, "overlap-low": OVERLAP_LOW_GRID}
STOCK_GRID = {
    "clustering.threshold": [round(x, 2) for x in np.arange(0.30, 0.951, 0.05)],
    "clustering.min_cluster_size": [2, 6, 12],
}


def synthetic_conversations(n: int, seed: int = 0, duration: float = 40.0) -> list[dict]:
    """``n`` pyannote files (waveform, annotation, annotated) of LibriSpeech train speakers."""
    import torch
    from pyannote.core import Annotation, Segment, Timeline

    from xmodal_diar.audio import load_audio
    from xmodal_diar.shared_data import require_shared_data

    utterances = sorted(require_shared_data("librispeech", "train-clean-100-1utt").glob("*.flac"))
    rng = np.random.default_rng(seed)
    files = []
    for k in range(n):
        chosen = rng.choice(len(utterances), size=int(rng.integers(2, 5)), replace=False)
        audio = {int(s): load_audio(utterances[int(s)]) for s in chosen}
        pieces, annotation, t, previous = [], Annotation(uri=f"conversation{k:02d}"), 0.0, None
        while t < duration:
            choices = [s for s in audio if s != previous]
            spk = choices[int(rng.integers(len(choices)))]
            wav = audio[spk]
            length = min(float(rng.uniform(1.0, 6.0)), wav.shape[0] / 16000)
            start = float(rng.uniform(0, wav.shape[0] / 16000 - length))
            turn = wav[int(start * 16000) : int((start + length) * 16000)]
            pause = torch.zeros(int(rng.uniform(0.1, 0.6) * 16000))
            pieces += [turn, pause]
            annotation[Segment(t, t + turn.shape[0] / 16000)] = utterances[spk].name.split("-")[0]
            t += (turn.shape[0] + pause.shape[0]) / 16000
            previous = spk
        waveform = torch.cat(pieces)[None]
        files.append({"uri": annotation.uri, "waveform": waveform, "sample_rate": 16000, "annotation": annotation,
                      "annotated": Timeline([Segment(0, waveform.shape[1] / 16000)])})
    return files


def interview_conversations(n: int, seed: int = 0, rounds: int = 4) -> list[dict]:
    """``n`` interviews (:func:`benchmarks.diarization.interview_conversation`: a host, two
    guests, short interjections) of 3 LibriSpeech TRAIN speakers each, drawn from those whose
    one utterance lasts at least 12 s (crops of one utterance may repeat across rounds)."""
    from benchmarks.diarization import interview_conversation
    from xmodal_diar.audio import load_audio
    from xmodal_diar.shared_data import require_shared_data

    utterances = sorted(require_shared_data("librispeech", "train-clean-100-1utt").glob("*.flac"))
    audio = {u.name.split("-")[0]: load_audio(u) for u in utterances}
    speakers = [s for s, wav in audio.items() if wav.shape[0] >= 12 * 16000]
    rng = np.random.default_rng(seed)
    files = []
    for k in range(n):
        chosen = [speakers[int(i)] for i in rng.choice(len(speakers), size=3, replace=False)]
        file, annotation, annotated = interview_conversation(f"interview{k:02d}", {s: audio[s] for s in chosen}, rng, rounds)
        files.append({**file, "annotation": annotation, "annotated": annotated})
    return files


def tuning_files(conversations: int, interviews: int = 0) -> tuple[list, list]:
    """(train + synthetic conversations + interviews, development) files of the ami-debug protocol."""
    from pyannote.database import FileFinder, registry

    from xmodal_diar.shared_data import require_shared_data

    registry.load_database(str(require_shared_data("ami-debug", "database.yml")))
    protocol = registry.get_protocol("Debug.SpeakerDiarization.Debug", preprocessors={"audio": FileFinder()})
    train = [dict(f) for f in protocol.train()] + synthetic_conversations(conversations)
    train += interview_conversations(interviews)
    development = [dict(f) for f in protocol.development()]
    return train, development


def nested(flat: dict) -> dict:
    """``{"a.b": v}`` -> ``{"a": {"b": v}}``."""
    out: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def merge(base: dict, update: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in update.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


#: "total": DER over all the files' speech (long, overlapped AMI excerpts weigh most);
#: "mean": the mean of the files' DERs (each conversation weighs as much as each excerpt).
OBJECTIVE = {"value": "total"}


def total_der(pipeline, files: list, params: dict) -> float:
    """DER (collar 0, overlap scored) of ``pipeline`` instantiated with ``params``: total, or
    the mean of the files' DERs (:data:`OBJECTIVE`)."""
    pipeline.instantiate(params)
    metric = pipeline.get_metric()
    per_file = []
    for file in files:
        output = pipeline(file)
        hypothesis = getattr(output, "speaker_diarization", output)
        per_file.append(metric(file["annotation"], hypothesis, uem=file["annotated"]))
    return abs(metric) if OBJECTIVE["value"] == "total" else float(np.mean(per_file))


#: ``--flat TOL``: when the train loss is flat (several thresholds within TOL of the best),
#: the lowest loss among them is noise; take the MEDIAN threshold of that flat range (the
#: lower middle one), the furthest from both of its edges, and the best point at it.
FLAT = {"tolerance": 0.0}


def select(points: list, keys: list) -> dict:
    """The grid point kept: the lowest loss, or the best at the median threshold of the flat range (:data:`FLAT`)."""
    best = min(points, key=lambda p: p["der"])
    tolerance = FLAT["tolerance"]
    if tolerance <= 0 or "clustering.threshold" not in keys:
        return best
    flat = sorted({p["clustering.threshold"] for p in points if p["der"] <= best["der"] + tolerance})
    middle = flat[(len(flat) - 1) // 2]
    return min((p for p in points if p["clustering.threshold"] == middle), key=lambda p: p["der"])


def grid_search(pipeline, files: list, grid: dict, base: dict) -> tuple[dict, float, list, float]:
    """Kept ``params`` (``base`` updated by one grid point, :func:`select`), its loss, every point's loss, ``base``'s loss."""
    pipeline.training = True  # cache segmentation + embeddings in the file dicts
    started = time.perf_counter()
    base_loss = total_der(pipeline, files, base)  # also fills the caches
    print(f"segmentation + embeddings of {len(files)} files: {time.perf_counter() - started:.0f} s", flush=True)
    keys, points = list(grid), []
    for values in itertools.product(*(grid[k] for k in keys)):
        flat = dict(zip(keys, values))
        loss = total_der(pipeline, files, merge(base, nested(flat)))
        points.append({**flat, "der": loss})
    best = select(points, keys)
    print(f"grid of {len(points)} points in {time.perf_counter() - started:.0f} s; best {best}", flush=True)
    pipeline.training = False
    return merge(base, nested({k: best[k] for k in keys})), best["der"], points, base_loss


def build_pipeline(model_dir: Path, overrides: list) -> tuple:
    """``(pipeline, constructor arguments)``: MODEL_DIR's config.yaml with ``KEY=VALUE`` overrides.

    The arguments keep ``embedding`` as written in config.yaml (``$model/...``), for ``--write``.
    """
    import yaml

    from xmodal_diar.pipelines import BroadcastDiarization, read_pipeline_config, resolve_model_path

    constructor, params = read_pipeline_config(model_dir)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--pipeline {item}: expected KEY=VALUE")
        constructor[key] = yaml.safe_load(value)
    kwargs = dict(constructor)
    embedding = resolve_model_path(model_dir, kwargs.pop("embedding"))
    pipeline = BroadcastDiarization(embedding=embedding, **kwargs)
    pipeline.instantiate(params)
    return pipeline, constructor


def write_best(model_dir: Path, reports: list, argv: list) -> int:
    """``--write-from``: the report of lowest train loss (``after.train``) into ``model_dir``."""
    from xmodal_diar.pipelines import write_pipeline_config

    loaded = [json.loads(Path(r).read_text()) for r in reports]
    for path, report in zip(reports, loaded):
        if "pipeline" not in report:
            raise SystemExit(f"{path}: not a report of tune.py MODEL_DIR --out (no 'pipeline')")
        if (report["tuning_files"], report["metric"]) != (loaded[0]["tuning_files"], loaded[0]["metric"]):
            raise SystemExit(f"{path}: tuned on other files or with another objective than {reports[0]}")
        print(f"{path}: train {report['after']['train']:.4f}, development {report['after']['development']:.4f}, "
              f"pipeline {report['pipeline']}")
    best = min(range(len(loaded)), key=lambda k: loaded[k]["after"]["train"])
    report = dict(loaded[best])
    report["selected_by"] = {
        "command": command_line("recipes/SharedData/Diarization/tune.py", argv),
        "rule": "lowest train loss",
        "candidates": {_rel(p): {"train": r["after"]["train"], "development": r["after"]["development"],
                                 "pipeline": r["pipeline"]} for p, r in zip(reports, loaded)},
    }
    kwargs = {k: v for k, v in report["pipeline"].items() if k != "embedding"}
    write_pipeline_config(model_dir, report["params"], embedding=report["pipeline"]["embedding"], **kwargs)
    write_json(model_dir / "tuning.json", report, default=float)
    print(f"chose {reports[best]}; written {model_dir / 'config.yaml'} and tuning.json")
    return 0


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _values(values: list) -> str:
    return "{" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--stock", type=Path, metavar="OUT.json", help="tune the stock pyannote pipeline instead")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--interviews", type=int, default=0,
                        help="add this many interviews of LibriSpeech TRAIN speakers (host, two guests, short "
                        "interjections) to the tuning set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objective", choices=("total", "mean"), default="total", help="see OBJECTIVE")
    parser.add_argument("--grid", choices=tuple(GRIDS), default="full",
                        help="; ".join(f"{name}: " + " x ".join(f"{key.split('.')[-1]} {_values(v)}" for key, v in grid.items())
                                       for name, grid in GRIDS.items()))
    parser.add_argument("--pipeline", nargs="+", default=[], metavar="KEY=VALUE",
                        help="BroadcastDiarization constructor arguments replacing MODEL_DIR's (VALUE read as YAML), "
                        "e.g. segmentation_step=0.5 embedding=ecapa-voxceleb")
    parser.add_argument("--out", type=Path, default=None, metavar="OUT.json",
                        help="write the report (with the constructor arguments) there; --write also writes config.yaml")
    parser.add_argument("--flat", type=float, default=0.0, metavar="TOL",
                        help="train DER (fraction) within which thresholds count as tied: keep their median (see FLAT)")
    parser.add_argument("--write", action="store_true", help="write the tuned values into MODEL_DIR/config.yaml")
    parser.add_argument("--write-from", nargs="+", type=Path, default=None, metavar="REPORT.json",
                        help="no tuning: of these --out reports (same tuning files and objective), write the one "
                        "with the lowest train loss into MODEL_DIR (config.yaml + tuning.json)")
    args = parser.parse_args(argv)
    if (args.model_dir is None) == (args.stock is None):
        parser.error("give either MODEL_DIR or --stock OUT.json")
    if args.write_from:
        return write_best(args.model_dir, args.write_from, argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    OBJECTIVE["value"] = args.objective
    FLAT["tolerance"] = args.flat
    train, development = tuning_files(args.conversations, args.interviews)
    command = command_line("recipes/SharedData/Diarization/tune.py", argv)

    if args.stock:
        from benchmarks.stock_pyannote import REAL_STOCK_KWARGS, real_stock_pipeline

        pipeline, constructor = real_stock_pipeline(), REAL_STOCK_KWARGS
        grid = STOCK_GRID
    else:
        pipeline, constructor = build_pipeline(args.model_dir, args.pipeline)
        grid = GRIDS[args.grid]
    initial = pipeline.parameters(instantiated=True)
    before_dev = total_der(pipeline, development, initial)
    tuned, train_loss, points, before_train = grid_search(pipeline, train, grid, initial)
    after_dev = total_der(pipeline, development, tuned)
    report = {
        "command": command,
        "machine": "2-core CPU, shared with parallel work",
        "tuning_files": [f["uri"] for f in train],
        "grid": grid,
        "params": tuned,
        "before": {"train": before_train, "development": before_dev},
        "after": {"train": train_loss, "development": after_dev},
        "metric": f"DER, collar 0, overlap scored ({args.objective} over the files)",
        "point_selected_by": "lowest train loss" if args.flat <= 0 else f"median threshold of those within {args.flat} of the lowest train loss",
        "points": points,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=2, default=float), flush=True)
    report["pipeline"] = constructor
    for out in dict.fromkeys(p for p in (args.out, args.stock) if p is not None):
        write_json(out, report, default=float)
        print(f"written {out}")
    if args.write and not args.stock:
        from xmodal_diar.pipelines import write_pipeline_config

        kwargs = {k: v for k, v in constructor.items() if k != "embedding"}
        write_pipeline_config(args.model_dir, tuned, embedding=constructor["embedding"], **kwargs)
        write_json(args.model_dir / "tuning.json", report, default=float)
        print(f"written {args.model_dir / 'config.yaml'} and tuning.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
