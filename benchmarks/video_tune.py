"""Tuning of the face evidence (who speaks, pairing, clustering) on montages of other clips.

    python benchmarks/video_tune.py [--cache /tmp/xmodal-video-tune] [--threads 1] [--set tune|benchmark]

The benchmark (``benchmarks/video.py``) reports on its own montages; the weights and
thresholds of the face evidence are chosen HERE, on montages built from clips that the
benchmark montage of the same kind does not use (only 10 clips exist, so a clip may appear
in a tuning montage of another kind):

- ``tune_two_faces_a`` / ``_b``: th03 | th04 and th07 | th06 side by side, taking turns
  (the benchmark's ``two_faces`` is th05 | th09);
- ``tune_rapid_a`` / ``_b`` / ``_c``: 20 turns of about 1 s by th03, th04, th05, th07, by
  th09, th03, th07, th04 and by th05, th09, th04, th07 (the benchmark's ``rapid_turns`` is
  th01, th02, th06, th08);
- ``tune_four``: th05, th09, th07, th03 in two shots each (the benchmark's
  ``four_people`` is th02, th03, th04, th06).

Face tracks and the audio pipeline's turns and turn embeddings are computed once and
cached under ``--cache``; every candidate setting then reruns only the pairing, the face
evidence and the clustering. Prints DER (collar 0, whole file) audio-only and with the
face evidence for each setting of the grid below, and the setting chosen: among those
with the lowest total DER (duration-weighted), the middle of the tied range of each
parameter (in grid order: split_turns, weight, max_ratio, anchor_confidence). The mouth
floor (:data:`xmodal_diar.faces.pairing.MOUTH_FLOOR`) is the largest mouth motion of a
still face printed first. Last run: ``benchmarks/results/video_tune.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
from pathlib import Path

import numpy as np

from xmodal_diar.outputs import write_json

TUNING = {
    "tune_two_faces_a": ("two_faces", "00015", "00086"),
    "tune_two_faces_b": ("two_faces", "681100216", "00373"),
    "tune_rapid_a": [(clip, 0.2) for _ in range(5) for clip in ("00015", "00086", "00098", "681100216")],
    "tune_rapid_b": [(clip, 0.2) for _ in range(5) for clip in ("741400104", "00015", "681100216", "00086")],
    "tune_rapid_c": [(clip, 0.2) for _ in range(5) for clip in ("00098", "741400104", "00086", "681100216")],
    "tune_four": [("00098", 0.5), ("741400104", 0.5), ("681100216", 0.5), ("00015", 0.5),
                  ("00098",), ("741400104",), ("681100216",), ("00015",)],
}


def build(spec, name: str, folder: Path, out: Path):
    from xmodal_diar.faces.montage import Shot, build_montage
    from xmodal_diar.faces.video import video_info

    if isinstance(spec, tuple) and spec[0] == "two_faces":
        a, b = folder / f"{spec[1]}.mp4", folder / f"{spec[2]}.mp4"
        half_a, half_b = video_info(a).duration / 2, video_info(b).duration / 2
        shots = [Shot((a, b), 0, half_a), Shot((a, b), 1, half_b), Shot((a, b), 0), Shot((a, b), 1)]
    else:
        shots = []
        for s in spec:
            clip = folder / f"{s[0]}.mp4"
            duration = None if len(s) == 1 else s[1] * video_info(clip).duration
            shots.append(Shot((clip,), 0, duration))
    return build_montage(shots, out / f"{name}.mp4")


def prepare(specs: dict, cache: Path, pipeline, extractor=None) -> dict:
    """``{name: {reference, duration, faces, segment, waveform}}``, cached under ``cache``."""
    from xmodal_diar.audio import load_audio
    from xmodal_diar.faces import FaceExtractor, extract_face_tracks, load_face_tracks
    from xmodal_diar.shared_data import require_shared_data

    folder = require_shared_data("talking-heads")
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, spec in specs.items():
        stored = cache / f"{name}.pkl"
        faces_npz = cache / f"{name}.faces.npz"
        if stored.is_file() and faces_npz.is_file():
            item = pickle.loads(stored.read_bytes())
            item["faces"] = load_face_tracks(faces_npz)
            out[name] = item
            continue
        montage = build(spec, name, folder, cache)
        waveform = load_audio(montage.path)
        file = {"waveform": waveform[None], "sample_rate": 16000, "uri": name}
        segment = pipeline.segment(file, pipeline.load_waveform(file), lambda *a, **k: None)
        if extractor is None:
            extractor = FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=False, embed_workers=0)
        faces = extract_face_tracks(montage.path, extractor=extractor)
        faces.save(faces_npz)
        item = {"reference": montage.reference, "duration": waveform.shape[-1] / 16000, "segment": segment,
                "waveform": waveform}
        stored.write_bytes(pickle.dumps(item))
        item["faces"] = load_face_tracks(faces_npz)  # as the cache gives it back (no aligned crops)
        out[name] = item
        print(f"prepared {name}: {len(faces.tracks)} face tracks, {len(segment[2])} turns", flush=True)
    return out


def diarize(pipeline, item: dict, face_evidence=None):
    """The pipeline's diarization of a prepared montage (cached turns and embeddings)."""
    name = item["reference"].uri
    file = {"waveform": item["waveform"][None], "sample_rate": 16000, "uri": name}
    original = pipeline.segment
    pipeline.segment = lambda *args, **kwargs: item["segment"]
    try:
        return pipeline(file, face_evidence=face_evidence).speaker_diarization
    finally:
        pipeline.segment = original


