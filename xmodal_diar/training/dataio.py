"""Data pipeline of the cross-modal recipes, SpeechBrain style.

:func:`dataio_prep` validates the manifests (:func:`~xmodal_diar.training.manifests.read_manifest`),
builds :class:`speechbrain.dataio.dataset.DynamicItemDataset` objects with
``DynamicItemDataset.from_csv`` and adds the dynamic items:

- ``sig``: a random crop of the turn whose duration is drawn uniformly in
  ``[crop_min, crop_max]`` seconds (short turns on purpose; the whole turn when shorter),
  loaded with :func:`xmodal_diar.audio.load_audio`; ``sig_key`` a second independent
  crop (MoCo); the middle ``crop_max`` seconds at validation;
- ``segments``: ``n_segments`` windows of ``segment_duration`` seconds centred in equal
  parts of the turn, ``(n_segments, samples)`` (Nagrani et al.'s synchronised segments);
- ``teacher`` (D,) the face teacher ``t`` (zeros without a face), ``teacher_segments``
  (n_segments, D), ``has_face`` (1,), ``teacher_quality`` (Q,), parsed from the
  manifest's ``face_emb`` and ``face_quality`` columns;
- ``spk_id_encoded`` from a :class:`speechbrain.dataio.encoder.CategoricalEncoder`.

:class:`IdentityBatchSampler` draws P identities x K samples per batch (K >= 2, so every
batch has triplets), with ``face_identities_per_batch`` of the P taken among identities
that have faces, so the face terms see faces in every batch although most turns have none.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from torch.utils.data import Sampler

from xmodal_diar.audio import load_audio
from xmodal_diar.training.manifests import SAMPLE_RATE, ManifestError, check_identities, read_manifest

logger = logging.getLogger(__name__)


def random_crop_bounds(start: int, stop: int, crop_min: float, crop_max: float) -> tuple[int, int]:
    """``[a, b)`` samples inside ``[start, stop)``: duration ~ U(crop_min, crop_max) s, random start."""
    duration = crop_min + float(torch.rand(())) * (crop_max - crop_min)
    n = int(round(duration * SAMPLE_RATE))
    if n >= stop - start:
        return start, stop
    a = start + int(torch.randint(0, stop - start - n + 1, ()))
    return a, a + n


def middle_crop_bounds(start: int, stop: int, crop: float) -> tuple[int, int]:
    n = int(round(crop * SAMPLE_RATE))
    if n >= stop - start:
        return start, stop
    a = start + (stop - start - n) // 2
    return a, a + n


def load_turn(wav: str, a: int, b: int) -> torch.Tensor:
    return load_audio(wav, start=a / SAMPLE_RATE, end=b / SAMPLE_RATE)


def turn_segments(wav: str, start: int, stop: int, n_segments: int, segment_duration: float) -> torch.Tensor:
    """``(n_segments, samples)``: a window of ``segment_duration`` s centred in each equal part
    of the turn (tiled when the part is shorter)."""
    sig = load_turn(wav, start, stop)
    n = int(round(segment_duration * SAMPLE_RATE))
    edges = np.linspace(0, sig.shape[0], n_segments + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        part = sig[a:max(b, a + 1)]
        if part.shape[0] >= n:
            c = a + (part.shape[0] - n) // 2
            out.append(sig[c:c + n])
        else:
            out.append(part.repeat(int(np.ceil(n / part.shape[0])))[:n])
    return torch.stack(out)


def face_table(rows: Sequence[dict], face_dim: int, n_segments: int = 1) -> dict[str, tuple]:
    """ID -> (face_emb (D,), face_segments (n_segments, D), has_face (1,), quality) tensors."""
    n_quality = next((len(r["quality"]) for r in rows if r["quality"] is not None), 4)
    table = {}
    for r in rows:
        face, quality = r["face"], r["quality"]
        if face is None:
            table[r["ID"]] = (torch.zeros(face_dim), torch.zeros(n_segments, face_dim), torch.zeros(1), torch.zeros(n_quality))
            continue
        windows = torch.as_tensor(face if face.ndim == 2 else face[None], dtype=torch.float32)
        teacher = torch.nn.functional.normalize(windows.mean(0), dim=0)
        index = torch.linspace(0, windows.shape[0] - 1, n_segments).round().long()
        q = torch.as_tensor(quality) if quality is not None else torch.ones(n_quality)
        table[r["ID"]] = (teacher, windows[index], torch.ones(1), q.float())
    return table


def identity_face_centroids(rows: Sequence[dict], label_encoder: CategoricalEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The face teacher per identity: ``(C_face, D)`` normalised centroids ``t̄_c`` of the
    identities that have faces, and ``(n_labels,)`` long: each label's row in that table, -1
    for identities without a face."""
    per_identity = defaultdict(list)
    for r in rows:
        if r["face"] is not None:
            f = r["face"] if r["face"].ndim == 1 else r["face"].mean(0)
            per_identity[r["spk_id"]].append(f / max(np.linalg.norm(f), 1e-12))
    rows_of = torch.full((len(label_encoder),), -1, dtype=torch.long)
    centroids = []
    for k, spk in enumerate(sorted(per_identity)):
        rows_of[label_encoder.encode_label(spk)] = k
        m = np.mean(per_identity[spk], axis=0)
        centroids.append(m / max(np.linalg.norm(m), 1e-12))
    table = torch.as_tensor(np.stack(centroids), dtype=torch.float32) if centroids else torch.zeros(0, 0)
    return table, rows_of


