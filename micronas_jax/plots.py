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
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=120)
    ax.scatter(cost, accuracy, s=2, c="0.7", lw=0, label=f"all {len(cost):,} cells", rasterized=True)
    if front is not None and len(front):
        ax.plot(cost[front], accuracy[front], "k-", lw=1, drawstyle="steps-post", label="Pareto front")
    for n, (name, index) in enumerate((highlight or {}).items()):
        ax.scatter(cost[index], accuracy[index], s=40, color=f"C{n}", edgecolor="k", zorder=3, label=name)
    _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, logx=logx, legend_size=8)


def _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, *, logx=True, legend_size=8,
                          bottom=None, legend_outside=False):
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    finite = accuracy[np.isfinite(accuracy)]
    if bottom is None:
        bottom = np.percentile(finite, 1) - 5  # the few degenerate cells fall below
    ax.set_ylim(bottom, finite.max() + 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if legend_outside:
        ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=legend_size, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def found_cells(cost: np.ndarray, accuracy: np.ndarray, found: Mapping[str, Sequence[int]], path: str | os.PathLike,
                *, reference: tuple[str, int] | None = None, front: np.ndarray | None = None,
                xlabel: str = "estimated MCU latency (ms)", ylabel: str = "NB201 test accuracy (%)",
                title: str = "") -> None:
    """Every cell (grey), optionally their Pareto front, the cells found per configuration (one
    colour each, one marker per search), their mean (a large cross) and a reference cell."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=120)
    ax.scatter(cost, accuracy, s=2, c="0.7", lw=0, label=f"all {len(cost):,} cells", rasterized=True)
    if front is not None and len(front):
        ax.plot(cost[front], accuracy[front], "k-", lw=1, drawstyle="steps-post", label="Pareto front")
    for n, (name, indices) in enumerate(found.items()):
        idx = np.asarray(indices)
        ax.scatter(cost[idx], accuracy[idx], s=30, color=f"C{n}", edgecolor="k", alpha=0.7, zorder=3,
                   label=f"{name} ({len(idx)})")
        ax.scatter(cost[idx].mean(), accuracy[idx].mean(), s=150, marker="X", color=f"C{n}", edgecolor="k", zorder=4)
    if reference is not None:
        ax.scatter(cost[reference[1]], accuracy[reference[1]], s=80, marker="*", color="k", zorder=4,
                   label=reference[0])
    shown = [i for idx in found.values() for i in idx] + ([reference[1]] if reference else [])
    bottom = min(accuracy[shown].min() - 3, np.percentile(accuracy, 50)) if shown else None
    _finish_accuracy_plot(plt, fig, ax, accuracy, path, xlabel, ylabel, title, legend_size=7, bottom=bottom,
                          legend_outside=True)


def batch_size_study(rows: Sequence[Mapping], path: str | os.PathLike, *, title: str = "") -> None:
    """Kendall tau (mean +- std over draws) of the NTK and of NTK + LR against batch size (log
    scale), and the engine's seconds per cell and draw on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    b = np.array([r["batch_size"] for r in rows])
    for n, (key, label) in enumerate((("ntk_tau", "NTK condition number"), ("ntk_regions_tau", "NTK + LR ranks"))):
        ax.errorbar(b, [r[key]["mean"] for r in rows], yerr=[r[key]["std"] for r in rows], marker="o",
                    capsize=3, color=f"C{n}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [str(x) for x in b])
    ax.set_xlabel("NTK batch size")
    ax.set_ylabel("Kendall tau vs test accuracy")
    ax.grid(alpha=0.3)
    cost = ax.twinx()
    # One cost line per timing host: times taken on different machines are not one curve.
    hosts = [", ".join(r.get("timed_on") or ["host unrecorded"]) for r in rows]
    for n, host in enumerate(dict.fromkeys(hosts)):
        at = [i for i, h in enumerate(hosts) if h == host]
        cost.plot(b[at], [rows[i]["seconds_per_cell_draw"] for i in at], "k" + ("--", ":", "-.")[n % 3],
                  marker="sD^"[n % 3], ms=4, label=f"s / cell and draw, {host} (right)")
    cost.set_yscale("log")
    cost.set_ylabel("engine seconds per cell and draw")
    handles = ax.get_legend_handles_labels()[0] + cost.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
