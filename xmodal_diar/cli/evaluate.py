"""``xmodal-diar evaluate verification|clustering|diarization|crossmodal``.

verification / clustering read a folder of audio (speaker = parent folder name) or a
SpeechBrain CSV manifest, embed one middle crop per utterance for each ``--durations``
value (and the natural length), and write ``<task>.json`` + a PNG to ``--out``.
diarization scores RTTM hypotheses against RTTM/UEM references or a pyannote.database
protocol. crossmodal reads two ``.npz`` (``embeddings``, ``labels``) of voice and face
embeddings in one space. Every report states the model, data, trial count and seed.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="verification, clustering, diarization and cross-modal metrics",
        description="Evaluate embeddings or diarization output (JSON report + plots). "
        "`evaluate --reference R --hypothesis H` is short for `evaluate diarization ...`.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    for name, helptext in (
        ("verification", "speaker verification EER / minDCF by turn duration"),
        ("clustering", "agglomerative turn clustering: purity / coverage by turn duration"),
    ):
        p = tasks.add_parser(name, help=helptext, description=helptext)
        p.add_argument("data", type=Path, help="folder of SPK/*.flac|wav or a SpeechBrain CSV manifest")
        p.add_argument(
            "--embedder", default="mfcc",
            help="mfcc | resemblyzer | SpeechBrain model dir | pyannote checkpoint | embeddings .npz/.npy",
        )
        p.add_argument("--durations", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0],
                       help="middle-crop durations in seconds (default: 0.5 1 2 4)")
        p.add_argument("--no-natural", action="store_true", help="leave out the natural-length bucket")
        p.add_argument("--out", type=Path, required=True, help="output folder for the JSON report and PNG")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over speakers")
        p.add_argument("--device", default="cpu")
        if name == "verification":
            p.add_argument("--trials-per-speaker", type=int, default=None,
                           help="sample this many target and non-target trials per speaker (default: all pairs)")
            p.add_argument("--cohort", type=Path, default=None,
                           help="AS-norm cohort: folder or manifest of OTHER speakers, embedded like the data")
            p.add_argument("--top-k", type=int, default=200, help="AS-norm top-k cohort scores")
            p.set_defaults(handler=_verification)
        else:
            p.add_argument("--linkage", choices=("average", "centroid"), default="average")
            p.set_defaults(handler=_clustering)

    p = tasks.add_parser("diarization", help="DER (with components), JER, purity, coverage",
                         description="DER with collar 0 + overlap scored and collar 0.25 + overlap skipped "
                         "(pyannote.metrics: collar is the total width, ±0.125 s), JER, purity, coverage.")
    p.add_argument("--reference", type=Path, help="reference RTTM file or folder")
    p.add_argument("--hypothesis", type=Path, required=True, help="hypothesis RTTM file or folder")
    p.add_argument("--uem", type=Path, help="UEM file or folder")
    p.add_argument("--protocol", help="pyannote.database protocol, e.g. Debug.SpeakerDiarization.Debug")
    p.add_argument("--database", type=Path, help="database.yml defining --protocol")
    p.add_argument("--subset", default="test", choices=("train", "development", "test"))
    p.add_argument("--collar", type=float, default=None, help="extra DER setting: this collar (total width, s)")
    p.add_argument("--skip-overlap", action="store_true", help="extra DER setting: overlap not scored")
    p.add_argument("--out", type=Path, default=None, help="write diarization.json there")
    p.set_defaults(handler=_diarization)

    p = tasks.add_parser("crossmodal", help="voice-face verification, 1:2 / 1:N matching, retrieval mAP")
    p.add_argument("--voice", type=Path, required=True, help=".npz with embeddings (N, D) and labels (N,)")
    p.add_argument("--face", type=Path, required=True, help=".npz with embeddings (M, D) and labels (M,)")
    p.add_argument("--seen", type=Path, default=None, help="text file: identities seen in training, one a line")
    p.add_argument("--trials", type=int, default=2000, help="matching trials per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_crossmodal)


# --------------------------------------------------------------------------- helpers


def _write_json(out: Path, name: str, report: dict) -> Path:
    """``out/name`` written atomically (:class:`~xmodal_diar.outputs.OutputError` names it on failure)."""
    from xmodal_diar.outputs import write_text

    return write_text(out / name, json.dumps(report, indent=2, default=float))


def _embed(args) -> tuple[dict, list, object]:
    from xmodal_diar.eval.embedders import embed_by_duration, list_utterances, load_embedder, load_waveforms

    if not args.data.exists():
        raise FileNotFoundError(f"{args.data}: no such folder or manifest")
    from xmodal_diar.devices import resolve_device

    embedder = load_embedder(args.embedder, device=str(resolve_device(args.device)))
    utterances = list_utterances(args.data)
    durations = [*args.durations] + ([] if args.no_natural else [None])
    if not durations:
        raise ValueError("--durations: nothing to evaluate (no duration and --no-natural)")
    waveforms = [] if hasattr(embedder, "lookup") else load_waveforms(utterances)
    buckets = embed_by_duration(waveforms, embedder, durations, ids=[u.id for u in utterances])
    return buckets, utterances, embedder


def _header(task: str, args, embedder, utterances, method: str) -> dict:
    """The report's provenance fields, also printed as the preamble of the table."""
    report = {
        "task": task,
        "model": embedder.name,
        "data": str(args.data.resolve()),
        "n_utterances": len(utterances),
        "n_speakers": len({u.speaker for u in utterances}),
        "seed": args.seed,
        "bootstrap": {"unit": "speaker", "n_resamples": args.bootstrap, "confidence": 0.95},
        "crop": "one crop from the middle of each utterance; shorter utterances skipped",
    }
    print(f"model: {embedder.name}\ndata: {report['data']} ({report['n_utterances']} utterances, "
          f"{report['n_speakers']} speakers)\n{method}; "
          f"95 % CI: {args.bootstrap} bootstrap resamples over speakers, seed {args.seed}")
    return report


