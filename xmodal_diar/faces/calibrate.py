"""Measure a face embedder's calibration on real faces and print the faces README table.

    python -m xmodal_diar.faces.calibrate [--embedder dlib] [--out benchmarks/results/face_calibration.json]

Data (``$XMODAL_DATA``, default ``../shared/data``):

- fitted on: ORL people ``s21``-``s40`` (single images, all pairs) and the celebrities'
  train photos. Single images, not means: a person's face tracks from different
  recordings vary like single photos do (fitted on 3-image means, the threshold was 0.053,
  at the farthest held-out same-person track pair, and th01's two clips became two
  people in ``benchmarks/video.py``);
- reported on, not fitted: ORL ``s1``-``s20`` (the mean embedding of images 1-3, 4-6 and
  7-9 of each person: three "tracks" per person), and the talking-head clips' face tracks
  (mean of each half of a clip's main track; same person: the two halves, and th01's two
  clips; different: different identities).

The fit is :func:`xmodal_diar.faces.calibration.fit_calibration`; the table gives, per
set, the pair counts, the distance ranges, the EER and the error rates at the fitted
threshold (false merges: different people called the same; false splits).

It also measures, on the talking-head clips, the two thresholds of track purity:

- identity jumps: the cosine distance of one face to the mean of the faces before it in
  its own track (largest, two in a row) and to the mean of another identity's track
  (smallest), on the clips of th01-th05 (fit: the factor over the calibrated threshold
  that lies halfway, in log scale, between the two) and reported on th06-th09;
- shot cuts: the histogram distance between consecutive decoded frames within a clip
  (largest) and across a junction of two clips (smallest), same split.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from xmodal_diar.faces.calibration import cosine_distances, equal_error_rate, fit_calibration

GROUPS = ((1, 2, 3), (4, 5, 6), (7, 8, 9))
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "face_calibration.json"


def pair_distances(embeddings: np.ndarray, labels: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine distances of all same-label and all different-label pairs (i < j)."""
    d = cosine_distances(embeddings, embeddings)
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return d[i, j][same], d[i, j][~same]


