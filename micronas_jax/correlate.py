"""How well the proxies rank NB201 cells: scores over the space (resumable) and rank correlations.

Scores go to a JSONL cache, one line per (cell, seed), after each chunk of cells, so a killed run
resumes where it stopped; the first line fingerprints the configuration and a cache made under
another one is refused.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from scipy import stats
from tqdm import tqdm

from cells import skeleton as sk
from cells import space
from micronas_jax import benchmark, search
from micronas_jax.hardware import flops
from micronas_jax.hardware import latency as latency_lib
from micronas_jax.proxies import engine as engine_lib

CHUNK = 16  # cells per engine call: the linear-region count is vmapped over a fixed chunk


def sample_indices(n: int | None, seed: int) -> np.ndarray:
    """``n`` distinct NB201 indices drawn with ``seed``; all 15,625 when n is None or 0. In random
    order either way, so the cells a stopped run has scored are a uniform sample."""
    order = np.random.default_rng(seed).permutation(space.NUM_CELLS)
    return order if not n else order[:n]


def within_latency(indices: Sequence[int], max_ms: float, dataset: str = "cifar10",
                   latency_ms: np.ndarray | None = None) -> np.ndarray:
    """The cells of ``indices`` (order kept) whose estimated latency is at most ``max_ms``: the
    cells a latency budget allows, so that a budget study scores only those.

    ``latency_ms``: float64[15625] by NB201 index (default: the default device's LUT on
    ``dataset``'s C = 16, N = 5 network)."""
    idx = np.asarray(indices, np.int64)
    return idx[_space_latency(dataset, latency_ms)[idx] <= max_ms]


def _space_latency(dataset: str, latency_ms: np.ndarray | None) -> np.ndarray:
    """float64[15625]: ``latency_ms``, or every cell's latency on the default device's LUT for
    ``dataset``'s C = 16, N = 5 network."""
    if latency_ms is None:
        latency_ms = latency_lib.latency_all(skeleton=sk.Skeleton.for_dataset(dataset))
    return np.asarray(latency_ms, np.float64)


def fingerprint(config: engine_lib.ProxyConfig, source: str, seed: int) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    d["ntk_mode"] = config.ntk_mode.value
    return {"config": d, "inputs": source, "seed": seed}


def _read_cache(path: str, header: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    done: dict[tuple[int, int], dict[str, Any]] = {}
    if not os.path.exists(path):
        return done
    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    if not lines:
        return done
    if not text.endswith("\n"):  # killed between a record and its newline: end the line
        with open(path, "a") as f:
            f.write("\n")
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError as err:
        raise ValueError(f"scores cache {path} is corrupt at line 1: {err}") from None
    if first.get("header") != header:
        raise ValueError(f"scores cache {path} was made with another configuration: {first.get('header')} "
                         f"(now {header}); use another --cache path")
    for n, line in enumerate(lines[1:], start=2):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a line cut short by a kill: drop it, so appends start clean
                logging.warning("scores cache %s: dropping a truncated last line", path)
                with open(path, "w") as f:
                    f.write("\n".join(lines[:-1]) + "\n")
                continue
            raise ValueError(f"scores cache {path} is corrupt at line {n}") from None
        done[(r["index"], r["seed"])] = r
    return done


def score_space(engine: engine_lib.ProxyEngine, indices: Sequence[int], repeats: int, seed: int,
                cache_path: str, *, progress: bool = True, only_cached: bool = False) -> dict[str, np.ndarray]:
    """NTK condition numbers and region counts of ``indices`` x ``repeats`` seeds, cached.

    With ``only_cached``, nothing is scored: the result covers the cells of ``indices`` already in
    the cache (with ``sample_indices``' random order, a uniform sample of them).

    Returns:
      'index' int[n]; 'ntk' float64[n, repeats] (inf where flagged); 'ntk_flag' str[n, repeats];
      'regions' int64[n, repeats]; 'seconds' float64[n] (engine wall time per cell and draw, both
      proxies); 'timed_on' str[n, repeats] (``engine.timed_on()`` when scored; 'unrecorded' in
      caches older than that field).
    """
    header = fingerprint(engine.config, engine.source.describe(), seed)
    done = _read_cache(cache_path, header)
    if not os.path.exists(cache_path) or os.path.getsize(cache_path) == 0:
        with open(cache_path, "w") as f:
            f.write(json.dumps({"header": header}) + "\n")
    keys = engine_lib.seed_keys(seed, repeats)
    if only_cached:
        indices = [i for i in indices if all((int(i), r) in done for r in range(repeats))]
        if not indices:
            raise ValueError(f"scores cache {cache_path} holds none of the requested cells")
    # Draw-major: a stopped run leaves whole draws over a uniform sample of cells.
    todo = [[int(i) for i in indices if (int(i), r) not in done] for r in range(repeats)]
    logging.info("%d of %d (cell, draw) pairs cached; scoring %d", len(indices) * repeats - sum(map(len, todo)),
                 len(indices) * repeats, sum(map(len, todo)))
    timed_on = engine_lib.timed_on()
    with tqdm(total=sum(map(len, todo)), disable=not progress, desc="scoring cells", unit="cell") as bar:
        for r, cells in enumerate(todo):
            for start in range(0, len(cells), CHUNK):
                chunk = cells[start:start + CHUNK]
                t0 = time.perf_counter()
                scored = engine.score_cells(chunk, keys[r:r + 1], pad_to=CHUNK)
                seconds = (time.perf_counter() - t0) / len(chunk)
                with open(cache_path, "a") as f:
                    for k, index in enumerate(chunk):
                        rec = {"index": index, "seed": r, "ntk": _num(scored["ntk"][k, 0]),
                               "flag": str(scored["ntk_flag"][k, 0]), "regions": int(scored["regions"][k, 0]),
                               "seconds": seconds, "draws_timed": 1, "timed_on": timed_on}
                        done[(index, r)] = rec
                        f.write(json.dumps(rec) + "\n")
                bar.update(len(chunk))
    idx = np.asarray(indices, np.int64)
    recs = [[done[(int(i), r)] for r in range(repeats)] for i in idx]
    get = lambda field: [[rec[field] for rec in row] for row in recs]  # noqa: E731
    return {"index": idx, "ntk": np.array(get("ntk"), np.float64), "ntk_flag": np.array(get("flag")),
            "regions": np.array(get("regions"), np.int64), "seconds": _seconds_per_draw(done, idx, repeats),
            "timed_on": np.array([[rec.get("timed_on", engine_lib.UNRECORDED) for rec in row] for row in recs])}


def hosts(scores: dict[str, np.ndarray]) -> list[str]:
    """The distinct hosts that ``score_space``'s scores were timed on."""
    return sorted(set(scores["timed_on"].ravel().tolist()))


def _seconds_per_draw(done: dict, idx: np.ndarray, repeats: int) -> np.ndarray:
    """float64[n]: engine seconds per (cell, draw), both proxies, averaged over the cell's draws.

    A record timed ``draws_timed`` draws; caches written before that field timed all of a cell's
    draws in one call, so there each record's time covers all the cell's records without the field
    (also those not asked for now).
    """
    legacy = collections.Counter(i for (i, _), rec in done.items() if "draws_timed" not in rec)
    out = np.empty(len(idx))
    for n, i in enumerate(idx):
        recs = [done[(int(i), r)] for r in range(repeats)]
        out[n] = np.mean([rec["seconds"] / rec.get("draws_timed", legacy[int(i)]) for rec in recs])
    return out


def infinite_last(score: np.ndarray) -> np.ndarray:
    """Higher-is-better scores with every non-finite one (a flagged NTK) set just below the lowest
    finite score, so that it ranks last."""
    score = np.asarray(score, np.float64)
    finite = score[np.isfinite(score)]
    floor = finite.min() - 1.0 if len(finite) else 0.0
    return np.where(np.isfinite(score), score, floor)


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"


def proxy_scores(scores: dict[str, np.ndarray], dataset: str = "cifar10") -> dict[str, np.ndarray]:
    """Higher-is-better scores per proxy, averaged over seeds, for the scored cells.

    'ntk': -log(condition number) (a flagged, infinite condition ranks last); 'regions': the count;
    'ntk+regions': minus the sum of the two ranks (TE-NAS's combination); 'flops': NB201 FLOPs of
    the dataset's network; 'ntk+regions+flops': minus the sum of all three ranks, FLOPs rewarded
    (what a search with ``w_flops = -1`` aims at).
    """
    ntk = -np.log(np.asarray(scores["ntk"], np.float64)).mean(axis=1)  # -inf where infinite
    regions = np.asarray(scores["regions"], np.float64).mean(axis=1)
    rank_sum = stats.rankdata(-ntk) + stats.rankdata(-regions)  # rank 1 = best
    f = flops.cost_table(sk.Skeleton.for_dataset(dataset)).flops(space.all_matrices()[scores["index"]])
    f = f.astype(np.float64)
    return {"ntk": ntk, "regions": regions, "ntk+regions": -rank_sum, "flops": f,
            "ntk+regions+flops": -(rank_sum + stats.rankdata(-f))}


def correlations(scores: dict[str, np.ndarray], datasets: Sequence[str] = benchmark.DATASETS) -> dict[str, Any]:
    """Kendall tau and Spearman rho of each proxy against each dataset's NB201 test accuracy."""
    bench = benchmark.BuiltinBenchmark()
    out: dict[str, Any] = {}
    for dataset in datasets:
        acc = bench.test_accuracies(dataset)[scores["index"]]
        per = {}
        for name, s in proxy_scores(scores, dataset).items():
            s = infinite_last(s)
            per[name] = {"kendall_tau": float(stats.kendalltau(s, acc).statistic),
                         "spearman_rho": float(stats.spearmanr(s, acc).statistic)}
        out[dataset] = per
    return out


def _pick(order: np.ndarray, index: np.ndarray, acc: np.ndarray, lat: np.ndarray, top_k: int) -> dict[str, Any]:
    """The first cell of ``order`` (positions into the aligned ``index``, ``acc``, ``lat``) and the
    mean accuracy and latency of its first ``top_k``."""
    top = order[:top_k]
    return {"index": int(index[order[0]]), "accuracy": float(acc[order[0]]), "latency_ms": float(lat[order[0]]),
            "top_k_accuracy": float(acc[top].mean()), "top_k_latency_ms": float(lat[top].mean())}


def budget_picks(scores: dict[str, np.ndarray], budget_ms: float, dataset: str = "cifar10", top_k: int = 10,
                 latency_ms: np.ndarray | None = None) -> dict[str, Any]:
    """What each proxy would pick among the scored cells that meet a latency budget.

    A reference point for budgeted searches guided by these proxies (an exhaustive pick, not a
    bound on a pruning search, whose indicators are measured on supernets): every proxy ranks the
    scored cells within the budget (the rank sum re-ranked among them), and its best cell and the
    mean of its ``top_k`` are reported with their accuracy and latency, beside the cells ranked by
    accuracy itself ('oracle') and the mean over all the cells within the budget ('all').

    Args:
      scores: ``score_space``'s output.
      budget_ms: the latency budget (ms).
      dataset: whose accuracies, and whose NB201 network's latency.
      top_k: how many of each proxy's best cells to average.
      latency_ms: float64[15625], every cell's latency by NB201 index (default: the default
        device's LUT on ``dataset``'s C = 16, N = 5 network).

    Returns:
      {'budget_ms', 'cells_within', 'top_k', 'picks': {proxy: {'index', 'accuracy', 'latency_ms',
      'top_k_accuracy', 'top_k_latency_ms'}}, 'all': {'accuracy', 'latency_ms'}}; raises
      ``ValueError`` when no scored cell meets the budget.
    """
    lat = _space_latency(dataset, latency_ms)[scores["index"]]
    within = lat <= budget_ms
    if not within.any():
        raise ValueError(f"no scored cell meets the latency budget {budget_ms:g} ms "
                         f"(the least latency among them is {lat.min():.4g} ms)")
    sub = {k: np.asarray(scores[k])[within] for k in ("index", "ntk", "regions")}  # what proxy_scores reads
    acc = benchmark.BuiltinBenchmark().test_accuracies(dataset)[sub["index"]]
    lat = lat[within]
    ranked = {name: np.argsort(-infinite_last(s), kind="stable") for name, s in proxy_scores(sub, dataset).items()}
    ranked["oracle"] = np.argsort(-acc, kind="stable")
    picks = {name: _pick(order, sub["index"], acc, lat, top_k) for name, order in ranked.items()}
    return {"budget_ms": float(budget_ms), "cells_within": int(within.sum()), "top_k": int(top_k), "picks": picks,
            "all": {"accuracy": float(acc.mean()), "latency_ms": float(lat.mean())}}


def weight_picks(scores: dict[str, np.ndarray], latency_weights: Sequence[float], dataset: str = "cifar10",
                 top_k: int = 10, latency_ms: np.ndarray | None = None) -> list[dict[str, Any]]:
    """What the search's own objective picks among the scored cells, at each latency weight.

    The cells with an input-output path are ranked exhaustively as the search's endgame ranks the
    cells it scores (``search.combine``'s dense ranks of the mean NTK condition number, infinite if
    any draw is, minus the mean region count, and the latency, weighted 1, 1 and w; ties to the
    lower NB201 index). A reference for latency-weighted searches: the cells a weight favours when
    every cell is compared directly, not through pruned supernets.

    Args:
      scores: ``score_space``'s output.
      latency_weights: the weights w to rank with.
      dataset: whose accuracies, and whose NB201 network's latency.
      top_k: how many of each weight's best cells to average.
      latency_ms: float64[15625], every cell's latency by NB201 index (default: the default
        device's LUT on ``dataset``'s C = 16, N = 5 network).

    Returns:
      one dict per weight: {'w_latency', 'cells', 'index', 'accuracy', 'latency_ms', 'top_k',
      'top_k_accuracy', 'top_k_latency_ms'}.
    """
    connected = latency_lib.live_edges(space.all_matrices()[scores["index"]], "dropped").any(-1)
    if not connected.any():
        raise ValueError("no scored cell has a path from input to output")
    keep = np.flatnonzero(connected)[np.argsort(scores["index"][connected], kind="stable")]  # ties to the lower index
    idx = scores["index"][keep]
    lat = _space_latency(dataset, latency_ms)[idx]
    indicators = {**search.cell_indicators(np.asarray(scores["ntk"])[keep], np.asarray(scores["regions"])[keep]),
                  "latency": lat}
    acc = benchmark.BuiltinBenchmark().test_accuracies(dataset)[idx]
    out = []
    for w in latency_weights:
        _, combined = search.combine(indicators, {"ntk": 1.0, "regions": 1.0, "latency": float(w)})
        order = np.argsort(combined, kind="stable")
        out.append({"w_latency": float(w), "cells": len(idx), "top_k": len(order[:top_k]),
                    **_pick(order, idx, acc, lat, top_k)})
    return out


def plot(scores: dict[str, np.ndarray], path: str, dataset: str = "cifar10", title: str = "") -> None:
    """Rank of each proxy against accuracy rank, one panel per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = benchmark.BuiltinBenchmark().test_accuracies(dataset)[scores["index"]]
    proxies = proxy_scores(scores, dataset)
    fig, axes = plt.subplots(1, len(proxies), figsize=(4 * len(proxies), 3.8), dpi=110)
    acc_rank = stats.rankdata(acc) / len(acc)
    for ax, (name, s) in zip(axes, proxies.items(), strict=True):
        s = infinite_last(s)
        tau = stats.kendalltau(s, acc).statistic
        ax.scatter(stats.rankdata(s) / len(s), acc_rank, s=3, alpha=0.4, lw=0)
        ax.set_title(f"{name}: Kendall tau {tau:.3f}", fontsize=9)
        ax.set_xlabel(f"{name} rank (1 = best)")
        ax.set_ylabel(f"{dataset} accuracy rank")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
