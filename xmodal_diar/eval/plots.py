"""Report figures: DET curves on normal-deviate axes, purity/coverage curves (matplotlib, Agg)."""

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