class IdentityBatchSampler(Sampler):
    """P identities x K samples per batch ("PK" sampling, Hermans et al. 2017) for triplet mining.

    ``face_identities_per_batch`` of the P identities are drawn among ``face_identities``
    (identities with paired faces), the others among the rest. Samples of an identity are
    drawn without replacement while it has enough, else with. ``n_batches`` per epoch
    (default: as many as cover the data once). Deterministic given ``seed`` and the epoch.
    """

    def __init__(
        self,
        labels: Sequence[str],
        identities_per_batch: int = 8,
        samples_per_identity: int = 2,
        face_identities: Sequence[str] = (),
        face_identities_per_batch: int = 0,
        n_batches: Optional[int] = None,
        seed: int = 0,
    ):
        if samples_per_identity < 2:
            raise ValueError(f"samples_per_identity must be >= 2 for triplet mining, got {samples_per_identity}")
        self.by_identity = defaultdict(list)
        for i, label in enumerate(labels):
            self.by_identity[label].append(i)
        single = sorted(s for s, idx in self.by_identity.items() if len(idx) < 2)
        if single:
            raise ManifestError(
                f"identities with a single sample: {single[:5]}; every identity needs >= 2 samples for triplet "
                f"mining: rebuild the manifest (`xmodal-diar prepare` drops them) or remove those rows"
            )
        faces = sorted(set(face_identities) & set(self.by_identity))
        self.face_ids = faces
        self.other_ids = sorted(set(self.by_identity) - set(faces))
        self.n_face = min(face_identities_per_batch, len(faces))
        self.P = min(identities_per_batch, len(self.by_identity))
        if self.P < 2:
            raise ManifestError(f"only {len(self.by_identity)} identity in the data: triplets need at least 2")
        self.K = samples_per_identity
        self.n_batches = n_batches or max(1, len(labels) // (self.P * self.K))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + 7919 * self.epoch)
        self.epoch += 1
        for _ in range(self.n_batches):
            n_other = min(self.P - self.n_face, len(self.other_ids))
            n_face = min(self.P - n_other, len(self.face_ids))
            ids = list(rng.choice(self.face_ids, n_face, replace=False)) if n_face else []
            ids += list(rng.choice(self.other_ids, n_other, replace=False)) if n_other else []
            batch = []
            for spk in ids:
                pool = self.by_identity[spk]
                batch += rng.choice(pool, self.K, replace=len(pool) < self.K).tolist()
            yield batch


def build_label_encoder(rows: Sequence[dict], path: Optional[Path] = None) -> CategoricalEncoder:
    """Sorted identities -> indices; saved to / loaded from ``path`` (SpeechBrain's format)."""
    encoder = CategoricalEncoder()
    identities = sorted({r["spk_id"] for r in rows})
    if path is not None and Path(path).is_file():
        encoder.load(path)
        encoder.ignore_len()
        missing = sorted({r["spk_id"] for r in rows} - set(encoder.lab2ind))
        if missing:
            raise ManifestError(f"{path}: label encoder lacks identities {missing[:5]}; delete it to rebuild")
        return encoder
    encoder.update_from_iterable(identities)
    encoder.expect_len(len(identities))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        encoder.save(path)
    return encoder


def make_dataset(
    csv_path, rows: Sequence[dict], label_encoder: CategoricalEncoder, *, train: bool, crop_min: float,
    crop_max: float, face_dim: int, two_crops: bool = False, n_segments: int = 0, segment_duration: float = 0.5,
    trunk_cache: Optional[dict] = None,
) -> sb.dataio.dataset.DynamicItemDataset:
    """A ``DynamicItemDataset.from_csv`` with the items of the module docstring.

    ``trunk_cache`` (:mod:`xmodal_diar.training.trunk_cache`): ``sig``, ``sig_key`` and
    ``segments`` are then cached frozen-trunk embeddings of the turn's crops, not audio.
    """
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path=str(csv_path))
    faces = face_table(rows, face_dim, max(n_segments, 1))
    keys = ["id", "sig", "spk_id_encoded", "teacher", "has_face", "teacher_quality"]

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def crop(wav, start, stop):
        start, stop = int(float(start)), int(float(stop))
        a, b = random_crop_bounds(start, stop, crop_min, crop_max) if train else middle_crop_bounds(start, stop, crop_max)
        return load_turn(wav, a, b)

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig_key")
    def key_crop(wav, start, stop):
        start, stop = int(float(start)), int(float(stop))
        return load_turn(wav, *random_crop_bounds(start, stop, crop_min, crop_max))

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("segments")
    def segments(wav, start, stop):
        return turn_segments(wav, int(float(start)), int(float(stop)), n_segments, segment_duration)

    @sb.utils.data_pipeline.takes("id")
    @sb.utils.data_pipeline.provides("teacher", "teacher_segments", "has_face", "teacher_quality")
    def face(uid):
        yield from faces[uid]

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id_encoded")
    def label(spk_id):
        return torch.LongTensor([label_encoder.encode_label(spk_id)])

    if trunk_cache is not None:

        def _draw(uid):
            crops = trunk_cache[uid]["crops"]
            return crops[int(torch.randint(0, crops.shape[0], ()))] if train else crops[0]

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("sig")
        def crop(uid):
            return _draw(uid)

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("sig_key")
        def key_crop(uid):
            return _draw(uid)

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("segments")
        def segments(uid):
            item = trunk_cache[uid]
            return item["segments"] if "segments" in item else item["crops"][:1].expand(n_segments, -1)

    pipelines = [crop, face, label]
    if two_crops:
        pipelines.append(key_crop)
        keys.append("sig_key")
    if n_segments:
        pipelines.append(segments)
        keys += ["segments", "teacher_segments"]
    for p in pipelines:
        dataset.add_dynamic_item(p)
    dataset.set_output_keys(keys)
    return dataset


