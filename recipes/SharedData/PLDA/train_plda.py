#!/usr/bin/env python3
"""Train the LDA + PLDA back-end that VBx clustering needs, on the shared data (train only).

    python train_plda.py hparams/plda.yaml [--encoder=ecapa] [--output_folder=DIR]

Embeds consecutive crops of random length (``crop_min_s``..``crop_max_s``) of the LibriSpeech
``train-clean-100-1utt`` utterances (minus ``tuning_speakers`` speakers kept for
``evaluate.py``) and the reference turns of the ami-debug TRAIN excerpts (trn00..trn09,
overlap removed) with the chosen speaker trunk, then estimates, as in BUT's VBx recipe
(Landini et al. 2022, "Bayesian HMM clustering of x-vector sequences (VBx)"):

1. ``mean1`` and ``lda``: LDA on length-normalised centred embeddings
   ``sqrt(D) * l2norm(x - mean1)``, the ``lda_dimension`` leading solutions of the
   generalised eigenproblem ``S_b v = lambda S_w v`` (between- and within-speaker scatter);
2. ``mean2``: the mean of the projections; PLDA input ``sqrt(d) * l2norm(lda^T x' - mean2)``;
3. a PLDA (Prince & Elder 2007; Ioffe 2006) fitted by SpeechBrain's EM
   (:class:`speechbrain.processing.PLDA_LDA.PLDA`, ``x = mu + F h + e``, full rank ``F``:
   between-speaker covariance ``B = F F^T``, within-speaker ``W = Sigma``), stored as
   pyannote expects: ``tr`` with ``tr W tr^T = I`` and ``tr B tr^T = diag(psi)``.

Writes ``xvec_transform.npz`` (mean1, mean2, lda) and ``plda.npz`` (mu, tr, psi), the two
files ``pyannote.audio.core.plda.PLDA`` loads, plus the embeddings (``embeddings_*.npz``,
reused by ``evaluate.py`` and on re-runs) into ``output_folder``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

Item = tuple  # (speaker, audio path, start s, end s)

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml

from xmodal_diar.audio import load_audio
from xmodal_diar.shared_data import shared_data_root

Embed = Callable[[list], np.ndarray]
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- configuration


def load_hparams(argv: list[str]) -> dict:
    """SpeechBrain-style ``hparams.yaml --key=value`` command line."""
    import speechbrain as sb

    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as f:
        hparams = load_hyperpyyaml(f, overrides)
    hparams["data_folder"] = Path(hparams["data_folder"] or shared_data_root())
    hparams["output_folder"] = Path(hparams["output_folder"])
    return hparams


# ---------------------------------------------------------------- speaker trunks


def load_encoder(name: str, batch_size: int = 16) -> Embed:
    """``embed(list of (T,) 16 kHz tensors) -> (N, D)`` for the trunk ``name``."""
    from xmodal_diar.eval.embedders import _embed_batched, _pad
    from xmodal_diar.weights import weights_dir

    if name == "ecapa":
        from speechbrain.inference.speaker import EncoderClassifier

        source = str(weights_dir("ecapa-voxceleb"))
        model = EncoderClassifier.from_hparams(
            source=source, savedir=tempfile.mkdtemp(prefix="xmodal-ecapa-"), overrides={"pretrained_path": source}
        ).eval()

        def forward(waveforms):
            batch, lens = _pad(waveforms)
            return model.encode_batch(batch, lens).reshape(len(waveforms), -1).numpy()

    elif name == "campplus":
        try:
            from xmodal_diar.models.campplus import CAMPPlusTurnEncoder
        except ImportError as exc:
            raise ImportError(
                "encoder 'campplus' needs xmodal_diar.models.campplus (the CAM++ trunk); "
                "use --encoder=ecapa until it is installed"
            ) from exc
        model = CAMPPlusTurnEncoder().eval()  # released weights, frozen

        def forward(waveforms):
            batch, lens = _pad(waveforms)
            return model(batch, lens).reshape(len(waveforms), -1).numpy()

    else:
        raise ValueError(f"encoder: expected 'campplus' or 'ecapa', got {name!r}")

    return lambda waveforms: _embed_batched(waveforms, batch_size, forward, name, progress=False)


# ---------------------------------------------------------------- training material


def consecutive_crops(duration: float, lo: float, hi: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Non-overlapping consecutive crops of random length in ``[lo, hi]`` s covering the file
    (a remainder shorter than ``lo`` is dropped; a file shorter than ``lo`` is one crop)."""
    if duration < lo:
        return [(0.0, duration)]
    crops, start = [], 0.0
    while duration - start >= lo:
        end = min(start + float(rng.uniform(lo, hi)), duration)
        crops.append((start, end))
        start = end
    return crops


