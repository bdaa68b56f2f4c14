"""Plots (matplotlib, headless): what a person would rather look at than read."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

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
    _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, logx=logx, legend_size=8)


def _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, *, logx=True, legend_size=8):
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    finite = accuracy[np.isfinite(accuracy)]
    ax.set_ylim(np.percentile(finite, 1) - 5, finite.max() + 1)  # the few degenerate cells fall below
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def found_cells(cost: np.ndarray, accuracy: np.ndarray, found: Mapping[str, Sequence[int]], path: str | os.PathLike,
                *, reference: tuple[str, int] | None = None, xlabel: str = "estimated MCU latency (ms)",
                ylabel: str = "NB201 test accuracy (%)", title: str = "") -> None:
    """Every cell (grey), the cells found per configuration (one colour each, one marker per
    search), their mean (a large cross) and a reference cell."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(cost, accuracy, s=2, c="0.7", lw=0, label=f"all {len(cost):,} cells", rasterized=True)
    for n, (name, indices) in enumerate(found.items()):
        idx = np.asarray(indices)
        ax.scatter(cost[idx], accuracy[idx], s=30, color=f"C{n}", edgecolor="k", alpha=0.7, zorder=3,
                   label=f"{name} ({len(idx)})")
        ax.scatter(cost[idx].mean(), accuracy[idx].mean(), s=150, marker="X", color=f"C{n}", edgecolor="k", zorder=4)
    if reference is not None:
        ax.scatter(cost[reference[1]], accuracy[reference[1]], s=80, marker="*", color="k", zorder=4,
                   label=reference[0])
    _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, legend_size=7)
