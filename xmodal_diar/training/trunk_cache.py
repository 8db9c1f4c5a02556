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
) -> dict:
    """``{ID: {"crops": (K, D), "segments": (N, D)}}`` for ``rows``, read from ``path`` when it matches.

    Segments (of the turns with a face only) are cached in ``<path stem>_segments<N>.pt``.
    """
    encoder = _trunk_encoder(encoder).eval()
    path = Path(path)
    base = dict(trunk=encoder.config["trunk"], seed=seed)
    meta = dict(base, train=train, crops_per_turn=crops_per_turn if train else 1, crop_min=crop_min,
                crop_max=crop_max)

    def crops():
        out = {}
        for k, r in enumerate(rows):
            start, stop = int(float(r["start"])), int(float(r["stop"]))
            if train:
                bounds = [random_crop_bounds(start, stop, crop_min, crop_max) for _ in range(crops_per_turn)]
            else:
                bounds = [middle_crop_bounds(start, stop, crop_max)]
            out[r["ID"]] = torch.stack([encoder.trunk_embedding(load_turn(r["wav"], a, b)[None])[0] for a, b in bounds])
            if (k + 1) % 100 == 0:
                logger.info("trunk cache %s: %d / %d turns", path.name, k + 1, len(rows))
        return out

    items = {uid: {"crops": c} for uid, c in _load_or_compute(path, meta, [r["ID"] for r in rows], crops).items()}
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