def der(item: dict, hypothesis) -> float:
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    uem = Timeline([Segment(0.0, item["duration"])], uri=item["reference"].uri)
    return 100 * DiarizationErrorRate()(item["reference"], hypothesis, uem=uem)


def mouth_levels(items: dict, specs: dict) -> dict:
    """Mouth motion (:func:`~xmodal_diar.faces.pairing.mouth_motion`) of the speaking and of
    the still face over each true turn of the two-face montages (0.2 s in from each end)."""
    from xmodal_diar.faces.pairing import mouth_motion
    from xmodal_diar.faces.montage import clip_identities
    from xmodal_diar.shared_data import require_shared_data

    identity = clip_identities(require_shared_data("talking-heads"))
    levels = {"speaking": [], "still": []}
    for name, item in items.items():
        spec = specs[name]
        if not (isinstance(spec, tuple) and spec[0] == "two_faces"):
            continue
        panels = [identity[spec[1]], identity[spec[2]]]
        for segment, _, who in item["reference"].itertracks(yield_label=True):
            for track in item["faces"].tracks:
                x = np.mean([d.box[0] for d in track.detections])
                panel = panels[int(x >= 224)]  # 224-px-wide clips side by side
                inside = [d for d in track.detections if segment.start + 0.2 <= d.time <= segment.end - 0.2]
                m = mouth_motion(inside)
                if m is not None:
                    levels["speaking" if panel == who else "still"].append(m)
    return levels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/xmodal-video-tune"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", choices=("tune", "benchmark"), default="tune",
                        help="tune: the tuning montages (default); benchmark: benchmarks/video.py's (report only)")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every setting's DERs")
    parser.add_argument("--grid", type=json.loads, default=None,
                        help='JSON {"section.name": [values]} instead of the built-in GRID (e.g. the defaults only: "{}")')
    args = parser.parse_args(argv)

    import torch

    from xmodal_diar.pipelines import load_pipeline

    torch.set_num_threads(args.threads)
    pipeline = load_pipeline()
    if args.set == "tune":
        specs = TUNING
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("video_bench", Path(__file__).with_name("video.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        specs = {k: (("two_faces", "00098", "741400104") if v == "two_faces" else v) for k, v in bench.MONTAGES.items()}
    items = prepare(specs, args.cache, pipeline)
    levels = mouth_levels(items, specs)
    if levels["still"]:
        print(f"mouth motion over true turns of the two-face montages: still face max {max(levels['still']):.4f} "
              f"(all {np.round(sorted(levels['still']), 4).tolist()}), speaking face min {min(levels['speaking']):.4f} "
              f"(all {np.round(sorted(levels['speaking']), 4).tolist()})", flush=True)
    audio = {name: der(item, diarize(pipeline, item)) for name, item in items.items()}
    print("audio-only: " + "  ".join(f"{k} {v:.2f}" for k, v in audio.items()), flush=True)
    grid = GRID if args.grid is None else args.grid
    results = []
    keys = list(grid)
    base = pipeline.parameters(instantiated=True)
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values))
        params = json.loads(json.dumps(base))
        for key, value in setting.items():
            section, name = key.split(".")
            params[section][name] = value
        pipeline.instantiate(params)
        video = {name: der(item, diarize(pipeline, item, item["faces"])) for name, item in items.items()}
        seconds = {name: item["duration"] for name, item in items.items()}
        total_a = sum(audio[k] * seconds[k] for k in items) / sum(seconds.values())
        total_v = sum(video[k] * seconds[k] for k in items) / sum(seconds.values())
        worst = max(video[k] - audio[k] for k in items)
        results.append({"setting": setting, "video": video, "total_audio": total_a, "total_video": total_v, "worst": worst})
        print(f"{setting}: total {total_a:.2f} -> {total_v:.2f}, worst {worst:+.2f} | "
              + "  ".join(f"{k} {video[k]:.2f}" for k in items), flush=True)
    pipeline.instantiate(base)
    best = min(r["total_video"] for r in results)
    tied = [r["setting"] for r in results if r["total_video"] <= best + 0.01]
    # the middle of the tied range of each parameter, taken in GRID order among the tied settings
    chosen = {}
    for key in keys:
        values = sorted({t[key] for t in tied if all(t[k] == v for k, v in chosen.items())}, key=lambda v: grid[key].index(v))
        chosen[key] = values[(len(values) - 1) // 2]
    print(f"best total {best:.2f} with {len(tied)} settings; chosen (middle of each tied range): {chosen}", flush=True)
    if args.out:
        write_json(args.out, {"command": "python benchmarks/video_tune.py" + (" --set benchmark" if args.set == "benchmark" else ""),
                              "audio_only": audio, "results": results, "chosen": chosen})
    return 0


#: The grid searched (hyper-parameters of the pipeline, "section.name").
GRID = {
    "face.split_turns": [True, False],
    "face.weight": [1.0, 2.0],
    "face.max_ratio": [0.5, 0.75, 1.0],
    "face.anchor_confidence": [0.5, 0.6, 0.7, 0.9, 1.01],
}

if __name__ == "__main__":
    raise SystemExit(main())
