"""Report figures: DET curves on normal-deviate axes, purity/coverage curves, diarization
timelines (matplotlib, Agg)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Union

import numpy as np

from xmodal_diar.eval.clustering import ClusteringCurve
from xmodal_diar.eval.verification import DETCurve

PathLike = Union[str, Path]
#: Tick positions of the DET axes, in %.
DET_TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40)


@contextmanager
def _square_figure(path: PathLike, title: str, curves: Mapping) -> Iterator:
    """Yield the axes of a 5x5 in figure; on exit add title, grid, legend and save to ``path``."""
    if not curves:
        raise ValueError("curves: nothing to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        yield ax
        ax.set_title(title)
        ax.grid(True, lw=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        from xmodal_diar.outputs import atomic_write

        with atomic_write(path, "wb") as fp:  # no partial PNG on a full disk
            fig.savefig(fp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def plot_det(curves: Mapping[str, DETCurve], path: PathLike, title: str = "DET") -> Path:
    """DET curves (miss vs false alarm) on normal-deviate axes (``scipy.stats.norm.ppf``)."""
    from scipy.stats import norm

    lo, hi = 0.0005, 0.5
    with _square_figure(path, title, curves) as ax:
        for name, c in curves.items():
            fa = np.clip(c.false_alarm, lo, hi)
            miss = np.clip(c.miss, lo, hi)
            ax.plot(norm.ppf(fa), norm.ppf(miss), label=name)
        ticks = norm.ppf(np.array(DET_TICKS) / 100)
        labels = [f"{t:g}" for t in DET_TICKS]
        ax.set_xticks(ticks, labels)
        ax.set_yticks(ticks, labels)
        ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
        ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
        ax.plot([norm.ppf(lo), norm.ppf(hi)], [norm.ppf(lo), norm.ppf(hi)], ":", color="grey", lw=0.8)
        ax.set_xlabel("false alarm rate (%)")
        ax.set_ylabel("miss rate (%)")
    return Path(path)


def plot_purity_coverage(curves: Mapping[str, ClusteringCurve], path: PathLike, title: str = "turn clustering") -> Path:
    """Coverage against purity along the threshold sweep, one line per curve."""
    with _square_figure(path, title, curves) as ax:
        for name, c in curves.items():
            (line,) = ax.plot(100 * c.purity, 100 * c.coverage, label=name)
            k = c.operating_point()
            ax.plot(100 * c.purity[k], 100 * c.coverage[k], "o", color=line.get_color())
        ax.plot([0, 100], [0, 100], ":", color="grey", lw=0.8)
        ax.set_xlabel("purity (%)")
        ax.set_ylabel("coverage (%)")
        ax.set_xlim(0, 101)
        ax.set_ylim(0, 101)
    return Path(path)


def timeline_colours(hypothesis, reference=None) -> tuple[dict, dict]:
    """Colour indices ``(reference {label: k}, hypothesis {label: k})``: reference speakers in
    sorted order; each hypothesis speaker takes the colour of the reference speaker that
    pyannote.metrics' optimal mapping (the one DER uses) assigns to it, unmapped ones the
    next free colours."""
    ref_colour = {label: k for k, label in enumerate(sorted(reference.labels()))} if reference is not None else {}
    mapping = {}
    if reference is not None and len(reference) and len(hypothesis):
        from pyannote.metrics.diarization import DiarizationErrorRate

        mapping = DiarizationErrorRate().optimal_mapping(reference, hypothesis)
    hyp_colour, free = {}, len(ref_colour)
    for label in sorted(hypothesis.labels()):
        if label in mapping:
            hyp_colour[label] = ref_colour[mapping[label]]
        else:
            hyp_colour[label], free = free, free + 1
    return ref_colour, hyp_colour


def timeline_title(hypothesis, reference=None, name: str = "") -> str:
    """``<file name>`` and, with a reference, ``DER x.x %`` (pyannote.metrics, collar 0,
    overlap scored, over the whole span of both annotations)."""
    title = hypothesis.uri or name or "diarization"
    if reference is None:
        return title
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    end = max([a.get_timeline().extent().end for a in (reference, hypothesis) if len(a)] + [0.0])
    uem = Timeline([Segment(0.0, end)]) if end > 0 else None
    der = DiarizationErrorRate()(reference, hypothesis, uem=uem) if uem is not None else float("nan")
    return f"{title} - DER {100 * der:.1f} %"


def plot_timeline(path: PathLike, hypothesis, reference=None) -> Path:
    """PNG timeline of ``hypothesis`` (under ``reference`` when given), titled with the file
    name and DER, hypothesis colours matching their mapped reference speakers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ref_colour, hyp_colour = timeline_colours(hypothesis, reference)
    rows = [("hypothesis", hypothesis, hyp_colour)]
    if reference is not None:
        rows.insert(0, ("reference", reference, ref_colour))
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.5 + 1.0 * len(rows)), sharex=True, squeeze=False)
    extent = max([a.get_timeline().extent().end for _, a, _ in rows if len(a)] + [1.0])
    cmap = plt.get_cmap("tab20")
    try:
        for ax, (name, annotation, colour) in zip(axes[:, 0], rows):
            labels = sorted(annotation.labels())
            for segment, _, label in annotation.itertracks(yield_label=True):
                k = labels.index(label)
                ax.broken_barh([(segment.start, segment.duration)], (k, 0.8), color=cmap(colour[label] % 20))
            ax.set_yticks([k + 0.4 for k in range(len(labels))], labels, fontsize=7)
            ax.set_ylabel(name)
            ax.set_xlim(0, extent)
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(timeline_title(hypothesis, reference, path.stem))
        fig.tight_layout()
        from xmodal_diar.outputs import atomic_write

        with atomic_write(path, "wb") as fp:  # no partial PNG on a full disk
            fig.savefig(fp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