def _ci(fig: dict, scale: float = 100.0) -> str:
    lo, hi = fig["ci"]
    return f"{scale * fig['value']:6.2f} [{scale * lo:5.2f}, {scale * hi:5.2f}]"


# --------------------------------------------------------------------------- handlers


def _verification(args) -> int:
    import numpy as np

    from xmodal_diar.eval.embedders import embed_by_duration, list_utterances, load_waveforms
    from xmodal_diar.eval.plots import plot_det
    from xmodal_diar.eval.verification import verification_report

    buckets, utterances, embedder = _embed(args)
    cohort = None
    if args.cohort is not None:
        cohort_utts = list_utterances(args.cohort)
        cohort = embed_by_duration(load_waveforms(cohort_utts), embedder, [b.duration for b in buckets.values()])
    labels = np.array([u.speaker for u in utterances])
    trials = "all pairs" if args.trials_per_speaker is None else (
        f"{args.trials_per_speaker} target + {args.trials_per_speaker} non-target per speaker (seed {args.seed})")
    report = _header("verification", args, embedder, utterances, f"trials: {trials}, cosine scoring")
    report["trials"] = trials
    report["results"] = {}
    curves = {}
    print(f"{'duration':>9} {'utts':>5} {'skip':>5} {'trials':>7} {'target':>6}  "
          f"{'EER % [95% CI]':>22}  {'minDCF0.01':>10} {'minDCF0.05':>10}")
    for name, b in buckets.items():
        keep_labels = labels[b.kept]
        if len(np.unique(keep_labels)) < 2:
            report["results"][name] = {"skipped": f"fewer than 2 speakers left ({b.n_skipped} utterances too short)",
                                       "n_skipped": b.n_skipped}
            print(f"{name:>9}   (skipped: fewer than 2 speakers have utterances this long)")
            continue
        figures, result = verification_report(
            b.embeddings, keep_labels, per_speaker=args.trials_per_speaker, seed=args.seed,
            cohort=None if cohort is None else cohort[name].embeddings, top_k=args.top_k,
            n_resamples=args.bootstrap,
        )
        figures["n_skipped"] = b.n_skipped
        report["results"][name] = figures
        curves[name] = result.curve
        print(f"{name:>9} {figures['n_utterances']:5d} {b.n_skipped:5d} {figures['n_trials']:7d} "
              f"{figures['n_target']:6d}  {_ci(figures['eer']):>22}  "
              f"{figures['min_dcf_0.01']['value']:10.3f} {figures['min_dcf_0.05']['value']:10.3f}")
    if curves:
        report["det_png"] = str(plot_det(curves, args.out / "det.png", title=f"DET: {embedder.name.split(' (')[0]}"))
    path = _write_json(args.out, "verification.json", report)
    print(f"report: {path}")
    return 0


def _clustering(args) -> int:
    import numpy as np

    from xmodal_diar.eval.clustering import clustering_report
    from xmodal_diar.eval.plots import plot_purity_coverage

    buckets, utterances, embedder = _embed(args)
    labels = np.array([u.speaker for u in utterances])
    linkage = f"{args.linkage} (scipy.cluster.hierarchy), cosine"
    report = _header("clustering", args, embedder, utterances, f"clustering: {linkage}, threshold swept")
    report["linkage"] = linkage
    report["results"] = {}
    curves = {}
    print(f"{'duration':>9} {'turns':>5} {'skip':>5} {'clusters':>8}  {'purity % [95% CI]':>22} "
          f"{'coverage % [95% CI]':>22}  {'oracle pur/cov %':>16}")
    for name, b in buckets.items():
        keep_labels = labels[b.kept]
        if len(b.kept) < 2:
            report["results"][name] = {"skipped": "fewer than 2 turns this long", "n_skipped": b.n_skipped}
            print(f"{name:>9}   (skipped: fewer than 2 turns this long)")
            continue
        figures, result = clustering_report(
            b.embeddings, keep_labels, durations=b.seconds, method=args.linkage,
            seed=args.seed, n_resamples=args.bootstrap,
        )
        figures["n_skipped"] = b.n_skipped
        report["results"][name] = figures
        curves[name] = result.curve
        print(f"{name:>9} {figures['n_turns']:5d} {b.n_skipped:5d} {figures['n_clusters']:8d}  "
              f"{_ci(figures['purity']):>22} {_ci(figures['coverage']):>22}  "
              f"{100 * figures['oracle_purity']['value']:7.2f}/{100 * figures['oracle_coverage']['value']:6.2f}")
    if curves:
        report["purity_coverage_png"] = str(plot_purity_coverage(curves, args.out / "purity_coverage.png"))
    path = _write_json(args.out, "clustering.json", report)
    print(f"report: {path}")
    return 0


