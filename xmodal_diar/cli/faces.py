"""``xmodal-diar faces VIDEO... --out DIR``: face tracks of each video to ``<stem>.faces.npz``.

One file per video (see :mod:`xmodal_diar.faces.io`), named by
:func:`xmodal_diar.outputs.output_stems` (the name less its LAST suffix: ``show.part1.mp4``
-> ``show.part1``; a path-derived stem when two inputs share a name) and written
atomically (an output that cannot be written is reported and leaves no partial file), optionally a PNG contact sheet
(``<stem>.faces.png``), a progress bar over sampled frames and a one-line summary per
video. An unreadable video is reported (naming the file) and skipped; the exit status is
then 1 after the other videos are done.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "faces",
        help="face tracks (boxes, landmarks, embeddings, quality) of videos",
        description="Detect, align, embed and track the faces of each VIDEO; write DIR/<stem>.faces.npz.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, mkv, avi, ...)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second (default: 5)")
    parser.add_argument("--every-frame", action="store_true", help="process every frame (ignores --fps)")
    parser.add_argument("--detector", default="blazeface", help="blazeface (default), dlib-hog, dlib-cnn, sfd")
    parser.add_argument("--landmarks", default="dlib5", help="dlib5 (default), dlib68, fan")
    parser.add_argument(
        "--embedder", default="dlib", help="dlib (default, 128-D) or a TorchScript (.pt) / ONNX (.onnx) face model"
    )
    parser.add_argument(
        "--embed-every", type=int, default=15, metavar="K",
        help="embed each face on its first sampled frame and every K-th after (default 15; 1: all)",
    )
    parser.add_argument(
        "--detect-every", type=int, default=10, metavar="K",
        help="run the face detector on every K-th sampled frame and at shot cuts, follow the faces "
        "in between (default 10; 1: detect on every sampled frame)",
    )
    parser.add_argument(
        "--embed-workers", type=int, choices=(0, 1), default=1 if (os.cpu_count() or 1) > 1 else 0,
        help="1: embed faces in a second process, overlapping with detection (default on multi-core machines)",
    )
    parser.add_argument("--min-track", type=int, default=3, metavar="N", help="drop tracks of fewer detections")
    parser.add_argument(
        "--shot-threshold", type=float, default=None,
        help="histogram distance between consecutive frames that makes a shot cut (default: the measured one)",
    )
    parser.add_argument("--contact-sheet", action="store_true", help="also write <stem>.faces.png")
    parser.add_argument("--save-aligned", action="store_true", help="store the aligned crops in the npz")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _embedder(value: str):
    """``dlib`` or a model file: ``.onnx`` through onnxruntime, anything else as TorchScript."""
    from xmodal_diar.faces import build_embedder

    if value == "dlib":
        return build_embedder("dlib")
    if not Path(value).is_file():
        raise FileNotFoundError(f"--embedder {value}: neither 'dlib' nor an existing model file")
    return build_embedder("onnx" if value.endswith(".onnx") else "torchscript", path=value)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks run (see :func:`run`)."""


def _terminate(signum, frame):
    raise _Terminated()


def run(args: argparse.Namespace) -> int:
    """Extract every video; SIGTERM or Ctrl-C end the run with one line (exit 143 / 130)
    after the embedding worker process is shut down (nothing partial is written: outputs
    are atomic). Without this, SIGTERM's default action killed only this process and left
    the worker and multiprocessing's resource tracker running."""
    from xmodal_diar.faces import SHOT_THRESHOLD, FaceExtractor

    if args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    for option in ("embed_every", "detect_every"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    keep_aligned = args.contact_sheet or args.save_aligned
    extractor = FaceExtractor(
        args.detector, args.landmarks, _embedder(args.embedder), keep_aligned=keep_aligned, embed_workers=args.embed_workers
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        failed = _extract_all(args, extractor)
    except (_Terminated, KeyboardInterrupt) as exc:
        interrupted = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(f"xmodal-diar faces: {interrupted}; outputs written so far are complete", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        extractor.close()
    if failed:
        print(f"xmodal-diar faces: {len(failed)} of {len(args.videos)} videos failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _extract_all(args: argparse.Namespace, extractor) -> list:
    """Face tracks of each video written to ``args.out``; returns the videos that failed."""
    from xmodal_diar.faces import SHOT_THRESHOLD, extract_face_tracks, save_contact_sheet
    from xmodal_diar.outputs import OutputError, output_stems

    stems = output_stems(args.videos)
    failed = []
    for video in args.videos:
        stem = stems[str(video)]
        started = time.perf_counter()
        try:
            result = extract_face_tracks(
                video,
                fps=None if args.every_frame else args.fps,
                extractor=extractor,
                min_detections=args.min_track,
                embed_every=args.embed_every,
                detect_every=args.detect_every,
                shot_threshold=SHOT_THRESHOLD if args.shot_threshold is None else args.shot_threshold,
                progress=not args.quiet,
            )
        except (ValueError, OSError) as exc:  # VideoError is a ValueError; the message names the file
            message = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
            print(f"xmodal-diar faces: skipped {message}", file=sys.stderr)
            failed.append(video)
            continue
        try:
            npz = result.save(args.out / f"{stem}.faces.npz", aligned=args.save_aligned)
            sheet = ""
            if args.contact_sheet:
                png = save_contact_sheet(result.tracks, args.out / f"{stem}.faces.png", title=Path(video).name)
                sheet = f" + {png.name}"
        except OutputError as exc:  # read-only folder, full disk: nothing partial is left
            print(f"xmodal-diar faces: {video}: {exc}", file=sys.stderr)
            failed.append(video)
            continue
        seconds = time.perf_counter() - started
        print(
            f"{video}: {len(result.detections)} faces, {len(result.tracks)} tracks, {len(result.shot_cuts)} shot cuts, "
            f"{result.duration:.1f} s of video in {seconds:.1f} s -> {npz}{sheet}"
        )
    return failed
