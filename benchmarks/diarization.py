"""Diarization benchmark: DER against the stock pipeline, real-time factor and peak memory.

    python benchmarks/diarization.py [--model DIR] [--systems default classical stock] [--minutes 5 60 180]
                                     [--skip-der | --skip-speed] [--no-stock] [--quick]

1. DER through pyannote.metrics (:mod:`xmodal_diar.eval.diarization`): collar 0 with
   overlap scored, and collar 0.25 with overlap skipped, on pyannote.audio's bundled sample
   (30 s, 2 speakers), ami-debug development (dev00 + dev01, 2 x 30 s of AMI meetings), a
   montage of the 10 shared talking-head clips (9 identities, built here:
   :func:`talking_head_montage`), an interview-like case (3 held-out LibriSpeech
   speakers, short interjections: :func:`interview_case`) and the audio of the video
   benchmark's rapid-turns montage (4 talking-head identities, 20 turns of about 1 s:
   :func:`rapid_turns_case`), and ``interview-seeds``: five more interview cases (seeds 1-5).
   None of them is used for tuning (recipes/SharedData/Diarization/tune.py tunes on
   ami-debug train + LibriSpeech-train conversations and interviews of train speakers). Systems (:func:`der_systems`): ``default`` (the model dir: segmentation-3.0
   local turns), ``classical`` (VAD + change detection, same encoder), ``--compare
   NAME=DIR`` encoders in the default pipeline, and ``stock``: pyannote's
   ``SpeakerDiarization`` with the same segmentation-3.0 and SpeechBrain ECAPA
   (``benchmarks/stock_pyannote.py``, tuned on the same train files).
   ``ours-ecapa``: our default pipeline with the stock pipeline's weights
   (``embedding="ecapa-voxceleb"``), tuned on the same train files
   (:data:`SAME_WEIGHTS_TUNING`), the same-weights comparison with ``stock``.
   ``--systems`` runs some of them; their rows replace those of an existing ``--out``.

2. Real-time factor ``RTF = processing seconds / audio seconds`` and peak memory (the
   ``VmHWM`` of a fresh child process per measurement) of the default on 5-, 60- and
   180-minute inputs made by concatenating real shared audio (each AMI-debug excerpt
   followed by 3 LibriSpeech utterances, then the remaining LibriSpeech utterances, cycling;
   written to a temporary wav), and of the stock pipeline on the 5-minute one. Both get the
   decoded waveform (decoding is not timed); model loading is timed apart. ``speed-up =
   stock RTF / our RTF`` on the same input in the same run (target >= 10x), also from CPU
   seconds. Our pipeline runs ``--repeats`` times in its process: the first run (cold)
   gives ``rtf``, the median of the others ``rtf_warm``; the stock pipeline runs once.
   ``--quick`` keeps only the 5-minute input and skips the stock pipeline.

torch runs with ``torch.set_num_threads(2)`` (``--threads``) in every process: the
reference machine has 2 cores, which other jobs may load (the load average is recorded).
Prints tables and writes ``benchmarks/results/diarization.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

from xmodal_diar.outputs import command_line, write_json

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
warnings.filterwarnings("ignore", message=r"(?s).*torchcodec is not installed correctly")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "diarization.json"
PROTOCOL = "Debug.SpeakerDiarization.Debug"
SUBSET = "development"
LIBRI_PER_AMI = 3
DEFAULT_THREADS = 2


# --------------------------------------------------------------------------- helpers
def _quiet() -> None:
    """Silence the torchcodec import warning and pyannote's telemetry in this process."""
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    warnings.filterwarnings("ignore", message=r"(?s).*torchcodec is not installed correctly")


def _rel(path) -> str:
    """``path`` relative to the repository root when inside it (no absolute paths in results)."""
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def _log(message: str) -> None:
    print(message, flush=True)


def machine(threads: int) -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def sample_paths() -> tuple[Path, Path]:
    """pyannote.audio's bundled sample (read by path: its ``SAMPLE_FILE`` needs torchcodec)."""
    import pyannote.audio

    folder = Path(pyannote.audio.__file__).resolve().parent / "sample"
    return folder / "sample.wav", folder / "sample.rttm"


