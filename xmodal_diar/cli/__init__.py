"""The ``xmodal-diar`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``; heavy imports happen inside the handlers so that
``xmodal-diar --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Optional, Sequence

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = ("diarize", "evaluate", "faces", "export", "prepare")


def configure_process() -> None:
    """What the command (not the library) sets for its whole process, before pyannote is imported:
    no pyannote telemetry (``PYANNOTE_METRICS_ENABLED=false`` unless the user set it), and no
    torchcodec import warning (files are decoded by libsndfile or PyAV and handed to
    pyannote as ``{"waveform", "sample_rate"}``, so torchcodec is never used)."""
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    warnings.filterwarnings("ignore", message=r"(?s).*torchcodec.*")


def build_parser() -> argparse.ArgumentParser:
    from xmodal_diar import __version__

    parser = argparse.ArgumentParser(
        prog="xmodal-diar",
        description="Face-regularised speaker-turn embeddings and broadcast diarization "
        "(pyannote.audio and SpeechBrain plugin).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"xmodal_diar.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"xmodal_diar.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    configure_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `xmodal-diar evaluate --reference R --hypothesis H` is short for `evaluate diarization ...`.
    if len(argv) >= 2 and argv[0] == "evaluate" and argv[1].startswith("--") and argv[1] not in ("--help",):
        argv.insert(1, "diarization")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError) as exc:  # OSError: FileNotFoundError, outputs.OutputError (full disk, read-only)
        print(f"xmodal-diar {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