def dataio_prep(hparams: dict) -> dict:
    """Datasets, label encoder, batch sampler and face teacher tables from the recipe's ``hparams``.

    Keys read: ``train_annotation``, ``valid_annotation`` (may be null), ``face_dim``,
    ``crop_min``, ``crop_max``, ``two_crops``, ``n_segments``, ``segment_duration``,
    ``identities_per_batch``, ``samples_per_identity``, ``face_identities_per_batch``,
    ``batches_per_epoch``, ``seed``, ``save_folder``, ``max_train_samples`` (optional cap).
    """
    train_csv = Path(hparams["train_annotation"])
    rows = read_manifest(train_csv, hparams["face_dim"])
    if hparams.get("max_train_samples"):
        rows = _cap_rows(rows, int(hparams["max_train_samples"]))
        train_csv = _write_subset(train_csv, rows, Path(hparams["save_folder"]) / "train_subset.csv")
    check_identities(rows, train_csv)
    label_encoder = build_label_encoder(rows, Path(hparams["save_folder"]) / "label_encoder.txt")
    common = dict(
        crop_min=hparams["crop_min"], crop_max=hparams["crop_max"], face_dim=hparams["face_dim"],
        n_segments=hparams.get("n_segments", 0), segment_duration=hparams.get("segment_duration", 0.5),
    )
    caches = {"train": None, "valid": None}
    if hparams.get("trunk_cache"):
        from xmodal_diar.training.trunk_cache import build_trunk_cache

        caches["train"] = build_trunk_cache(
            hparams["encoder"], rows, Path(hparams["trunk_cache"]) / "train.pt", train=True,
            crops_per_turn=hparams.get("trunk_cache_crops", 2), seed=hparams.get("trunk_cache_seed", 0),
            **{k: v for k, v in common.items() if k != "face_dim"},
        )
    train = make_dataset(train_csv, rows, label_encoder, train=True, two_crops=hparams.get("two_crops", False),
                         trunk_cache=caches["train"], **common)
    face_ids = sorted({r["spk_id"] for r in rows if r["face"] is not None})
    sampler = IdentityBatchSampler(
        [r["spk_id"] for r in rows],
        identities_per_batch=hparams["identities_per_batch"],
        samples_per_identity=hparams["samples_per_identity"],
        face_identities=face_ids,
        face_identities_per_batch=hparams.get("face_identities_per_batch", 0),
        n_batches=hparams.get("batches_per_epoch"),
        seed=hparams.get("seed", 0),
    )
    valid = None
    if hparams.get("valid_annotation"):
        valid_rows = read_manifest(hparams["valid_annotation"], hparams["face_dim"])
        valid_rows = [r for r in valid_rows if r["spk_id"] in label_encoder.lab2ind] or valid_rows
        valid_encoder = label_encoder if all(r["spk_id"] in label_encoder.lab2ind for r in valid_rows) else \
            build_label_encoder(valid_rows)
        if hparams.get("trunk_cache"):
            caches["valid"] = build_trunk_cache(hparams["encoder"], valid_rows, Path(hparams["trunk_cache"]) / "valid.pt",
                                                train=False, crop_max=hparams["crop_max"])
        valid = make_dataset(hparams["valid_annotation"], valid_rows, valid_encoder, train=False,
                             trunk_cache=caches["valid"], **common)
    centroids, face_rows = identity_face_centroids(rows, label_encoder)
    logger.info(
        "train: %d turns, %d identities, %d with faces (%d turns)", len(rows), len(label_encoder),
        len(face_ids), sum(r["face"] is not None for r in rows),
    )
    return {
        "train": train, "valid": valid, "label_encoder": label_encoder, "sampler": sampler,
        "face_centroids": centroids, "face_rows": face_rows, "rows": rows,
    }


def _cap_rows(rows: list[dict], n: int) -> list[dict]:
    """At most ``n`` rows, keeping whole identities, face identities first (tiny smoke runs)."""
    by_identity = defaultdict(list)
    for r in rows:
        by_identity[r["spk_id"]].append(r)
    order = sorted(by_identity, key=lambda s: (all(r["face"] is None for r in by_identity[s]), s))
    kept = []
    for spk in order:
        if len(kept) + len(by_identity[spk]) > n and len(kept) >= 2:
            continue
        kept += by_identity[spk]
    return kept


def _write_subset(source: Path, rows: list[dict], path: Path) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(source, newline="") as f:
        raw = {r["ID"]: r for r in csv.DictReader(f)}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(next(iter(raw.values())).keys()))
        writer.writeheader()
        writer.writerows(raw[r["ID"]] for r in rows)
    return path