def read_config(model_dir: Path) -> tuple[dict, dict]:
    """``(constructor arguments except the embedding, hyper-parameters)`` of a model dir's config.yaml."""
    from xmodal_diar.pipelines import read_pipeline_config

    kwargs, params = read_pipeline_config(model_dir)
    kwargs.pop("embedding", None)
    return kwargs, params


def resolve_model_dir(model: Optional[str], scratch: Path) -> tuple[Path, str]:
    """The model dir to benchmark and a note on where it comes from.

    Without ``--model``, the embedded default; when the package does not hold one yet, a
    model dir exported from ``build_encoder("ge2e")`` (Resemblyzer GE2E with an identity
    head, i.e. untrained) with the pipeline's default hyper-parameters.
    """
    from xmodal_diar.pipelines import DEFAULT_MODEL_DIR

    if model is not None:
        path = Path(model).expanduser().resolve()
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"--model {path}: not a model dir (no config.yaml)")
        return path, f"--model {path}"
    if (DEFAULT_MODEL_DIR / "config.yaml").is_file():
        return DEFAULT_MODEL_DIR, f"embedded default {DEFAULT_MODEL_DIR}"
    from xmodal_diar.adapters.speechbrain import export_model_dir
    from xmodal_diar.models import build_encoder

    path = export_model_dir(build_encoder("ge2e"), scratch / "ge2e-model-dir")
    note = (
        f"the embedded default {DEFAULT_MODEL_DIR} does not exist: a temporary model dir exported "
        "from build_encoder('ge2e') (untrained identity head) with default pipeline hyper-parameters"
    )
    return path, note


# --------------------------------------------------------------------------- DER
def _file(uri: str, pieces: list, labels: list, pause: float = 0.3) -> tuple[dict, "Annotation", "Timeline"]:
    """A waveform file of ``pieces`` separated by ``pause`` s of silence, and its reference."""
    import torch
    from pyannote.core import Annotation, Segment, Timeline

    gap = torch.zeros(int(pause * 16000))
    reference, waves, t = Annotation(uri=uri), [], 0.0
    for wav, label in zip(pieces, labels):
        if label is not None:
            reference[Segment(t, t + len(wav) / 16000)] = label
        waves += [wav, gap]
        t += (len(wav) + len(gap)) / 16000
    waveform = torch.cat(waves)[None]
    return ({"uri": uri, "waveform": waveform, "sample_rate": 16000}, reference,
            Timeline([Segment(0.0, waveform.shape[1] / 16000)], uri=uri))


def talking_head_montage(root: Optional[Path] = None) -> tuple[dict, "Annotation", "Timeline"]:
    """The audio of the shared talking-head clips, one after another (0.3 s pauses), in
    file-name order; reference labels are ``identities.csv``'s (9 identities, 10 clips)."""
    import csv

    from xmodal_diar.audio import load_audio
    from xmodal_diar.shared_data import require_shared_data

    folder = Path(root) if root else require_shared_data("talking-heads")
    with open(folder / "identities.csv") as fp:
        identity = {row["clip"]: row["identity"] for row in csv.DictReader(fp)}
    clips = sorted(folder.glob("*.mp4"))
    return _file("talking-heads", [load_audio(c) for c in clips], [identity[c.stem] for c in clips])


#: benchmarks/video.py's ``rapid_turns``: th01, th02, th06, th08 (clips in that order) in turns of a fifth of a clip
RAPID_TURNS_CLIPS = ("00002", "00010", "00373", "731200067")


def rapid_turns_case(root: Optional[Path] = None, pieces: int = 5) -> tuple[dict, "Annotation", "Timeline"]:
    """The audio of benchmarks/video.py's ``rapid_turns`` montage: 4 talking-head identities
    take 20 turns of about 1 s (each clip cut into 5 consecutive fifths, A B C D A B C D ...,
    hard cuts, no pause); reference labels are ``identities.csv``'s."""
    import csv

    from xmodal_diar.audio import load_audio
    from xmodal_diar.shared_data import require_shared_data

    folder = Path(root) if root else require_shared_data("talking-heads")
    with open(folder / "identities.csv") as fp:
        identity = {row["clip"]: row["identity"] for row in csv.DictReader(fp)}
    audio = {clip: load_audio(folder / f"{clip}.mp4") for clip in RAPID_TURNS_CLIPS}
    waves, labels = [], []
    for k in range(pieces):
        for clip in RAPID_TURNS_CLIPS:
            n = len(audio[clip]) // pieces
            waves.append(audio[clip][k * n : (k + 1) * n])
            labels.append(identity[clip])
    return _file("rapid-turns", waves, labels, pause=0.0)


