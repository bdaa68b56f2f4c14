"""Measurements behind ``experiments/bench_proxies.py``: throughput, compile time, memory."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from cells import space
from micronas_jax.proxies import engine as engine_lib
from micronas_jax.proxies import ntk


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def round_masks(candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """A first pruning round as TE-NAS starts it: every op but ``none`` on every edge (base), and
    the first ``candidates`` of its 24 one-op-removed candidates."""
    base = np.ones((space.NUM_EDGES, space.NUM_OPS), np.float32)
    base[:, 0] = 0
    cands = []
    for e in range(space.NUM_EDGES):
        for o in range(1, space.NUM_OPS):
            c = base.copy()
            c[e, o] = 0
            cands.append(c)
    return base, np.stack(cands[:candidates])


def _time(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(cells: Sequence[int], *, modes: Sequence[str] = tuple(m.value for m in ntk.NTKMode),
        round_sizes: Sequence[int] = (1, 8, 24), repeats: int = 2, batch_size: int = 32,
        seed: int = 0) -> dict[str, Any]:
    """Candidates per second of each proxy, per mode, for single cells and pruning rounds."""
    cells = [int(c) for c in cells]
    rows: list[dict[str, Any]] = []
    for mode in modes:
        rows += _bench_mode(mode, cells, round_sizes, repeats, batch_size, seed)
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "batch_size": batch_size, "cells": cells,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows}


def _bench_mode(mode, cells, round_sizes, repeats, batch_size, seed) -> list[dict[str, Any]]:
    keys = engine_lib.seed_keys(seed, 1)
    eng = engine_lib.ProxyEngine(engine_lib.ProxyConfig(ntk_mode=mode, batch_size=batch_size))
    draw = eng.draw(keys[0])
    start = time.perf_counter()
    eng.ntk_jacobians_cells(cells[:1], draw)
    compile_cell = time.perf_counter() - start
    per_cell = [_time(lambda c=c: eng.ntk_cells([c], keys).condition, repeats) for c in cells]
    rows = [{"mode": mode, "what": "NTK, single cells", "K": 1, "seconds_per_candidate": float(np.mean(per_cell)),
             "per_cell_seconds": dict(zip(map(str, cells), per_cell, strict=True)),
             "compile_seconds": compile_cell, "peak_rss_mb": _peak_rss_mb()}]
    if mode != ntk.NTKMode.EXACT.value:
        return rows
    matrices = np.stack([space.from_index(c).matrix for c in cells])
    start = time.perf_counter()
    eng.regions_masks(matrices[:1], keys)
    compile_lr = time.perf_counter() - start
    lr_one = np.mean([_time(lambda m=m: eng.regions_masks(m[None], keys), repeats) for m in matrices])
    rows.append({"mode": "-", "what": "LR, single cells", "K": 1, "seconds_per_candidate": float(lr_one),
                 "compile_seconds": compile_lr, "peak_rss_mb": _peak_rss_mb()})
    lr_all = _time(lambda: eng.regions_masks(matrices, keys), repeats)
    rows.append({"mode": "-", "what": "LR, cells vmapped", "K": len(cells),
                 "seconds_per_candidate": lr_all / len(cells), "peak_rss_mb": _peak_rss_mb()})
    for k in round_sizes:
        base, cands = round_masks(k)
        start = time.perf_counter()
        eng.score_round(base, cands, keys)
        first = time.perf_counter() - start
        t = _time(lambda base=base, cands=cands: eng.score_round(base, cands, keys)["ntk"], repeats)
        rows.append({"mode": mode, "what": "round: NTK + LR, shared base", "K": k,
                     "seconds_per_candidate": t / k, "seconds_per_round": t,
                     "first_call_seconds": first, "peak_rss_mb": _peak_rss_mb()})
    return rows


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'what':<32}{'mode':<28}{'K':>4}{'s/candidate':>13}{'cand/s':>9}{'compile s':>11}{'peak MB':>9}"]
    for r in result["rows"]:
        compile_s = r.get("compile_seconds", r.get("first_call_seconds", float("nan")))
        lines.append(f"{r['what']:<32}{r['mode']:<28}{r['K']:>4}{r['seconds_per_candidate']:>13.4f}"
                     f"{1 / r['seconds_per_candidate']:>9.2f}{compile_s:>11.1f}{r['peak_rss_mb']:>9.0f}")
    return "\n".join(lines)