def _mean(vectors: List[np.ndarray]) -> np.ndarray:
    m = np.mean(np.stack(vectors), axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def orl_items(root: Path, extractor, people: Sequence[int]) -> Dict[str, Tuple[np.ndarray, list]]:
    """ORL single images and 3-image means of ``people``: {"single": (E, labels), "mean3": (E, labels)}."""
    from xmodal_diar.faces.video import load_image

    single, single_labels, means, mean_labels = [], [], [], []
    for person in people:
        by_shot = {}
        for shot in range(1, 11):
            found = extractor(load_image(root / f"s{person}" / f"{shot}.pgm"))
            if found:
                by_shot[shot] = found[0].embedding
                single.append(found[0].embedding)
                single_labels.append(person)
        for group in GROUPS:
            vectors = [by_shot[s] for s in group if s in by_shot]
            if vectors:
                means.append(_mean(vectors))
                mean_labels.append(person)
    return {"single": (np.stack(single), single_labels), "mean3": (np.stack(means), mean_labels)}


def celebrity_items(root: Path, extractor) -> Tuple[np.ndarray, list]:
    from xmodal_diar.faces.video import load_image

    embeddings, labels = [], []
    for photo in sorted(root.glob("train/*/*")):
        found = extractor(load_image(photo))
        if found:
            embeddings.append(found[0].embedding)
            labels.append(photo.parent.name)
    return np.stack(embeddings), labels


def talking_head_items(root: Path, extractor) -> Tuple[np.ndarray, list]:
    """Mean embedding of each half of each clip's longest track, labelled by identity."""
    from xmodal_diar.faces import extract_face_tracks

    identity = _identities(root)
    embeddings, labels = [], []
    for clip, who in sorted(identity.items()):
        tracks = extract_face_tracks(root / f"{clip}.mp4", extractor=extractor, identity_threshold=10.0)
        track = tracks.dominant_track()
        vectors = [d.embedding for d in track.detections if d.embedding is not None]
        half = len(vectors) // 2
        for part in (vectors[:half], vectors[half:]):
            embeddings.append(_mean(part))
            labels.append(who)
    return np.stack(embeddings), labels


FIT_IDENTITIES = ("th01", "th02", "th03", "th04", "th05")


def _identities(root: Path) -> Dict[str, str]:
    with open(root / "identities.csv") as f:
        return {row["clip"]: row["identity"] for row in csv.DictReader(f)}


def identity_jump_distances(root: Path, extractor, clips: Sequence[str]) -> Tuple[float, float]:
    """What :func:`~xmodal_diar.faces.tracking.split_identity_jumps` sees, as cosine distances.

    Own: the largest ``min(d_i, d_i+1)`` over a clip's track, ``d_i`` the distance of its
    i-th embedded face to the mean of the faces before it (a split needs two in a row).
    Other: the smallest distance of a face to the mean of another identity's track.
    """
    from xmodal_diar.faces import extract_face_tracks

    identity = _identities(root)
    faces, means, who = [], [], []
    own = 0.0
    for clip in clips:
        track = extract_face_tracks(root / f"{clip}.mp4", extractor=extractor, identity_threshold=10.0).dominant_track()
        vectors = np.stack([d.embedding for d in track.detections if d.embedding is not None])
        running = [float(cosine_distances(vectors[i : i + 1], _mean(list(vectors[:i]))[None])[0, 0])
                   for i in range(1, len(vectors))]
        own = max([own] + [min(a, b) for a, b in zip(running, running[1:])])
        faces.append(vectors)
        means.append(_mean(list(vectors)))
        who.append(identity[clip])
    other = min(
        float(cosine_distances(faces[a], means[b][None]).min())
        for a in range(len(clips)) for b in range(len(clips)) if who[a] != who[b]
    )
    return own, other


def shot_distances(root: Path, clips: Sequence[str]) -> Tuple[float, float]:
    """(largest within-clip, smallest across-junction) histogram distance of consecutive frames."""
    from xmodal_diar.faces.shots import color_histogram
    from xmodal_diar.faces.video import iter_frames

    hists = {c: [color_histogram(rgb) for _, _, rgb in iter_frames(root / f"{c}.mp4", None, size=(64, 64))] for c in clips}

    def tv(a, b):
        return 0.5 * float(np.abs(a - b).sum())

    within = max(tv(a, b) for h in hists.values() for a, b in zip(h, h[1:]))
    across = min(tv(hists[a][-1], hists[b][0]) for a, b in itertools.permutations(clips, 2))
    return within, across


def summarize(name: str, same: np.ndarray, different: np.ndarray, threshold: float) -> dict:
    return {
        "set": name,
        "same_pairs": int(len(same)),
        "different_pairs": int(len(different)),
        "same_range": [float(same.min()), float(same.max())],
        "different_range": [float(different.min()), float(different.max())],
        "eer": equal_error_rate(same, different),
        "false_split": float(np.mean(same >= threshold)),
        "false_merge": float(np.mean(different < threshold)),
        "false_merge_at_0.3": float(np.mean(different < 0.3)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", default="dlib", help="face embedder (default: dlib)")
    parser.add_argument("--detector", default="blazeface")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "xmodal-diar" / "face_calibration_measures.npz",
        help="measured distances are kept here; --from-cache refits from them without re-extracting faces",
    )
    parser.add_argument("--from-cache", action="store_true")
    parser.add_argument("--remeasure", nargs="*", default=(), choices=("jump",),
                        help="with --from-cache: measure these parts again (jump: identity jumps)")
    args = parser.parse_args(argv)

    if args.from_cache:
        with np.load(args.cache, allow_pickle=False) as cached:
            measures = {k: cached[k] for k in cached.files}
        if "jump" in args.remeasure:
            measures.update(measure_jumps(args.detector, args.embedder))
            np.savez_compressed(args.cache, **measures)
    else:
        measures = measure(args.detector, args.embedder)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.cache, **measures)
    return report(measures, args)


def measure(detector: str, embedder: str) -> Dict[str, np.ndarray]:
    """Every distance the calibration needs, from real faces (the slow part)."""
    import torch

    from xmodal_diar.faces import FaceExtractor
    from xmodal_diar.shared_data import require_shared_data

    torch.set_num_threads(1)
    extractor = FaceExtractor(detector, "dlib5", embedder, keep_aligned=False)
    faces = require_shared_data("faces")
    orl_train = orl_items(faces / "orl", extractor, range(1, 21))
    orl_test = orl_items(faces / "orl", extractor, range(21, 41))
    celebrities = celebrity_items(faces / "celebrities", extractor)
    root = require_shared_data("talking-heads")
    heads = talking_head_items(root, extractor)
    identity = _identities(root)
    fit_clips = sorted(c for c, w in identity.items() if w in FIT_IDENTITIES)
    test_clips = sorted(c for c, w in identity.items() if w not in FIT_IDENTITIES)
    out = {}
    for key, (embeddings, labels) in {
        "orl_train_mean3": orl_train["mean3"], "celebrities": celebrities, "orl_test_mean3": orl_test["mean3"],
        "orl_test_single": orl_test["single"], "heads": heads,
    }.items():
        out[f"{key}_same"], out[f"{key}_diff"] = pair_distances(embeddings, labels)
    out.update(measure_jumps(detector, embedder))
    out["shots_fit"] = np.array(shot_distances(root, fit_clips))
    out["shots_test"] = np.array(shot_distances(root, test_clips))
    extractor.close()
    return out


def measure_jumps(detector: str, embedder: str) -> Dict[str, np.ndarray]:
    import torch

    from xmodal_diar.faces import FaceExtractor
    from xmodal_diar.shared_data import require_shared_data

    torch.set_num_threads(1)
    extractor = FaceExtractor(detector, "dlib5", embedder, keep_aligned=False)
    root = require_shared_data("talking-heads")
    identity = _identities(root)
    fit = sorted(c for c, w in identity.items() if w in FIT_IDENTITIES)
    test = sorted(c for c, w in identity.items() if w not in FIT_IDENTITIES)
    return {"jump_fit": np.array(identity_jump_distances(root, extractor, fit)),
            "jump_test": np.array(identity_jump_distances(root, extractor, test))}


def report(measures: Dict[str, np.ndarray], args) -> int:
    """Fit on the fitting sets, print the README tables, write the JSON."""
    from xmodal_diar.outputs import write_text

    m = measures
    fit_same = [m["orl_test_single_same"], m["celebrities_same"]]
    fit_diff = [m["orl_test_single_diff"], m["celebrities_diff"]]
    source = "python -m xmodal_diar.faces.calibrate: ORL s21-s40 single images + celebrities train"
    calibration = fit_calibration(np.concatenate(fit_same), np.concatenate(fit_diff), source)

    sets = {
        "fit: ORL s21-s40 single images + celebrities": (np.concatenate(fit_same), np.concatenate(fit_diff)),
        "held out: ORL s1-s20 3-image means": (m["orl_train_mean3_same"], m["orl_train_mean3_diff"]),
        "held out: talking-head track halves": (m["heads_same"], m["heads_diff"]),
    }
    rows = [summarize(name, s, d, calibration.threshold) for name, (s, d) in sets.items()]

    jump_fit, jump_test = m["jump_fit"].tolist(), m["jump_test"].tolist()
    jump_factor = float(np.sqrt(jump_fit[0] * jump_fit[1])) / calibration.threshold
    shots_fit, shots_test = m["shots_fit"].tolist(), m["shots_test"].tolist()
    shot_threshold = float(np.sqrt(shots_fit[0] * shots_fit[1]))
    report = {
        "embedder": args.embedder,
        "detector": args.detector,
        "calibration": {"threshold": calibration.threshold, "scale": calibration.scale, "source": source},
        "sets": rows,
        "identity_jump": {"factor": jump_factor, "threshold": jump_factor * calibration.threshold,
                          "fit_own_max_other_min": jump_fit, "test_own_max_other_min": jump_test,
                          "fit_identities": list(FIT_IDENTITIES)},
        "shot_cut": {"threshold": shot_threshold, "fit_within_max_across_min": shots_fit,
                     "test_within_max_across_min": shots_test},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(report, indent=2) + "\n")

    print(f"{args.embedder}: threshold {calibration.threshold:.4f} (cosine distance), scale {calibration.scale:.2f} per unit")
    print("| set | same / diff pairs | same d | different d | EER | false split | false merge | false merge at 0.3 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['set']} | {r['same_pairs']} / {r['different_pairs']} "
            f"| {r['same_range'][0]:.3f}-{r['same_range'][1]:.3f} | {r['different_range'][0]:.3f}-{r['different_range'][1]:.3f} "
            f"| {100 * r['eer']:.1f} % | {100 * r['false_split']:.1f} % | {100 * r['false_merge']:.1f} % "
            f"| {100 * r['false_merge_at_0.3']:.1f} % |"
        )
    print(
        f"identity jump: face to the mean of its track so far <= {jump_fit[0]:.3f} (two in a row), "
        f"to another identity's track mean >= {jump_fit[1]:.3f} "
        f"(fit clips); held out {jump_test[0]:.3f} / {jump_test[1]:.3f}; threshold {jump_factor * calibration.threshold:.3f} "
        f"= {jump_factor:.2f} x calibrated threshold"
    )
    print(
        f"shot cuts: consecutive-frame histogram distance within clips <= {shots_fit[0]:.3f}, across junctions "
        f">= {shots_fit[1]:.3f} (fit clips); held out {shots_test[0]:.3f} / {shots_test[1]:.3f}; threshold {shot_threshold:.3f}"
    )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
