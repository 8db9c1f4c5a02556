#!/usr/bin/env python3
"""Evaluate exported models on held-out speakers (librispeech/test-other-10x10).

    python evaluate.py results/triplet/1986/model results/tet/1986/model ... resemblyzer \
        --test results/manifests/test.csv --out results/table.md

For each embedder (an exported model directory, ``resemblyzer``/``mfcc``, or a bare
pretrained trunk ``campplus``/``ecapa-voxceleb``): one crop
from the middle of each utterance at 0.5, 1, 2 and 4 s (utterances shorter than the
crop are skipped), cosine scores of all pairs -> EER (xmodal_diar.eval.verification),
and average-linkage clustering of the crops -> purity / coverage at the threshold that
maximises their harmonic mean and at the oracle number of speakers
(xmodal_diar.eval.clustering). Writes one JSON per embedder and a Markdown table.
Heads on a frozen trunk share one trunk pass per crop (``<out folder>/trunk_cache_<trunk>.pt``).
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

DURATIONS = (0.5, 1.0, 2.0, 4.0)


class FrozenTrunkEmbedder:
    """A frozen pretrained trunk (``campplus``, ``ecapa-voxceleb``) or an exported head on one:
    the trunk's embedding of each crop is computed once and kept in ``cache`` (a file keyed by
    the crop's samples), so every head is evaluated on the same trunk pass."""

    def __init__(self, config: dict, head_state: Optional[dict], cache: Path):
        import torch

        from xmodal_diar.models import build_encoder

        self.encoder = build_encoder("trunk_head", **config).eval()
        if head_state is not None:
            self.encoder.embedding_model.load_state_dict(head_state)
        self.cache = cache
        self.table = torch.load(cache, weights_only=True) if cache.is_file() else {}

    @classmethod
    def from_spec(cls, spec: str, cache_folder: Path) -> Optional["FrozenTrunkEmbedder"]:
        import torch

        from xmodal_diar.models import TRUNKS

        if spec in TRUNKS:
            return cls({"trunk": spec}, None, cache_folder / f"trunk_cache_{spec}.pt")
        info_path = Path(spec) / "xmodal_diar.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        config = info.get("encoder_config") or {}
        if info.get("encoder") != "trunk_head" or not config.get("frozen", True):
            return None
        state = torch.load(Path(spec) / "embedding_model.ckpt", map_location="cpu", weights_only=True)
        return cls(config, state, cache_folder / f"trunk_cache_{config.get('trunk', 'campplus')}.pt")

    def embed(self, crops):
        import hashlib

        import torch

        keys = [hashlib.sha1(c.numpy().tobytes()).hexdigest() for c in crops]
        with torch.no_grad():
            for key, crop in zip(keys, crops):
                if key not in self.table:
                    self.table[key] = self.encoder.trunk_embedding(crop[None])[0]
            torch.save(self.table, self.cache)
            return self.encoder.head_embedding(torch.stack([self.table[k] for k in keys])).numpy()


def evaluate(spec: str, test: Path, durations=DURATIONS, n_resamples: int = 200,
             cache_folder: Path = Path("results")) -> dict:
    from xmodal_diar.eval.clustering import clustering_report
    from xmodal_diar.eval.embedders import embed_by_duration, list_utterances, load_embedder, load_waveforms
    from xmodal_diar.eval.verification import verification_report

    utterances = list_utterances(test)
    waveforms = load_waveforms(utterances)
    labels = [u.speaker for u in utterances]
    embedder = FrozenTrunkEmbedder.from_spec(spec, cache_folder) or load_embedder(spec, progress=False)
    results = {"embedder": spec, "test": str(test), "buckets": {}}
    for name, bucket in embed_by_duration(waveforms, embedder, list(durations)).items():
        bucket_labels = [labels[k] for k in bucket.kept]
        verification, _ = verification_report(bucket.embeddings, bucket_labels, n_resamples=n_resamples)
        clustering, _ = clustering_report(bucket.embeddings, bucket_labels, n_resamples=n_resamples)
        results["buckets"][name] = {"verification": verification, "clustering": clustering,
                                    "n_skipped": bucket.n_skipped}
    return results


def table(rows: list[dict]) -> str:
    names = [f"{d:g}s" for d in DURATIONS]
    head = ("| model | " + " | ".join(f"EER {n}" for n in names) + " | "
            + " | ".join(f"pur/cov {n}" for n in names) + " |")
    lines = [head, "|" + "---|" * (1 + 2 * len(names))]
    for r in rows:
        b = r["buckets"]
        eer = [f"{100 * b[n]['verification']['eer']['value']:.1f}" for n in names]
        pc = [f"{100 * b[n]['clustering']['purity']['value']:.0f}/{100 * b[n]['clustering']['coverage']['value']:.0f}"
              for n in names]
        lines.append(f"| {r['label']} | " + " | ".join(eer) + " | " + " | ".join(pc) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embedders", nargs="+",
                        help="model directories, 'resemblyzer', 'mfcc', or a bare trunk 'campplus' / 'ecapa-voxceleb'")
    parser.add_argument("--test", type=Path, default=Path("results/manifests/test.csv"))
    parser.add_argument("--out", type=Path, default=Path("results/table.md"))
    parser.add_argument("--n-resamples", type=int, default=200, help="speaker bootstrap resamples")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for spec in args.embedders:
        path = Path(spec)
        json_path = (path / "eval_test.json") if path.is_dir() else args.out.with_name(f"eval_{spec}.json")
        if json_path.is_file() and json.loads(json_path.read_text()).get("test") == str(args.test):
            result = json.loads(json_path.read_text())
        else:
            result = evaluate(spec, args.test, n_resamples=args.n_resamples, cache_folder=args.out.parent)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
        label = path.parent.parent.name if path.is_dir() and path.name == "model" else spec
        rows.append({"label": label, **result})
        print(table([rows[-1]]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
