"""Plots (matplotlib, headless): what a person would rather look at than read."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cost_vs_accuracy(cost: np.ndarray, accuracy: np.ndarray, path: str | os.PathLike, *,
                     front: np.ndarray | None = None, highlight: Mapping[str, int] | None = None,
                     xlabel: str = "estimated MCU latency (ms)", ylabel: str = "NB201 test accuracy (%)",
                     title: str = "", logx: bool = True) -> None:
    """Scatter of every cell (grey), its Pareto front (black line) and named cells (coloured)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(cost, accuracy, s=2, c="0.7", lw=0, label=f"all {len(cost):,} cells", rasterized=True)
    if front is not None and len(front):
        ax.plot(cost[front], accuracy[front], "k-", lw=1, drawstyle="steps-post", label="Pareto front")
    for n, (name, index) in enumerate((highlight or {}).items()):
        ax.scatter(cost[index], accuracy[index], s=40, color=f"C{n}", edgecolor="k", zorder=3, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    finite = accuracy[np.isfinite(accuracy)]
    ax.set_ylim(np.percentile(finite, 1) - 5, finite.max() + 1)  # the few degenerate cells fall below
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
