"""Measurements behind ``experiments/bench_search.py``: where a search's time goes."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from typing import Any

import jax

from micronas_jax import search
from micronas_jax.proxies import engine as engine_lib


def run(seeds: Sequence[int], config: search.SearchConfig, *, dataset: str = "cifar10",
        batch_size: int = 32) -> dict[str, Any]:
    """Runs one search per seed on one engine (the first search compiles, the others reuse) and
    returns per-search wall time, proxy-engine time by function, compile time and candidates."""
    start = time.perf_counter()
    engine = engine_lib.ProxyEngine(engine_lib.ProxyConfig(dataset=dataset, batch_size=batch_size))
    costs = search.default_costs(dataset)
    setup = time.perf_counter() - start
    rows = []
    for seed in seeds:
        r = search.search(engine, seed, config, costs=costs, progress=False)
        candidates = sum(len(rd["candidates"]) for rd in r.rounds)
        rows.append({"seed": seed, "cell": r.cell.to_string(), "index": r.cell.index,
                     "accuracy": r.report["nb201"]["test_accuracy"][dataset],
                     "latency_ms": r.report["hardware"]["latency_ms"],
                     "wall_s": r.wall_seconds, "engine_s": r.engine_seconds, "compile_s": r.compile_seconds,
                     "candidates": candidates, "masks_scored": candidates + len(r.rounds),
                     "s_per_candidate": r.wall_seconds / candidates, "breakdown_s": r.engine_breakdown})
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "dataset": dataset, "batch_size": batch_size, "repeats": config.repeats,
            "weights": config.weights, "setup_s": setup, "rows": rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_table(result: dict[str, Any]) -> str:
    head = (f"{'seed':>4}  {'wall s':>7}  {'engine s':>8}  {'compile s':>9}  {'cand.':>5}  {'s/cand.':>7}  "
            "where the engine's time goes (s)")
    lines = [f"B={result['batch_size']}, R={result['repeats']}, weights {result['weights']}, "
             f"setup {result['setup_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", head, "-" * len(head)]
    for r in result["rows"]:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["breakdown_s"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{r['seed']:>4}  {r['wall_s']:>7.1f}  {r['engine_s']:>8.1f}  {r['compile_s']:>9.1f}  "
                     f"{r['candidates']:>5}  {r['s_per_candidate']:>7.2f}  {parts}")
    return "\n".join(lines)