def librispeech_speakers(folder: Path) -> dict[str, list[Path]]:
    """Speaker id -> sorted flac files (``SPK-CHAPTER-UTT.flac`` or ``SPK/*.flac``)."""
    files = sorted(folder.rglob("*.flac"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .flac files")
    speakers: dict[str, list[Path]] = {}
    for path in files:
        speakers.setdefault(path.name.split("-")[0], []).append(path)
    return speakers


def split_speakers(speakers: list[str], n_tuning: int, seed: int) -> tuple[list[str], list[str]]:
    """(PLDA training speakers, tuning speakers), a seeded split of the sorted ids."""
    rng = np.random.default_rng(seed)
    order = sorted(speakers)
    tuning = set(rng.choice(order, size=n_tuning, replace=False).tolist()) if n_tuning else set()
    return [s for s in order if s not in tuning], sorted(tuning)


def librispeech_items(speakers: dict[str, list[Path]], keep: list[str], lo: float, hi: float,
                      rng: np.random.Generator) -> list[Item]:
    """(speaker, file, start, end) consecutive crops of the utterances of the ``keep`` speakers."""
    import soundfile

    items = []
    for speaker in keep:
        for path in speakers[speaker]:
            duration = soundfile.info(str(path)).duration
            items += [(speaker, path, s, e) for s, e in consecutive_crops(duration, lo, hi, rng)]
    return items


def ami_items(folder: Path, rttm: str, file_list: str, min_turn: float, max_crop: float,
              train_only: bool = True) -> list[Item]:
    """Reference turns of the listed (train) excerpts without their overlapped parts, cut in
    equal pieces of at most ``max_crop`` s; the speaker label is AMI's global speaker id."""
    from pyannote.core import Timeline
    from pyannote.database.util import load_rttm

    uris = (folder / file_list).read_text().split()
    if train_only and any(not u.startswith("trn") for u in uris):
        raise ValueError(f"{folder / file_list}: PLDA training reads the train excerpts (trn*) only, got {uris}")
    references = load_rttm(folder / rttm)
    items = []
    for uri in uris:
        reference = references[uri]
        overlap = reference.get_overlap()
        for segment, _, speaker in reference.itertracks(yield_label=True):
            for piece in Timeline([segment]).extrude(overlap):
                if piece.duration < min_turn:
                    continue
                n = int(np.ceil(piece.duration / max_crop))
                edges = np.linspace(piece.start, piece.end, n + 1)
                items += [(speaker, folder / f"{uri}.wav", float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
    return items


def embed_items(items: list[Item], embed: Embed, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, D), speaker labels (N,)) of the crops, cached in ``cache`` (.npz)."""
    labels = np.array([speaker for speaker, *_ in items])
    keys = np.array([f"{path.name}:{start:.3f}-{end:.3f}" for _, path, start, end in items])
    if cache.is_file():
        with np.load(cache) as saved:
            if saved["keys"].tolist() == keys.tolist():
                return saved["embeddings"], labels
    waveforms = [load_audio(path, start=start, end=end) for _, path, start, end in items]
    embeddings = embed(waveforms).astype(np.float64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, embeddings=embeddings, labels=labels, keys=keys)
    return embeddings, labels


# ---------------------------------------------------------------- LDA + PLDA


def l2_norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scatter(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(within-speaker, between-speaker) scatter matrices, each divided by N."""
    mean = x.mean(axis=0)
    within = np.zeros((x.shape[1], x.shape[1]))
    between = np.zeros_like(within)
    for speaker in np.unique(labels):
        xs = x[labels == speaker]
        centred = xs - xs.mean(axis=0)
        within += centred.T @ centred
        between += len(xs) * np.outer(xs.mean(axis=0) - mean, xs.mean(axis=0) - mean)
    return within / len(x), between / len(x)


def train_lda_plda(x: np.ndarray, labels: np.ndarray, lda_dimension: int, iterations: int,
                   ridge: float = 1e-3) -> tuple[dict, dict]:
    """``(xvec_transform, plda)`` arrays in the format of :func:`pyannote.audio.utils.vbx.vbx_setup`."""
    from scipy.linalg import eigh
    from speechbrain.processing.PLDA_LDA import PLDA, StatObject_SB

    n_speakers = len(np.unique(labels))
    if lda_dimension > min(x.shape[1], n_speakers - 1):
        raise ValueError(f"lda_dimension {lda_dimension} > min(D={x.shape[1]}, speakers - 1 = {n_speakers - 1})")
    mean1 = x.mean(axis=0)
    xc = np.sqrt(x.shape[1]) * l2_norm(x - mean1)
    within, between = scatter(xc, labels)
    within += ridge * np.trace(within) / len(within) * np.eye(len(within))
    _, vectors = eigh(between, within)
    lda = vectors[:, ::-1][:, :lda_dimension]
    projected = xc @ lda
    mean2 = projected.mean(axis=0)
    z = np.sqrt(lda_dimension) * l2_norm(projected - mean2)

    n = len(z)
    stats = StatObject_SB(
        modelset=labels.astype(object), segset=np.array([f"seg{i}" for i in range(n)], dtype=object),
        start=np.array([None] * n), stop=np.array([None] * n), stat0=np.ones((n, 1)), stat1=z,
    )
    plda = PLDA(rank_f=lda_dimension, nb_iter=iterations)
    plda.plda(stats)
    between_cov = plda.F @ plda.F.T
    within_cov = plda.Sigma
    psi, vectors = eigh(between_cov, within_cov)  # vectors^T W vectors = I, vectors^T B vectors = diag(psi)
    order = np.argsort(psi)[::-1]
    transform = {"mean1": mean1, "mean2": mean2, "lda": lda}
    model = {"mu": np.asarray(plda.mean), "tr": vectors[:, order].T, "psi": psi[order]}
    return transform, model


def write_npz(path: Path, arrays: dict) -> Path:
    from xmodal_diar.outputs import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode="wb") as f:
        np.savez(f, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    return path


def training_embeddings(hparams: dict, embed: Embed | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of the PLDA training crops (LibriSpeech train speakers + AMI train)."""
    rng = np.random.default_rng(hparams["seed"])
    data, out = hparams["data_folder"], hparams["output_folder"]
    speakers = librispeech_speakers(data / hparams["librispeech_subset"])
    train, _ = split_speakers(list(speakers), hparams["tuning_speakers"], hparams["seed"])
    libri = librispeech_items(speakers, train, hparams["crop_min_s"], hparams["crop_max_s"], rng)
    ami = ami_items(data / hparams["ami_folder"], hparams["ami_rttm"], hparams["ami_list"],
                    hparams["ami_min_turn_s"], hparams["crop_max_s"])
    embed = embed or load_encoder(hparams["encoder"], hparams["batch_size"])
    x1, y1 = embed_items(libri, embed, out / "embeddings_train_librispeech.npz")
    x2, y2 = embed_items(ami, embed, out / "embeddings_train_ami.npz")
    print(f"PLDA training material: {len(libri)} LibriSpeech crops of {len(train)} speakers, "
          f"{len(ami)} AMI train crops of {len(np.unique(y2))} speakers")
    return np.concatenate([x1, x2]), np.concatenate([y1, np.char.add("ami-", y2)])


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    hparams = load_hparams(argv)
    started = time.time()
    x, labels = training_embeddings(hparams)
    transform, model = train_lda_plda(x, labels, hparams["lda_dimension"], hparams["plda_iterations"],
                                      hparams["lda_ridge"])
    out = hparams["output_folder"]
    write_npz(out / "xvec_transform.npz", transform)
    write_npz(out / "plda.npz", model)
    summary = {"encoder": hparams["encoder"], "embeddings": int(len(x)), "speakers": int(len(np.unique(labels))),
               "dimension": int(x.shape[1]), "lda_dimension": hparams["lda_dimension"],
               "psi_top5": [round(float(p), 3) for p in model["psi"][:5]], "seconds": round(time.time() - started, 1)}
    (out / "plda_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
