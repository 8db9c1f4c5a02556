"""``xmodal-diar diarize INPUT... | --manifest FILES.csv``: RTTM (and optionally a PNG
timeline) per input file, on this machine or on a Ray cluster (``--engine ray``).

One line per file: duration, speakers, turns, real-time factor and, with
``--reference``, DER; "no speech" is said, not left to an empty RTTM. A bad input or an
output that cannot be written is reported on one line naming the file and the batch goes
on. The output folder gets ``summary.jsonl`` (one JSON line per input, mapping it to its
uri), ``failures.csv`` and ``manifest/``, so that a rerun skips the files already done.
Exit status: 0, 1 if any file failed, 130 on Ctrl-C. See :mod:`xmodal_diar.batch`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diarize",
        help="diarize audio or video files (RTTM per input)",
        description="Broadcast speaker diarization with the BroadcastDiarization pipeline.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="audio or video files")
    parser.add_argument("--manifest", default=None, help="CSV listing the inputs (column path, or the first)")
    parser.add_argument("--model", default=None, help="model directory (default: the embedded model)")
    parser.add_argument("--num-speakers", type=int, default=None, help="exact number of speakers")
    parser.add_argument("--min-speakers", type=int, default=None)
    parser.add_argument("--max-speakers", type=int, default=None)
    parser.add_argument("--video", action="store_true", help="use the face tracks of the video as extra evidence")
    parser.add_argument(
        "--detector", default="blazeface", help="face detector for --video: blazeface (default), dlib-hog, dlib-cnn, sfd"
    )
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--plot", action="store_true", help="also write <uri>.png (timeline)")
    parser.add_argument("--reference", default=None, help="reference RTTM: DER in the summary, and in --plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("batch engine")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: one file after another here (default); ray: Ray actors")
    ray.add_argument("--address", default=None, help="Ray cluster (auto or HOST:PORT); default: a local Ray")
    ray.add_argument("--workers", type=int, default=None, help="Ray actors (default: the cluster's CPUs)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per actor (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=1.0,
                     help="GPU share per actor with --device cuda (default 1; 0.25: four actors per GPU)")
    ray.add_argument("--retries", type=int, default=2, help="retries of a file whose worker died (default 2)")
    parser.set_defaults(handler=run)


def _check_args(args) -> None:
    for name in ("num_speakers", "min_speakers", "max_speakers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.num_speakers is not None and (args.min_speakers or args.max_speakers):
        raise ValueError("--num-speakers cannot be combined with --min-speakers/--max-speakers")
    if args.min_speakers and args.max_speakers and args.min_speakers > args.max_speakers:
        raise ValueError(f"--min-speakers ({args.min_speakers}) > --max-speakers ({args.max_speakers})")
    if not args.inputs and args.manifest is None:
        raise ValueError("give INPUT files or --manifest FILES.csv")
    if args.engine == "local" and (args.address or args.workers):
        raise ValueError("--address and --workers need --engine ray")
    if args.cpus_per_worker <= 0 or args.gpus_per_worker <= 0:
        raise ValueError("--cpus-per-worker and --gpus-per-worker must be > 0")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the batch started (imports, loading)
        print("xmodal-diar diarize: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    from xmodal_diar.batch import BatchInterrupted, BatchOptions, read_input_list, read_reference, run_batch
    from xmodal_diar.devices import resolve_device
    from xmodal_diar.outputs import OutputError

    inputs = list(args.inputs) + (read_input_list(args.manifest) if args.manifest else [])
    if args.reference is not None:
        read_reference(args.reference)  # a bad reference stops the batch before it starts
    resolve_device(args.device)  # a one-line error for e.g. cuda without CUDA, before any loading
    options = BatchOptions(
        model=args.model, num_speakers=args.num_speakers, min_speakers=args.min_speakers,
        max_speakers=args.max_speakers, video=args.video, device=args.device, plot=args.plot,
        reference=args.reference, detector=args.detector, face_progress=not args.quiet and args.engine == "local",
        # locally, face embedding runs in a second process on multi-core machines; Ray workers embed in-process
        face_embed_workers=int(args.engine == "local" and (os.cpu_count() or 1) > 1),
    )
    engine_kwargs = {}
    if args.engine == "ray":
        engine_kwargs = dict(address=args.address, workers=args.workers, max_retries=args.retries,
                             cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)
    try:
        report = run_batch(inputs, options, args.out, engine=args.engine, quiet=args.quiet, **engine_kwargs)
    except BatchInterrupted as exc:
        print(f"xmodal-diar diarize: {exc}", file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"xmodal-diar diarize: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary() + f" -> {Path(args.out) / 'summary.jsonl'}")
    for error in report.output_errors:
        print(f"xmodal-diar diarize: error: {error}", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} of {len(report.records)} inputs failed (see {Path(args.out) / 'failures.csv'})",
              file=sys.stderr)
    return 1 if report.failed or report.output_errors else 0
