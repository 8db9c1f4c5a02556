"""Frozen-trunk embeddings of the training crops, computed once and shared by every head.

With a frozen pretrained trunk (:class:`~xmodal_diar.models.TrunkHeadEncoder`,
``frozen: True``) only the head trains, so the trunk's output for a crop never changes.
:func:`build_trunk_cache` embeds ``crops_per_turn`` random crops of every training turn
(durations ~ U(crop_min, crop_max), as :func:`~xmodal_diar.training.dataio.random_crop_bounds`
draws them, from a fixed seed), the middle crop of every validation turn, and the
``n_segments`` synchronised segments of the turns with a face (Nagrani et al.). The
recipe's ``sig`` item then draws one of the cached crops, ``sig_key`` another one (MoCo's
two views), and the encoder maps them through its head only
(:func:`use_cached_trunk_inputs`), so a head trains in minutes on a CPU.

Cache file: ``<folder>/<split>.pt`` = ``{"meta": {...}, "items": {ID: {"crops": (K, D),
"segments": (N, D)}}}``; it is rebuilt when ``meta`` (trunk, crops, durations, seed) differs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from xmodal_diar.training.dataio import load_turn, middle_crop_bounds, random_crop_bounds, turn_segments

logger = logging.getLogger(__name__)


def _trunk_encoder(encoder: nn.Module):
    from xmodal_diar.models.heads import TrunkHeadEncoder

    if not isinstance(encoder, TrunkHeadEncoder) or not encoder.embedding_model.frozen:
        raise ValueError(
            f"trunk_cache needs a frozen-trunk encoder (!new:xmodal_diar.models.TrunkHeadEncoder with frozen: True), "
            f"got {type(encoder).__name__}; set trunk_cache: null to train end to end"
        )
    return encoder


def _load_or_compute(path: Path, meta: dict, ids: Sequence[str], compute) -> dict:
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("meta") == meta and all(i in cached["items"] for i in ids):
            return cached["items"]
        logger.info("%s: stale trunk cache (%s != %s), rebuilding", path, cached.get("meta"), meta)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(meta["seed"])
    try:
        with torch.no_grad():
            items = compute()
    finally:
        torch.random.set_rng_state(generator_state)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    torch.save({"meta": meta, "items": items}, partial)
    partial.replace(path)
    return items


def build_trunk_cache(
    encoder: nn.Module,
    rows: Sequence[dict],
    path: Path,
    *,
    train: bool,
    crops_per_turn: int = 2,
    crop_min: float = 0.5,
    crop_max: float = 3.0,
    n_segments: int = 0,
    segment_duration: float = 0.5,
    seed: int = 0,
    shard: Optional[tuple[int, int]] = None,
) -> dict:
    """``{ID: {"crops": (K, D), "segments": (N, D)}}`` for ``rows``, read from ``path`` when it matches.

    Segments (of the turns with a face only) are cached in ``<path stem>_segments<N>.pt``.
    ``shard=(i, n)``: only rows ``k % n == i``, written to ``<path>.shard<i>of<n>`` (several
    processes; :func:`merge_shards` then writes ``path``).
    """
    if shard is not None:
        path = Path(f"{path}.shard{shard[0]}of{shard[1]}")
        n_segments = 0
    encoder = _trunk_encoder(encoder).eval()
    path = Path(path)
    base = dict(trunk=encoder.config["trunk"], seed=seed)
    meta = dict(base, train=train, crops_per_turn=crops_per_turn if train else 1, crop_min=crop_min,
                crop_max=crop_max)

    def crops():
        out = {}
        for k, r in enumerate(rows):
            if shard is not None and k % shard[1] != shard[0]:
                continue
            torch.manual_seed(seed * 1_000_003 + k)  # each turn's crops depend on (seed, row) only
            start, stop = int(float(r["start"])), int(float(r["stop"]))
            if train:
                bounds = [random_crop_bounds(start, stop, crop_min, crop_max) for _ in range(crops_per_turn)]
            else:
                bounds = [middle_crop_bounds(start, stop, crop_max)]
            out[r["ID"]] = torch.stack([encoder.trunk_embedding(load_turn(r["wav"], a, b)[None])[0] for a, b in bounds])
            if (k + 1) % 100 == 0:
                logger.info("trunk cache %s: %d / %d turns", path.name, k + 1, len(rows))
        return out

    ids = [r["ID"] for k, r in enumerate(rows) if shard is None or k % shard[1] == shard[0]]
    items = {uid: {"crops": c} for uid, c in _load_or_compute(path, meta, ids, crops).items()}
    face_rows = [r for r in rows if r.get("face") is not None]
    if n_segments and face_rows:
        seg_path = path.with_name(f"{path.stem}_segments{n_segments}.pt")
        seg_meta = dict(base, n_segments=n_segments, segment_duration=segment_duration)

        def segments():
            return {r["ID"]: encoder.trunk_embedding(turn_segments(r["wav"], int(float(r["start"])),
                                                                   int(float(r["stop"])), n_segments, segment_duration))
                    for r in face_rows}

        for uid, seg in _load_or_compute(seg_path, seg_meta, [r["ID"] for r in face_rows], segments).items():
            items[uid]["segments"] = seg
    return items


def use_cached_trunk_inputs(modules: Optional[nn.Module], enabled: bool = True) -> int:
    """Make every :class:`TrunkHeadEncoder` inside ``modules`` take cached trunk embeddings
    ``(B, D)`` as input (``forward`` = head only); returns how many were switched."""
    from xmodal_diar.models.heads import TrunkHeadEncoder

    n = 0
    for module in (modules.modules() if modules is not None else []):
        if isinstance(module, TrunkHeadEncoder):
            _trunk_encoder(module)
            module.cached_inputs = enabled
            n += 1
    return n


def merge_shards(path: Path, n: int) -> Path:
    """Join ``<path>.shard<i>of<n>`` (same meta) into ``path``."""
    path = Path(path)
    parts = [torch.load(f"{path}.shard{i}of{n}", map_location="cpu", weights_only=True) for i in range(n)]
    if any(p["meta"] != parts[0]["meta"] for p in parts):
        raise ValueError(f"{path}: shards were built with different settings")
    items = {k: v for p in parts for k, v in p["items"].items()}
    torch.save({"meta": parts[0]["meta"], "items": items}, path)
    return path


def main(argv=None) -> int:
    """``python -m xmodal_diar.training.trunk_cache hparams/X.yaml --data_folder=... [--shard=i/n | --merge=n]``:
    build the training-crop cache of a recipe (same overrides as train.py), one shard per process."""
    import sys

    import speechbrain as sb
    from hyperpyyaml import load_hyperpyyaml

    from xmodal_diar.training.manifests import read_manifest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    shard = next((a for a in argv if a.startswith("--shard=")), None)
    merge = next((a for a in argv if a.startswith("--merge=")), None)
    argv = [a for a in argv if a not in (shard, merge)]
    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    path = Path(hparams["trunk_cache"]) / "train.pt"
    if merge:
        print(merge_shards(path, int(merge.split("=")[1])))
        return 0
    rows = read_manifest(hparams["train_annotation"], hparams["face_dim"])
    i, n = (int(x) for x in shard.split("=")[1].split("/")) if shard else (0, 1)
    build_trunk_cache(hparams["encoder"], rows, path, train=True, crops_per_turn=hparams["trunk_cache_crops"],
                      crop_min=hparams["crop_min"], crop_max=hparams["crop_max"], seed=hparams["trunk_cache_seed"],
                      shard=(i, n) if shard else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