def _diarization(args) -> int:
    from xmodal_diar.eval.diarization import (
        DER_SETTINGS,
        evaluate_diarization,
        format_report,
        load_rttms,
        load_uems,
        protocol_references,
    )

    if args.protocol:
        if args.reference is not None:
            raise ValueError("give either --reference or --protocol, not both")
        if args.database is None:
            raise ValueError("--protocol needs --database (the database.yml that defines it)")
        references, uems = protocol_references(args.database, args.protocol, args.subset)
        data = f"{args.protocol} ({args.subset}) from {args.database}"
    elif args.reference is not None:
        references = load_rttms(args.reference)
        uems = load_uems(args.uem) if args.uem else {}
        data = str(args.reference)
    else:
        raise ValueError("give --reference REF.rttm (or --protocol NAME --database database.yml)")
    if args.uem and args.protocol:
        uems = load_uems(args.uem)
    hypotheses = load_rttms(args.hypothesis)
    settings = dict(DER_SETTINGS)
    if args.collar is not None or args.skip_overlap:
        settings["user"] = (args.collar or 0.0, bool(args.skip_overlap))
    report = evaluate_diarization(references, hypotheses, uems, settings=settings)
    print(f"reference: {data}\nhypothesis: {args.hypothesis}\n"
          + "DER settings (pyannote collar = total width): "
          + ", ".join(f"{k}: collar {c:g} s, overlap {'skipped' if s else 'scored'}" for k, (c, s) in settings.items()))
    print(format_report(report))
    if args.out is not None:
        out = {"task": "diarization", "reference": data, "hypothesis": str(args.hypothesis),
               "settings": {k: {"collar": c, "skip_overlap": s} for k, (c, s) in settings.items()},
               **report.as_dict()}
        print(f"report: {_write_json(args.out, 'diarization.json', out)}")
    return 0


def _load_labelled_npz(path: Path):
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with np.load(path, allow_pickle=False) as data:
        missing = {"embeddings", "labels"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing array(s) {sorted(missing)}; expected 'embeddings' and 'labels'")
        return np.asarray(data["embeddings"], dtype=np.float64), np.asarray([str(x) for x in data["labels"]])


def _crossmodal(args) -> int:
    from xmodal_diar.eval.crossmodal import evaluate_crossmodal

    voice, voice_labels = _load_labelled_npz(args.voice)
    face, face_labels = _load_labelled_npz(args.face)
    seen = None
    if args.seen is not None:
        if not args.seen.is_file():
            raise FileNotFoundError(f"{args.seen}: no such identities file")
        seen = [line.strip() for line in args.seen.read_text().splitlines() if line.strip()]
    results = evaluate_crossmodal(voice, voice_labels, face, face_labels, seen_identities=seen,
                                  n_trials=args.trials, seed=args.seed, n_resamples=args.bootstrap)
    report = {"task": "crossmodal", "model": {"voice": str(args.voice), "face": str(args.face)},
              "data": {"voice": str(args.voice), "face": str(args.face), "seen": str(args.seen) if args.seen else None},
              "n_trials": args.trials, "seed": args.seed,
              "bootstrap": {"unit": "identity", "n_resamples": args.bootstrap, "confidence": 0.95},
              "results": results}
    print(f"voice: {args.voice}\nface: {args.face}\nmatching trials: {args.trials}, seed {args.seed}")
    for split, r in results.items():
        if "skipped" in r:
            print(f"[{split}] skipped: {r['skipped']}")
            continue
        print(f"[{split}] {r['n_identities']} identities, {r['n_voice']} voices, {r['n_face']} faces")
        print(f"  verification AUC % {_ci(r['verification_auc'])}   EER % {_ci(r['verification_eer'])}")
        for d in ("voice_to_face", "face_to_voice"):
            n = "  ".join(f"1:{k} {100 * v:.1f}" for k, v in r[f"{d}_1ofN"].items() if v is not None)
            print(f"  {d}: 1:2 % {_ci(r[f'{d}_1of2'])}   mAP % {_ci(r[f'{d}_map'])}\n    {n}")
    print(f"report: {_write_json(args.out, 'crossmodal.json', report)}")
    return 0

