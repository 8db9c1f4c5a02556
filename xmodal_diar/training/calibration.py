"""The verification threshold shipped with an exported model.

SpeechBrain's ``SpeakerRecognition.verify_batch/verify_files`` decide "same speaker" when
``cos(e1, e2) > threshold`` and default to ``threshold=0.25``, which is meaningless for
an embedding space it was not tuned on. The recipe calibrates the EER operating point
on held-out speakers (turns of a manifest whose speakers were not trained on):
``speechbrain.utils.metric_stats.EER(positive, negative)`` returns the EER and the
threshold at which ``P_miss`` (``score <= θ``) and ``P_fa`` (``score > θ``) are closest,
the decision rule ``SpeakerRecognition`` applies. The threshold is written into the
export's ``hyperparams.yaml`` as ``verification_threshold``, where SpeechBrain exposes it
as ``verifier.hparams.verification_threshold``::

    verifier = SpeakerRecognition.from_hparams(source=DIR, savedir=DIR)
    score, same = verifier.verify_files(a, b, threshold=verifier.hparams.verification_threshold)

(SpeechBrain 1.1.2 does not read a threshold from the model directory by itself.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

THRESHOLD_KEY = "verification_threshold"


def embed_manifest(verifier, rows: list[dict], max_per_speaker: int = 20) -> tuple[torch.Tensor, list[str]]:
    """``verifier.encode_batch`` (unnormalised, as ``verify_batch``) of the first
    ``max_per_speaker`` turns of each speaker of a manifest; (embeddings (N, D), labels)."""
    from xmodal_diar.training.dataio import load_turn

    kept, count = [], {}
    for row in rows:
        if count.get(row["spk_id"], 0) < max_per_speaker:
            count[row["spk_id"]] = count.get(row["spk_id"], 0) + 1
            kept.append(row)
    embeddings = []
    with torch.no_grad():
        for row in kept:
            wav = load_turn(row["wav"], int(row["start"]), int(row["stop"]))
            embeddings.append(verifier.encode_batch(wav[None], normalize=False).reshape(-1))
    return torch.stack(embeddings), [row["spk_id"] for row in kept]


def calibrate_threshold(model_dir: Union[str, Path], manifest: Union[str, Path], max_per_speaker: int = 20,
                        per_speaker_trials: int = 50, seed: int = 0) -> dict:
    """EER threshold of ``model_dir`` on the held-out turns of ``manifest``, written into its
    ``hyperparams.yaml`` (``verification_threshold``) and ``xmodal_diar.json``
    (``verification``: threshold, EER, trial counts, manifest). Returns that record."""
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.metric_stats import EER

    from xmodal_diar.eval.verification import balanced_trials
    from xmodal_diar.training.manifests import read_manifest

    model_dir, manifest = Path(model_dir), Path(manifest)
    rows = read_manifest(manifest)
    if len({r["spk_id"] for r in rows}) < 2:
        raise ValueError(f"{manifest}: threshold calibration needs turns of at least 2 speakers")
    verifier = SpeakerRecognition.from_hparams(source=str(model_dir.resolve()), savedir=str(model_dir.resolve()))
    embeddings, labels = embed_manifest(verifier, rows, max_per_speaker)
    trials = balanced_trials(labels, per_speaker_trials, seed)
    scores = verifier.similarity(embeddings[trials.enrol], embeddings[trials.test])
    target = torch.as_tensor(trials.target)
    eer, threshold = EER(scores[target], scores[~target])
    record = {"threshold": threshold, "eer": eer, "n_target": trials.n_target, "n_nontarget": trials.n_nontarget,
              "n_speakers": len(set(labels)), "manifest": manifest.name,
              "rule": "same speaker when cosine > threshold (SpeakerRecognition.verify_batch)"}
    write_threshold(model_dir, threshold, f"EER {100 * eer:.1f} % on {len(trials)} trials of {manifest.name}")
    info_file = model_dir / "xmodal_diar.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    info_file.write_text(json.dumps({**info, "verification": record}, indent=2) + "\n")
    logger.info("verification threshold %.4f (EER %.2f %%) written to %s", threshold, 100 * eer, model_dir)
    return record


def write_threshold(model_dir: Union[str, Path], threshold: float, note: str = "") -> None:
    """Set ``verification_threshold`` in ``model_dir/hyperparams.yaml`` (replacing an old one)."""
    hparams = Path(model_dir) / "hyperparams.yaml"
    if not np.isfinite(threshold):
        raise ValueError(f"{hparams}: threshold {threshold} is not finite")
    lines = [line for line in hparams.read_text().splitlines() if not line.startswith(f"{THRESHOLD_KEY}:")]
    comment = f"  # calibrated by the recipe: {note}" if note else ""
    lines.append(f"{THRESHOLD_KEY}: {float(threshold):.6f}{comment}")
    hparams.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    """``python -m xmodal_diar.training.calibration MODEL_DIR HELD_OUT_MANIFEST``: calibrate an
    already exported model (what ``train.py`` does after its export)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xmodal_diar.training.calibration", description=main.__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("manifest", type=Path, help="turns of speakers the model was not trained on")
    parser.add_argument("--max-per-speaker", type=int, default=20)
    parser.add_argument("--trials-per-speaker", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        record = calibrate_threshold(args.model_dir, args.manifest, args.max_per_speaker, args.trials_per_speaker)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