def interview_case(seed: int = 0, rounds: int = 6) -> tuple[dict, "Annotation", "Timeline"]:
    """An interview-like conversation of 3 held-out LibriSpeech speakers (test-other-10x10):
    :func:`interview_conversation` of their concatenated utterances. ``seed`` 0 is the case
    of the tests (uri ``interview``); others (uri ``interview-s<seed>``) draw other speakers
    and crops (the ``interview-seeds`` set)."""
    import numpy as np
    import torch

    from xmodal_diar.audio import load_audio
    from xmodal_diar.shared_data import require_shared_data

    folders = sorted(p for p in require_shared_data("librispeech", "test-other-10x10").iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    chosen = [folders[int(i)] for i in rng.choice(len(folders), size=3, replace=False)]
    audio = {f.name: torch.cat([load_audio(u) for u in sorted(f.glob("*.flac"))]) for f in chosen}
    return interview_conversation("interview" if seed == 0 else f"interview-s{seed}", audio, rng, rounds)


def interview_conversation(uri: str, audio: dict, rng, rounds: int) -> tuple[dict, "Annotation", "Timeline"]:
    """An interview of the 3 speakers of ``audio`` (``{label: 16 kHz waveform}``, the first is the host).

    Each round: the host asks (3 to 5 s), one guest answers (6 to 12 s, guests alternate),
    and the other guest interjects once inside the answer (0.6 to 1.5 s), so the answer
    is cut in two. Crops of the speakers' real utterances, 0.3 s pauses, ``rng`` (numpy Generator).
    """
    host, *guests = list(audio)

    def crop(speaker: str, low: float, high: float):
        wav = audio[speaker]
        n = min(int(rng.uniform(low, high) * 16000), len(wav) - 1)
        start = int(rng.integers(0, len(wav) - n))
        return wav[start : start + n]

    pieces, labels = [], []
    for r in range(rounds):
        guest, other = guests[r % 2], guests[1 - r % 2]
        answer = crop(guest, 6.0, 12.0)
        cut = int(len(answer) * rng.uniform(0.3, 0.7))
        for speaker, wav in ((host, crop(host, 3.0, 5.0)), (guest, answer[:cut]), (other, crop(other, 0.6, 1.5)), (guest, answer[cut:])):
            pieces.append(wav)
            labels.append(speaker)
    return _file(uri, pieces, labels)


def der_datasets() -> dict:
    """``{name: (files, references, uems)}``: pyannote's sample, ami-debug development,
    the talking-head montage, the interview case, the rapid turns and five more interview
    cases (none of them used for tuning)."""
    from pyannote.core import Segment, Timeline
    from pyannote.database import FileFinder, registry

    from xmodal_diar.audio import audio_info
    from xmodal_diar.eval.diarization import load_rttms, protocol_references
    from xmodal_diar.shared_data import shared_data_root

    datasets = {}
    wav, rttm = sample_paths()
    duration = audio_info(wav).duration
    datasets["pyannote-sample"] = (
        [{"uri": "sample", "audio": str(wav)}],
        {"sample": load_rttms(rttm)["sample"]},
        {"sample": Timeline([Segment(0.0, duration)], uri="sample")},
    )
    database = shared_data_root() / "ami-debug" / "database.yml"
    if database.is_file():
        references, uems = protocol_references(database, PROTOCOL, SUBSET)
        protocol = registry.get_protocol(PROTOCOL, preprocessors={"audio": FileFinder()})
        files = [{"uri": f["uri"], "audio": str(f["audio"])} for f in getattr(protocol, SUBSET)()]
        datasets[f"ami-debug/{SUBSET}"] = (files, references, uems)
    else:
        _log(f"[der] {database} is absent: ami-debug skipped")
    for name, build in (("talking-heads", talking_head_montage), ("interview", interview_case), ("rapid-turns", rapid_turns_case)):
        try:
            file, reference, uem = build()
        except FileNotFoundError as exc:
            _log(f"[der] {name} skipped: {exc}")
            continue
        datasets[name] = ([file], {file["uri"]: reference}, {file["uri"]: uem})
    if "interview" in datasets:
        cases = [interview_case(seed) for seed in INTERVIEW_SEEDS]
        datasets["interview-seeds"] = ([c[0] for c in cases], {c[0]["uri"]: c[1] for c in cases},
                                       {c[0]["uri"]: c[2] for c in cases})
    return datasets


#: ``interview-seeds``: five more interview cases (other held-out speakers and crops), so the
#: speaker count of one case is not the whole story.
INTERVIEW_SEEDS = (1, 2, 3, 4, 5)


def der_systems(model_dir: Path, compare: dict, stock: bool = True) -> dict:
    """``{name: (factory, description)}``; factories build the pipelines lazily.

    - ``default``: ``model_dir`` (the embedded default: segmentation-3.0 local turns);
    - ``classical``: the classical path (silero VAD + embedding change detection) with the
      same encoder and clustering hyper-parameters, VAD / change detection as last tuned
      for it (:data:`CLASSICAL_PARAMS`);
    - ``NAME`` of ``--compare NAME=DIR``: that encoder in the default pipeline;
    - ``stock``: pyannote's ``SpeakerDiarization`` with segmentation-3.0 + SpeechBrain ECAPA,
      tuned on train (``benchmarks/stock_pyannote.py``).
    """
    from xmodal_diar.pipelines import BroadcastDiarization, load_pipeline, read_pipeline_config, resolve_model_path

    kwargs, params = read_pipeline_config(model_dir)
    embedding = resolve_model_path(model_dir, kwargs.pop("embedding"))

    def classical():
        pipeline = BroadcastDiarization(embedding=embedding, turns="classical", clustering=kwargs.get("clustering", "agglomerative"))
        return pipeline.instantiate({**CLASSICAL_PARAMS, "clustering": params["clustering"]})

    systems = {"default": (lambda: load_pipeline(model_dir), f"BroadcastDiarization, {_rel(model_dir)}")}
    for name, other in compare.items():
        checkpoint = str(other / "pytorch_model.bin")
        systems[name] = (
            lambda c=checkpoint: BroadcastDiarization(embedding=c, **kwargs).instantiate(params),
            f"encoder {_rel(checkpoint)} + the pipeline of {_rel(model_dir)}",
        )
    systems["classical"] = (classical, f"BroadcastDiarization(turns='classical'), encoder of {_rel(model_dir)}")
    if SAME_WEIGHTS_TUNING.is_file():
        systems["ours-ecapa"] = (same_weights_pipeline, f"BroadcastDiarization with the stock pipeline's weights "
                                 f"(embedding='ecapa-voxceleb'), tuned on train: {_rel(SAME_WEIGHTS_TUNING)}")
    if stock:
        sys.path.insert(0, str(HERE))
        from stock_pyannote import REAL_STOCK_KWARGS, real_stock_pipeline

        systems["stock"] = (real_stock_pipeline, f"pyannote SpeakerDiarization, segmentation-3.0 + ECAPA, {REAL_STOCK_KWARGS}")
    return systems


#: Our pipeline with the stock pipeline's weights (segmentation-3.0 + SpeechBrain ECAPA), tuned on
#: the same train files as the default: ``python recipes/SharedData/Diarization/tune.py
#: xmodal_diar/pretrained/default --pipeline embedding=ecapa-voxceleb ... --out`` this file.
SAME_WEIGHTS_TUNING = HERE / "results" / "ours_ecapa_tuning.json"


def same_weights_pipeline():
    """``ours-ecapa``: BroadcastDiarization(embedding="ecapa-voxceleb", ...) as :data:`SAME_WEIGHTS_TUNING` says."""
    from xmodal_diar.pipelines import BroadcastDiarization

    report = json.loads(SAME_WEIGHTS_TUNING.read_text())
    kwargs = dict(report["pipeline"])
    embedding = kwargs.pop("embedding")
    return BroadcastDiarization(embedding=embedding, **kwargs).instantiate(report["params"])


#: The classical path's VAD and change-detection hyper-parameters (tuned on the same train
#: files for the previous default, recipes/SharedData/Diarization, before segmentation-3.0).
CLASSICAL_PARAMS = {
    "vad": {"onset": 0.1967818614092247, "offset": 0.758640160035031, "min_duration_on": 0.25, "min_duration_off": 0.3},
    "change_detection": {"threshold": 0.23574864917851948, "min_duration": 1.0},
    "min_turn_duration": 0.5,
    "resegmentation_margin": 0.0,
}


def run_der(
    model_dir: Path, compare: dict, stock: bool = True, only: Optional[list] = None, save: Optional[Callable] = None,
    datasets_only: Optional[list] = None,
) -> dict:
    """DER rows ``{dataset: {system: row}}``; ``save(rows)`` after each (system, dataset)."""
    from xmodal_diar.eval.diarization import evaluate_diarization

    datasets = der_datasets()
    if datasets_only:
        datasets = {k: v for k, v in datasets.items() if k in datasets_only}
    results: dict = {}
    for system, (factory, description) in der_systems(model_dir, compare, stock).items():
        if only and system not in only:
            continue
        pipeline = factory()
        for dataset, (files, references, uems) in datasets.items():
            _log(f"[der] {system} on {dataset} ({len(files)} file(s)) ...")
            start = time.perf_counter()
            outputs = {f["uri"]: pipeline(dict(f)) for f in files}
            hypotheses = {uri: getattr(o, "speaker_diarization", o) for uri, o in outputs.items()}
            seconds = time.perf_counter() - start
            report = evaluate_diarization(references, hypotheses, uems)
            total = report.total
            row = {
                "system": description,
                "der_full": total["der_full"]["value"],
                "der_forgiving": total["der_forgiving"]["value"],
                "jer": total["jer"]["value"],
                "false_alarm": total["der_full"]["false alarm"] / total["der_full"]["total"],
                "missed": total["der_full"]["missed detection"] / total["der_full"]["total"],
                "confusion": total["der_full"]["confusion"] / total["der_full"]["total"],
                "speakers": {uri: [len(references[uri].labels()), len(hypotheses[uri].labels())] for uri in references},
                "overlapped_output_seconds": {
                    uri: round(h.get_overlap().duration(), 2) for uri, h in hypotheses.items()
                },
                "seconds": round(seconds, 2),
                "per_file": {uri: {k: v["value"] for k, v in row.items()} for uri, row in report.per_file.items()},
            }
            results.setdefault(dataset, {})[system] = row
            if save is not None:
                save({dataset: {system: row}})
            _log(f"[der]   DER {100 * row['der_full']:.2f} % (collar 0), {100 * row['der_forgiving']:.2f} % (collar 0.25, no overlap), speakers {row['speakers']}")
    return results


def format_der(results: dict) -> str:
    lines = [
        f"{'dataset':<24} {'system':<12} {'DER%':>7} {'DER%(c.25,no-ovl)':>18} {'FA%':>6} {'Miss%':>6} {'Conf%':>6} {'JER%':>6}  speakers ref/hyp"
    ]
    for dataset, systems in results.items():
        for name, r in systems.items():
            speakers = " ".join(f"{a}/{b}" for a, b in r["speakers"].values())
            lines.append(
                f"{dataset:<24} {name:<12} {100 * r['der_full']:7.2f} {100 * r['der_forgiving']:18.2f} "
                f"{100 * r['false_alarm']:6.2f} {100 * r['missed']:6.2f} {100 * r['confusion']:6.2f} {100 * r['jer']:6.2f}  {speakers}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- long inputs
def long_input_sources() -> list[Path]:
    """Real shared audio in concatenation order: each AMI-debug excerpt followed by
    :data:`LIBRI_PER_AMI` LibriSpeech utterances, then the remaining utterances."""
    from xmodal_diar.shared_data import shared_data_root

    root = shared_data_root()
    ami = [p for p in sorted((root / "ami-debug").glob("*.wav")) if p.stem != "empty"]
    libri = sorted((root / "librispeech" / "train-clean-100-1utt").glob("*.flac"))
    libri += sorted((root / "librispeech" / "test-other-10x10").glob("*/*.flac"))
    if not ami or not libri:
        raise FileNotFoundError(f"{root}: the ami-debug wavs and librispeech flacs are needed for the long inputs")
    order = []
    for i, excerpt in enumerate(ami):
        order.append(excerpt)
        order.extend(libri[i * LIBRI_PER_AMI : (i + 1) * LIBRI_PER_AMI])
    order.extend(libri[len(ami) * LIBRI_PER_AMI :])
    return order


def make_long_input(minutes: float, path: Path) -> dict:
    """Write a ``minutes``-long 16 kHz wav of concatenated real audio (cycling if needed)."""
    import numpy as np
    import soundfile as sf

    from xmodal_diar.audio import SAMPLE_RATE, load_audio

    target = int(round(minutes * 60 * SAMPLE_RATE))
    sources = long_input_sources()
    pieces, n, used, k = [], 0, [], 0
    while n < target:
        source = sources[k % len(sources)]
        audio = load_audio(source).numpy()[: target - n]
        pieces.append(audio)
        used.append(source.name)
        n += len(audio)
        k += 1
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE, subtype="FLOAT")
    n_ami = sum(name.endswith(".wav") for name in used)
    return {
        "minutes": minutes,
        "seconds": target / SAMPLE_RATE,
        "pieces": len(used),
        "ami_excerpts": n_ami,
        "librispeech_utterances": len(used) - n_ami,
        "repeated_sources": k > len(sources),
    }


# --------------------------------------------------------------------------- speed
class StepTimer:
    """A pyannote hook: records when each step last reported and prints coarse progress."""

    def __init__(self, label: str, echo: Callable[[str], None] = _log):
        self.label, self.echo = label, echo
        self.start = time.perf_counter()
        self.ends: dict = {}
        self._reported: dict = {}

    def __call__(self, step, artefact, file=None, total=None, completed=None):
        now = time.perf_counter()
        self.ends[step] = now
        if total:
            quarter = int(4 * completed / total)
            if quarter > self._reported.get(step, -1):
                self._reported[step] = quarter
                self.echo(f"[speed]   {self.label}: {step} {min(completed, total)}/{total} ({now - self.start:.0f} s)")
        elif step not in self._reported:
            self._reported[step] = 4
            self.echo(f"[speed]   {self.label}: {step} done ({now - self.start:.0f} s)")

    def durations(self) -> dict:
        """Seconds per step: from the previous step's last report to this step's."""
        out, previous = {}, self.start
        for step, end in sorted(self.ends.items(), key=lambda item: item[1]):
            out[step] = round(end - previous, 2)
            previous = end
        return out


def _peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (Linux). Not ``ru_maxrss``: a spawned child's
    never goes below its parent's RSS at fork time (kept across exec), e.g. the parent
    that wrote the long input (measured: 1176 MB for a 32 MB child of a 1.2 GB parent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kilobytes
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def measure(system: str, wav: str, model_dir: str, threads: int, label: str, repeats: int = 1) -> dict:
    """In a fresh process: load ``system``, diarize ``wav`` ``repeats`` times, time it, read peak memory.

    The first (cold) run gives ``rtf``; later runs, if any, give ``rtf_warm`` (their median).
    """
    _quiet()
    for message in (r"std\(\): degrees of freedom", "Mean of empty slice", "invalid value encountered"):
        warnings.filterwarnings("ignore", message=message)  # the stock pipeline on random models
    import soundfile as sf
    import torch

    torch.set_num_threads(threads)
    data, sample_rate = sf.read(wav, dtype="float32")
    file = {"waveform": torch.from_numpy(data)[None], "sample_rate": sample_rate, "uri": Path(wav).stem}
    duration = len(data) / sample_rate
    rss_input = _peak_rss_mb()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if system == "ours":
            from xmodal_diar.pipelines import load_pipeline

            pipeline = load_pipeline(model_dir)
        elif system == "stock":
            sys.path.insert(0, str(HERE))
            from stock_pyannote import real_stock_pipeline

            pipeline = real_stock_pipeline()
        else:
            raise ValueError(f"system: expected 'ours' or 'stock', got {system!r}")
        load_seconds = time.perf_counter() - start
        rss_loaded = _peak_rss_mb()

        timer = StepTimer(label)
        wall, cpu = time.perf_counter(), time.process_time()
        output = pipeline(file, hook=timer)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        warm = []
        for _ in range(repeats - 1):
            start = time.perf_counter()
            pipeline(file)
            warm.append(time.perf_counter() - start)
    annotation = getattr(output, "speaker_diarization", output)
    row = {
        "system": system,
        "input_seconds": round(duration, 2),
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 2),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "rtf": round(wall / duration, 4),
        "cpu_rtf": round(cpu / duration, 4),
        "x_real_time": round(duration / wall, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_after_input_mb": round(rss_input, 1),
        "rss_after_loading_mb": round(rss_loaded, 1),
        "steps_seconds": timer.durations(),
        "speakers": len(annotation.labels()),
        "speech_seconds": round(annotation.get_timeline().support().duration(), 1),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if warm:
        row["warm_wall_seconds"] = [round(w, 2) for w in warm]
        row["rtf_warm"] = round(float(sorted(warm)[len(warm) // 2]) / duration, 4)
    return row


def run_in_child(system: str, wav: Path, model_dir: Path, threads: int, label: str, repeats: int = 1) -> dict:
    """One measurement in a fresh (spawned) process, so its ``VmHWM`` is its own peak."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, system, str(wav), str(model_dir), threads, label, repeats).result()


def run_speed(model_dir: Path, inputs: list, threads: int, scratch: Path, repeats: int = 3, stock: bool = True) -> dict:
    results: dict = {"inputs": {}, "measurements": []}
    for minutes in inputs:
        wav = scratch / f"concat-{minutes:g}min.wav"
        _log(f"[speed] writing the {minutes:g}-minute input ...")
        results["inputs"][f"{minutes:g}min"] = make_long_input(minutes, wav)
        systems = ["ours"] + (["stock"] if minutes == 5.0 and stock else [])
        for system in systems:
            label = f"{system} {minutes:g} min"
            _log(f"[speed] {label} (fresh process, {threads} torch threads) ...")
            row = run_in_child(system, wav, model_dir, threads, label, repeats if system == "ours" else 1)
            row["input"] = f"{minutes:g}min"
            results["measurements"].append(row)
            warm = f", warm RTF {row['rtf_warm']:.4f}" if "rtf_warm" in row else ""
            _log(
                f"[speed]   RTF {row['rtf']:.4f} ({row['x_real_time']:.1f}x real time){warm}, CPU RTF {row['cpu_rtf']:.4f}, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB"
            )
        wav.unlink()
    by = {(m["system"], m["input"]): m for m in results["measurements"]}
    if ("stock", "5min") in by:
        ours, stock = by[("ours", "5min")], by[("stock", "5min")]
        steps = stock["steps_seconds"]
        results["speedup_vs_stock_5min"] = {
            "wall": round(stock["rtf"] / ours["rtf"], 1),
            "wall_vs_warm": round(stock["rtf"] / ours["rtf_warm"], 1) if "rtf_warm" in ours else None,
            "cpu": round(stock["cpu_rtf"] / ours["cpu_rtf"], 1),
            "target": 10.0,
            "stock_embedding_share": round(steps.get("embeddings", 0.0) / max(stock["wall_seconds"], 1e-9), 3),
        }
    return results


def format_speed(results: dict) -> str:
    lines = [
        f"{'system':<7} {'input':>6} {'load s':>7} {'wall s':>8} {'CPU s':>8} {'RTF':>8} {'warm RTF':>8} {'CPU RTF':>8} {'x RT':>7} {'peak MB':>8}  steps (s)"
    ]
    for m in results["measurements"]:
        steps = ", ".join(f"{k} {v:g}" for k, v in m["steps_seconds"].items())
        lines.append(
            f"{m['system']:<7} {m['input']:>6} {m['load_seconds']:7.1f} {m['wall_seconds']:8.1f} {m['cpu_seconds']:8.1f} "
            f"{m['rtf']:8.4f} {m.get('rtf_warm', float('nan')):8.4f} {m['cpu_rtf']:8.4f} {m['x_real_time']:7.1f} "
            f"{m['peak_rss_mb']:8.0f}  {steps}"
        )
    speedup = results.get("speedup_vs_stock_5min")
    if speedup:
        lines.append(
            f"speed-up vs stock SpeakerDiarization on 5 min: {speedup['wall']:.1f}x (wall, cold run), "
            f"{speedup['wall_vs_warm'] or float('nan'):.1f}x (wall, warm runs), {speedup['cpu']:.1f}x (CPU); "
            f"target >= {speedup['target']:.0f}x; stock embedding step = {100 * speedup['stock_embedding_share']:.0f} % of its time"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def merge_results(path: Path, command: str, run: dict, der: Optional[dict], speed: Optional[dict]) -> dict:
    """Read ``path`` (if any), add this run's rows (replacing same system x dataset / input), write it.

    Read and written at the end of the run, so separate runs (e.g. the stock pipeline's DER
    and our timing) can go on in parallel and each keeps the other's rows.
    """
    results: dict = json.loads(path.read_text()) if path.is_file() else {}
    runs = [r for r in results.get("runs", []) if not (r.get("command") == command and r.get("partial"))]
    results["runs"] = runs + [{"command": command, **run}]
    for dataset, rows in (der or {}).items():
        results.setdefault("der", {}).setdefault(dataset, {}).update(rows)
    if speed is not None:
        previous = results.get("speed", {"inputs": {}, "measurements": []})
        new = {(m["system"], m["input"]) for m in speed["measurements"]}
        kept = [m for m in previous["measurements"] if (m["system"], m["input"]) not in new]
        results["speed"] = {**previous, **speed, "inputs": {**previous["inputs"], **speed["inputs"]},
                            "measurements": kept + speed["measurements"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results)
    return results


def main(argv: Optional[list] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model dir to benchmark (default: the embedded default)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="NAME=DIR",
                        help="other model dirs whose encoder runs in the same pipeline (DER only)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0, 180.0],
                        help="lengths of the speed/memory inputs in minutes (default: 5 60 180; the stock "
                        "pipeline runs on the 5-minute one)")
    parser.add_argument("--quick", action="store_true", help="only the 5-minute input, without the stock pipeline")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our pipeline per input: the first is 'cold' (default: 3)")
    parser.add_argument("--skip-der", action="store_true", help="speed and memory only")
    parser.add_argument("--skip-speed", action="store_true", help="DER only")
    parser.add_argument("--systems", nargs="+", default=None, metavar="NAME",
                        help="DER only for these systems (default, classical, ours-ecapa, stock, --compare names); "
                        "their rows replace those of an existing --out file, the others are kept")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="DER only on these sets (pyannote-sample, ami-debug/development, talking-heads, "
                        "interview, rapid-turns); their rows replace those of an existing --out file")
    parser.add_argument("--no-stock", action="store_true", help="without the stock pipeline (DER and speed)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default: {RESULTS})")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error(f"--threads and --repeats must be >= 1, got {args.threads} and {args.repeats}")
    compare = {}
    for item in args.compare:
        name, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "pytorch_model.bin").is_file():
            parser.error(f"--compare {item}: expected NAME=DIR with DIR/pytorch_model.bin")
        compare[name] = Path(folder).resolve()

    _quiet()
    import torch

    torch.set_num_threads(args.threads)
    _log(f"[setup] torch.set_num_threads({args.threads}); {os.cpu_count()} CPU(s); load average {os.getloadavg()}")
    command = command_line("benchmarks/diarization.py", argv)
    run: dict = {"machine": machine(args.threads), "quick": args.quick}
    der, speed = None, None
    with tempfile.TemporaryDirectory(prefix="xmodal-bench-") as scratch:
        scratch = Path(scratch)
        model_dir, note = resolve_model_dir(args.model, scratch)
        _log(f"[setup] model: {note}")
        run["models"] = {"model": _rel(model_dir), "model_note": note.replace(str(model_dir), _rel(model_dir)),
                         "compare": {k: _rel(v) for k, v in compare.items()}}
        run["models"]["hyper_parameters"] = dict(zip(("pipeline", "params"), read_config(model_dir)))
        if not args.skip_der:
            der = run_der(model_dir, compare, stock=not args.no_stock, only=args.systems, datasets_only=args.datasets,
                          save=lambda rows: merge_results(args.out, command, dict(run, partial=True), rows, None))
            _log("\nDER (pyannote.metrics; 'DER%' = collar 0, overlap scored)\n" + format_der(der) + "\n")
        if not args.skip_speed:
            speed = run_speed(
                model_dir, [5.0] if args.quick else args.minutes, args.threads, scratch, args.repeats,
                stock=not (args.quick or args.no_stock)
            )
            _log("\nSpeed and memory (RTF = processing s / audio s; peak = VmHWM of a fresh process)\n" + format_speed(speed))
    run["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = merge_results(args.out, command, run, der, speed)
    _log(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
