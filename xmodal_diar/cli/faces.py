"""``xmodal-diar faces VIDEO... --out DIR``: face tracks of each video to ``<stem>.faces.npz``.

One file per video (see :mod:`xmodal_diar.faces.io`), optionally a PNG contact sheet
(``<stem>.faces.png``), a progress bar over sampled frames and a one-line summary per
video. An unreadable video is reported (naming the file) and skipped; the exit status is
then 1 after the other videos are done.
"""

from __future__ import annotations

import argparse
import os
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
        "--embed-every", type=int, default=3, metavar="K",
        help="embed the faces of every K-th sampled frame only (default 3; 1: all)",
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


def run(args: argparse.Namespace) -> int:
    from xmodal_diar.faces import SHOT_THRESHOLD, FaceExtractor, extract_face_tracks, save_contact_sheet

    if args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    keep_aligned = args.contact_sheet or args.save_aligned
    extractor = FaceExtractor(
        args.detector, args.landmarks, _embedder(args.embedder), keep_aligned=keep_aligned, embed_workers=args.embed_workers
    )
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for video in args.videos:
        stem = Path(video).name.split(".")[0]
        started = time.perf_counter()
        try:
            result = extract_face_tracks(
                video,
                fps=None if args.every_frame else args.fps,
                extractor=extractor,
                min_detections=args.min_track,
                embed_every=args.embed_every,
                shot_threshold=SHOT_THRESHOLD if args.shot_threshold is None else args.shot_threshold,
                progress=not args.quiet,
            )
        except (ValueError, OSError) as exc:  # VideoError is a ValueError; the message names the file
            message = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
            print(f"xmodal-diar faces: skipped {message}", file=sys.stderr)
            failed.append(video)
            continue
        npz = result.save(args.out / f"{stem}.faces.npz", aligned=args.save_aligned)
        sheet = ""
        if args.contact_sheet:
            png = save_contact_sheet(result.tracks, args.out / f"{stem}.faces.png", title=Path(video).name)
            sheet = f" + {png.name}"
        seconds = time.perf_counter() - started
        print(
            f"{video}: {len(result.detections)} faces, {len(result.tracks)} tracks, {len(result.shot_cuts)} shot cuts, "
            f"{result.duration:.1f} s of video in {seconds:.1f} s -> {npz}{sheet}"
        )
    extractor.close()
    if failed:
        print(f"xmodal-diar faces: {len(failed)} of {len(args.videos)} videos failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
