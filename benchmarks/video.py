"""Audio-only vs ``--video`` diarization on montages of real talking-head clips.

    python benchmarks/video.py [--out benchmarks/results/video.json] [--montages DIR] [--threads 1]

Montages (built with :mod:`xmodal_diar.faces.montage` from ``$XMODAL_DATA/talking-heads``,
the truth is known by construction):

- ``three_people``: th05, th09, th07 one after the other (hard cuts; the issue's example);
- ``four_people``: th02, th03, th04, th06, each cut into two shots, A B C D A B C D (hard
  cuts; every person comes back);
- ``same_person``: th01's two clips around th08 (one person in two different clips);
- ``two_faces``: th05 left and th09 right both on screen, they take turns to speak (the
  listener stays still; no cut, the pairing must see who speaks);
- ``rapid_turns``: th01, th02, th06, th08 take 20 turns of about 1 s (each clip cut in
  five), A B C D A B C D ... (hard cuts; short turns, where voices alone are weakest).

For each: the embedded default pipeline (``xmodal_diar.load_pipeline()``) with the
number of speakers left free, without and with the face tracks of the same video
(:func:`xmodal_diar.faces.extract_face_tracks`, BlazeFace + dlib 68 landmarks + dlib
embedder, as ``diarize --video``). DER with collar 0 over the whole file; the time of
each step (wall and CPU seconds), the extra real-time factor of the video and the face
tracks' speed (target: at least 4x real time). No threshold is tuned here: the face
calibration, shot and identity-jump thresholds come from ``python -m
xmodal_diar.faces.calibrate`` (ORL and celebrity photos; the talking-head clips only for
the two track thresholds, see the faces README). Writes a contact sheet and a timeline
per montage next to the JSON.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from xmodal_diar.outputs import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "video.json"

MONTAGES = {
    "three_people": [("00098",), ("741400104",), ("681100216",)],
    "four_people": [("00010", 0.5), ("00015", 0.5), ("00086", 0.5), ("00373", 0.5),
                    ("00010",), ("00015",), ("00086",), ("00373",)],
    "same_person": [("00002",), ("731200067",), ("517600055",)],
    "two_faces": "two_faces",
    "rapid_turns": [(clip, 0.2) for _ in range(5) for clip in ("00002", "00010", "00373", "731200067")],
}


def build(name: str, folder: Path, out: Path):
    from xmodal_diar.faces.montage import Shot, build_montage
    from xmodal_diar.faces.video import video_info

    if MONTAGES[name] == "two_faces":
        a, b = folder / "00098.mp4", folder / "741400104.mp4"
        half_a, half_b = video_info(a).duration / 2, video_info(b).duration / 2
        shots = [Shot((a, b), 0, half_a), Shot((a, b), 1, half_b), Shot((a, b), 0), Shot((a, b), 1)]
    else:
        shots = []
        for spec in MONTAGES[name]:
            clip = folder / f"{spec[0]}.mp4"
            duration = None if len(spec) == 1 else spec[1] * video_info(clip).duration
            shots.append(Shot((clip,), 0, duration))
    return build_montage(shots, out / f"{name}.mp4")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--montages", type=Path, default=Path("/tmp/xmodal-video-montages"), help="where the mp4s go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", nargs="*", default=None, help="montage names (default: all)")
    args = parser.parse_args(argv)

    import torch
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    from xmodal_diar.audio import load_audio
    from xmodal_diar.eval.plots import plot_timeline
    from xmodal_diar.faces import FaceExtractor, extract_face_tracks, save_contact_sheet
    from xmodal_diar.pipelines import load_pipeline
    from xmodal_diar.shared_data import require_shared_data

    torch.set_num_threads(args.threads)
    folder = require_shared_data("talking-heads")
    figures = args.out.parent / "video"
    figures.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline()
    extractor = FaceExtractor("blazeface", "dlib68", "dlib", keep_aligned=True, embed_workers=0)

    rows = []
    for name in args.only or MONTAGES:
        montage = build(name, folder, args.montages)
        with open(args.montages / f"{name}.rttm", "w") as rttm:  # for `xmodal-diar diarize ... --reference`
            montage.reference.write_rttm(rttm)
        waveform = load_audio(montage.path)
        duration = waveform.shape[-1] / 16000
        file = {"waveform": waveform[None], "sample_rate": 16000, "uri": name}
        uem = Timeline([Segment(0.0, duration)], uri=name)

        wall, cpu = time.perf_counter(), time.process_time()
        audio_only = pipeline(dict(file)).speaker_diarization
        audio_wall, audio_cpu = time.perf_counter() - wall, time.process_time() - cpu

        wall, cpu = time.perf_counter(), time.process_time()
        faces = extract_face_tracks(montage.path, extractor=extractor)
        faces_wall, faces_cpu = time.perf_counter() - wall, time.process_time() - cpu

        wall, cpu = time.perf_counter(), time.process_time()
        with_video = pipeline(dict(file), face_evidence=faces).speaker_diarization
        video_wall, video_cpu = time.perf_counter() - wall, time.process_time() - cpu

        der = {k: 100 * DiarizationErrorRate()(montage.reference, hyp, uem=uem) for k, hyp in
               (("audio_only", audio_only), ("video", with_video))}
        save_contact_sheet(faces.tracks, figures / f"{name}.faces.png", title=f"{name}: {len(faces.tracks)} face tracks")
        plot_timeline(figures / f"{name}.audio_only.png", audio_only, montage.reference)
        plot_timeline(figures / f"{name}.video.png", with_video, montage.reference)
        found_cuts = [round(c * 25) for c in faces.shot_cuts]
        row = {
            "montage": name,
            "seconds": round(duration, 2),
            "identities": len(montage.reference.labels()),
            "true_cut_frames": montage.cut_frames,
            "found_cut_frames": found_cuts,
            "face_tracks": len(faces.tracks),
            "speakers_audio_only": len(audio_only.labels()),
            "speakers_video": len(with_video.labels()),
            "der_audio_only": round(der["audio_only"], 2),
            "der_video": round(der["video"], 2),
            "rtf_audio_only": round(audio_wall / duration, 4),
            "rtf_faces": round(faces_wall / duration, 4),
            "rtf_video_total": round((faces_wall + video_wall) / duration, 4),
            "extra_rtf_video": round((faces_wall + video_wall - audio_wall) / duration, 4),
            "faces_x_real_time": round(duration / faces_wall, 2),
            "cpu_s_per_video_s_faces": round(faces_cpu / duration, 4),
            "cpu_s_per_video_s_audio": round(audio_cpu / duration, 4),
        }
        rows.append(row)
        print(
            f"{name:13s} {duration:5.1f} s {row['identities']} ids | audio-only {row['speakers_audio_only']} spk "
            f"DER {row['der_audio_only']:5.1f} % | --video {row['speakers_video']} spk DER {row['der_video']:5.1f} % "
            f"| cuts {montage.cut_frames} found {found_cuts} | faces {row['faces_x_real_time']:.2f}x real time "
            f"(CPU {row['cpu_s_per_video_s_faces']:.3f} s/s), extra RTF {row['extra_rtf_video']:.3f}",
            flush=True,
        )
    extractor.close()
    total = {k: round(sum(r[k] * r["seconds"] for r in rows) / sum(r["seconds"] for r in rows), 2)
             for k in ("der_audio_only", "der_video")}
    worst = max(r["der_video"] - r["der_audio_only"] for r in rows)
    print(f"total (duration-weighted) DER: audio-only {total['der_audio_only']:.2f} %, --video {total['der_video']:.2f} %; "
          f"worst per-file change {worst:+.2f} points")
    report = {
        "command": "python benchmarks/video.py",
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, torch threads {args.threads}",
        "montages": rows,
        "total": total,
        "worst_change_points": round(worst, 2),
    }
    write_json(args.out, report)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
