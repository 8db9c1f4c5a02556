"""``xmodal-diar diarize INPUT...``: RTTM (and optionally a PNG timeline) per input file.

One summary line per file: duration, speakers, turns, real-time factor (processing time
over duration) and, with ``--reference``, DER. Unreadable inputs are reported and
skipped; the exit status is 1 if any input failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diarize",
        help="diarize audio or video files (RTTM per input)",
        description="Broadcast speaker diarization with the BroadcastDiarization pipeline.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio or video files")
    parser.add_argument("--model", default=None, help="model directory (default: the embedded model)")
    parser.add_argument("--num-speakers", type=int, default=None, help="exact number of speakers")
    parser.add_argument("--min-speakers", type=int, default=None)
    parser.add_argument("--max-speakers", type=int, default=None)
    parser.add_argument("--video", action="store_true", help="use the face tracks of the video as extra evidence")
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--plot", action="store_true", help="also write <uri>.png (timeline)")
    parser.add_argument("--reference", default=None, help="reference RTTM: DER in the summary, and in --plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    if args.reference is not None and not Path(args.reference).is_file():
        raise FileNotFoundError(f"--reference: {args.reference} does not exist")


def plot_timeline(path: Path, hypothesis, reference=None) -> Path:
    """PNG timeline of ``hypothesis`` (under ``reference`` when given), via matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("hypothesis", hypothesis)] if reference is None else [("reference", reference), ("hypothesis", hypothesis)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.2 + 1.0 * len(rows)), sharex=True, squeeze=False)
    extent = max([a.get_timeline().extent().end for _, a in rows if len(a)] + [1.0])
    cmap = plt.get_cmap("tab10")
    for ax, (name, annotation) in zip(axes[:, 0], rows):
        labels = sorted(annotation.labels())
        for segment, _, label in annotation.itertracks(yield_label=True):
            k = labels.index(label)
            ax.broken_barh([(segment.start, segment.duration)], (k, 0.8), color=cmap(k % 10))
        ax.set_yticks([k + 0.4 for k in range(len(labels))], labels, fontsize=7)
        ax.set_ylabel(name)
        ax.set_xlim(0, extent)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    import torch
    from pyannote.audio.pipelines.utils.hook import ProgressHook

    from xmodal_diar.audio import AudioError, load_audio
    from xmodal_diar.pipelines import load_pipeline

    pipeline = load_pipeline(args.model)
    pipeline.to(torch.device(args.device))
    references = {}
    if args.reference is not None:
        from pyannote.database.util import load_rttm

        references = load_rttm(args.reference)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    failures = 0
    face_extractor = None
    for source in args.inputs:
        path = Path(source)
        uri = path.stem
        try:
            started = time.perf_counter()
            waveform = load_audio(path)
            file = {"waveform": waveform[None], "sample_rate": 16000, "uri": uri}
            if args.video:
                from xmodal_diar.faces import FaceExtractor, extract_face_tracks

                if face_extractor is None:  # load the face models once for all inputs
                    face_extractor = FaceExtractor(
                        "blazeface", "dlib5", "dlib", keep_aligned=False, embed_workers=int((os.cpu_count() or 1) > 1)
                    )
                file["face_evidence"] = extract_face_tracks(path, extractor=face_extractor)
            kwargs = dict(num_speakers=args.num_speakers, min_speakers=args.min_speakers, max_speakers=args.max_speakers)
            with ProgressHook(transient=True, hidden=args.quiet) as hook:
                diarization = pipeline(file, hook=hook, **kwargs).speaker_diarization
            elapsed = time.perf_counter() - started
        except (AudioError, FileNotFoundError, ValueError, RuntimeError) as exc:
            failures += 1
            print(f"{source}: FAILED: {exc}", file=sys.stderr)
            continue
        rttm = out_dir / f"{uri}.rttm"
        with open(rttm, "w") as fp:
            diarization.write_rttm(fp)
        duration = waveform.shape[-1] / 16000
        summary = (
            f"{source}: {duration:.1f} s, {len(diarization.labels())} speakers, "
            f"{len(diarization)} turns, RTF {elapsed / duration:.3f} -> {rttm}"
        )
        reference = references.get(uri)
        if args.reference is not None:
            if reference is None:
                summary += f" (no reference for uri {uri!r} in {args.reference})"
            else:
                from pyannote.core import Segment, Timeline
                from pyannote.metrics.diarization import DiarizationErrorRate

                whole = Timeline([Segment(0.0, duration)], uri=uri)  # the reference annotates the whole file
                summary += f", DER {100 * DiarizationErrorRate()(reference, diarization, uem=whole):.1f} %"
        if args.plot:
            plot_timeline(out_dir / f"{uri}.png", diarization, reference)
        print(summary)
    if failures:
        print(f"{failures} of {len(args.inputs)} inputs failed", file=sys.stderr)
    return 1 if failures else 0
