"""Many searches in one launch: seeds x a grid of configurations, resumable.

Every finished search is appended to a JSONL file at once (and flushed to disk), keyed by its
job; a rerun of the same launch skips the jobs already there, so a killed batch loses only the
search in flight. Jobs run seed-major and share one proxy engine per dataset (compiled once), and,
within a seed, the proxy scores of masks that several configurations reach in the same round
(every configuration's first round, at least) are computed once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from scipy import stats
from tqdm import tqdm

from micronas_jax import benchmark as benchmark_lib
from micronas_jax import inputs as inputs_lib
from micronas_jax import search as search_lib
from micronas_jax.proxies import engine as engine_lib

_LATER_FIELDS = {"w_budget": 0.0, "endgame": 0, "endgame_w_latency": None, "live_flops": False,
                 "endgame_classes": False}
"""SearchConfig fields added after result files existed: left out of a job's key at their default."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One search: a named configuration, a dataset and a seed."""

    name: str
    dataset: str
    config: search_lib.SearchConfig
    seed: int

    def to_json(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        for field, default in _LATER_FIELDS.items():  # keep result files written before them valid
            if config[field] == default:
                del config[field]
        return {"name": self.name, "dataset": self.dataset, "seed": self.seed, "config": config}

    def key(self, proxy: Mapping[str, Any]) -> str:
        """Identifies the job's result: the job and the proxy settings (not the name)."""
        d = self.to_json()
        d.pop("name")
        return json.dumps({**d, "proxy": proxy}, sort_keys=True)


def grid(seeds: Sequence[int], datasets: Sequence[str], configs: Mapping[str, search_lib.SearchConfig]) -> list[Job]:
    """Seed-major jobs: every (dataset, configuration) for seed 0, then seed 1, ..."""
    return [Job(name, d, c, s) for s in seeds for d in datasets for name, c in configs.items()]


def read_results(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """key -> record of a results file; a line cut short by a kill is dropped with a warning."""
    done: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return done
    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if n == len(lines) and not text.endswith("\n"):
                logging.warning("%s: dropping line %d, cut short (%s); its search runs again", path, n, err)
            else:
                raise ValueError(f"results file {path} is corrupt at line {n}: {err}") from None
    if text and not text.endswith("\n"):  # drop the cut line so that appends start clean
        with open(path, "w") as f:
            f.write("\n".join(json.dumps(r) for r in done.values()) + ("\n" if done else ""))
    return done


def append_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Appends one JSON line and syncs it to disk, so a kill loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def proxy_fingerprint(config: engine_lib.ProxyConfig, source: str) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    d["ntk_mode"] = config.ntk_mode.value
    d.pop("dataset")
    return {**d, "inputs": source}


def run(jobs: Iterable[Job], results_path: str | os.PathLike, make_engine: Callable[[str], engine_lib.ProxyEngine],
        *, benchmark: benchmark_lib.Benchmark | None = None,
        costs: Callable[[str], search_lib.SpaceCosts] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Runs the jobs not yet in ``results_path``, appending each result as it finishes.

    Args:
      jobs: what to run (``grid``).
      results_path: the JSONL file; created if missing.
      make_engine: dataset -> proxy engine (called once per dataset).
      benchmark: accuracies for the reports (default: built-in).
      costs: dataset -> the deployed network's ``SpaceCosts`` (default: ``search.default_costs``).

    Returns:
      The records of every job, in job order (finished earlier or now): ``{'key', 'job', 'result'}``.
    """
    jobs = list(jobs)
    done = read_results(results_path)
    engines: dict[str, engine_lib.ProxyEngine] = {}
    caches: dict[tuple[str, int], search_lib.ScoreCache] = {}
    records = []
    bar = tqdm(total=len(jobs), desc="searches", disable=not progress)
    for job in jobs:
        if job.dataset not in engines:
            engines[job.dataset] = make_engine(job.dataset)
        engine = engines[job.dataset]
        key = job.key(proxy_fingerprint(engine.config, engine.source.describe()))
        if key in done:
            records.append(done[key])
            bar.update(1)
            continue
        cache = caches.setdefault((job.dataset, job.seed), {})
        for old in [k for k in caches if k[0] == job.dataset and k[1] != job.seed]:
            del caches[old]  # seed-major: an earlier seed's scores are not needed again
        result = search_lib.search(engine, job.seed, job.config, costs=(costs or search_lib.default_costs)(job.dataset),
                                   benchmark=benchmark, cache=cache, progress=progress)
        record = {"key": key, "job": job.to_json(), "result": result.to_json()}
        append_record(results_path, record)
        done[key] = record
        records.append(record)
        logging.info("%s seed %d (%s): %s, %.2f%%, %.1f ms, %.1f s", job.name, job.seed, job.dataset,
                     result.cell.to_string(), record["result"]["nb201"]["test_accuracy"][job.dataset],
                     record["result"]["hardware"]["latency_ms"], result.wall_seconds)
        bar.update(1)
    bar.close()
    return records


def timed_on(timings: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct hosts that a set of records (anything with an optional 'timed_on') was timed on."""
    return sorted({t.get("timed_on", engine_lib.UNRECORDED) for t in timings})


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std per (configuration, dataset) of accuracy, latency, FLOPs, flash, SRAM and time."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["job"]["name"], r["job"]["dataset"]), []).append(r)
    rows = []
    for (name, dataset), rs in groups.items():
        res = [r["result"] for r in rs]
        values = {
            "accuracy": [x["nb201"]["test_accuracy"][dataset] for x in res],
            "latency_ms": [x["hardware"]["latency_ms"] for x in res],
            "mflops": [x["hardware"]["mflops"] for x in res],
            "flash_kb": [x["hardware"]["flash_kb"] for x in res],
            "sram_kb": [x["hardware"]["sram_kb"] for x in res],
            "wall_s": [x["time"]["wall_s"] for x in res],
        }
        row = {"name": name, "dataset": dataset, "searches": len(res), "config": rs[0]["job"]["config"],
               "seeds": [r["job"]["seed"] for r in rs], "cells": [x["index"] for x in res],
               "timed_on": timed_on(x["time"] for x in res)}
        for k, v in values.items():
            row[k] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
        rows.append(row)
    return rows


def _search_config(config: Mapping[str, Any]) -> search_lib.SearchConfig:
    """A job's logged configuration (``Job.to_json``) as the SearchConfig it ran with; fields that
    files written before them leave out take their defaults."""
    return search_lib.SearchConfig(**{**config, "budgets": search_lib.Budgets(**config["budgets"])})


def _endgame_groups(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """The searches that logged an endgame, by (configuration name, dataset), in file order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r["result"].get("endgame"):
            groups.setdefault((r["job"]["name"], r["job"]["dataset"]), []).append(r)
    return groups


def endgame_naswot(records: Sequence[Mapping[str, Any]], seed: int = 100, batch_size: int = 64,
                   data_path: str | None = None, chunk: int = 32) -> dict[int, float]:
    """NASWOT (``ProxyEngine.naswot_cells``) of every cell the logged endgames hold, on the
    searches' own proxy network and inputs (rebuilt from the results' proxy fingerprint; real
    images from ``data_path``), one draw from ``jax.random.PRNGKey(seed)`` for all of them.

    Returns {NB201 index: score}, larger = the codes further apart.

    Raises:
      ValueError: the endgames come from more than one dataset or proxy configuration, or their
        inputs were real images and ``data_path`` gives others (or none).
    """
    searches = [r for rs in _endgame_groups(records).values() for r in rs]
    groups = {(r["job"]["dataset"], json.dumps(json.loads(r["key"])["proxy"], sort_keys=True)) for r in searches}
    if not groups:
        return {}
    if len(groups) != 1:
        raise ValueError(f"NASWOT is computed on one proxy network and input source; the endgames have "
                         f"{len(groups)}: {sorted(groups)}")
    ((dataset, fingerprint),) = groups
    proxy = json.loads(fingerprint)
    logged = proxy.pop("inputs")
    source = next((s for s in (inputs_lib.ImageSource(dataset, synthetic_kind=k) for k in inputs_lib.SYNTHETIC)
                   if s.describe() == logged), None)
    if source is None:
        source = inputs_lib.load_images(dataset, data_path) if data_path else None
        if source is None or source.describe() != logged:
            raise ValueError(f"the searches ran on {logged!r}; give those images' path "
                             f"(got {source.describe() if source else 'no path'})")
    engine = engine_lib.ProxyEngine(engine_lib.ProxyConfig(dataset=dataset, **proxy), source)
    cells = sorted({c["index"] for r in searches for c in r["result"]["endgame"]["cells"]})
    logging.info("NASWOT of %d endgame cells (%s, C=%d, N=%d, batch %d, seed %d)", len(cells), source.describe(),
                 engine.config.C, engine.config.N, batch_size, seed)
    scores = engine.naswot_cells(cells, jax.random.PRNGKey(seed), batch_size, chunk, progress=True)
    return dict(zip(cells, scores.tolist(), strict=True))


def rerank_endgames(records: Sequence[Mapping[str, Any]], latency_weights: Sequence[float],
                    benchmark: benchmark_lib.Benchmark | None = None,
                    proxy_weights: Mapping[str, float] | None = None,
                    extra_indicators: Mapping[str, Mapping[int, float]] | None = None,
                    classes: bool | None = None) -> list[dict[str, Any]]:
    """What the logged endgames of a batch pick at other latency weights (``search.rerank_endgame``).

    Only the endgame is re-ranked, with its logged scores; each search's rounds stay as they ran
    under its own weights. Records without an endgame are left out. ``proxy_weights`` ({'ntk',
    'regions', 'flops'}, any of them; 'ntk' and 'regions' non-negative, 'flops' of either sign, a
    negative one rewarding FLOPs as ``SearchConfig.w_flops`` does) replaces the searches' own weights
    in the endgame: what the indicators' balance does to the picks, rounds as they ran.
    ``extra_indicators`` adds indicators the searches did not log ({name: {NB201 index: value}},
    lower = better, e.g. minus ``ProxyEngine.naswot_cells``), each counting with its weight in
    ``proxy_weights`` (non-negative; absent = 0).

    Returns:
      one row per (configuration, dataset, weight): {'name', 'dataset', 'endgame_w_latency',
      'searches', 'seeds', 'cells', 'accuracy': {'mean', 'std'}, 'latency_ms': {'mean', 'std'},
      'test_accuracy': {every dataset: the picks' mean NB201 test accuracy}, 'best_held':
      {'mean', 'std'}}, the other weights being the configuration's: each row is what its searches
      would have found with ``endgame_w_latency`` at that weight. 'best_held' is, per search, the
      accuracy of the most accurate cell its endgame held at no more than the pick's latency: what
      a perfect judge of accuracy would have found at that latency, so ``best_held - accuracy``
      is what the proxies left in the state, apart from what the rounds pruned before.

    ``classes`` sets the endgame's rule: True picks by ``search.class_endgame`` (latency classes
    ranked by their best NTK rank plus the weight times their latency rank, then the class's cell
    with the most regions; ``SearchConfig.endgame_classes``), False by the weighted rank sum, None
    (the default) as the configuration's searches ran (an error if they ran with both). Each row has
    'rule': 'classes' or 'ranks'; ``proxy_weights`` and ``extra_indicators`` do not apply to the
    class rule.
    """
    proxy_weights, extra = dict(proxy_weights or {}), dict(extra_indicators or {})
    if classes and (proxy_weights or extra):
        raise ValueError("the class-aware endgame takes no proxy weights or extra indicators")
    for k, v in proxy_weights.items():
        if k not in ("ntk", "regions", "flops", *extra) or not math.isfinite(v) or (k != "flops" and v < 0):
            raise ValueError(f"proxy_weights: {k}={v} (only 'ntk', 'regions' and extra indicators "
                             f"({', '.join(extra) or 'none given'}), finite and non-negative, and 'flops', finite)")
    bench = benchmark or benchmark_lib.BuiltinBenchmark()
    rows = []
    for (name, dataset), rs in _endgame_groups(records).items():
        if classes is None:
            as_run = {bool(r["job"]["config"].get("endgame_classes", False)) for r in rs}
            if len(as_run) > 1:
                raise ValueError(f"{name} ({dataset}): its searches ran with both endgame rules; "
                                 "give classes=True or False")
            (use_classes,) = as_run
        else:
            use_classes = classes
        if use_classes and (proxy_weights or extra):
            raise ValueError(f"{name}: the class-aware endgame takes no proxy weights or extra indicators")
        held = [(np.array([c["latency_ms"] for c in r["result"]["endgame"]["cells"]]),  # each endgame's cells
                 np.array([bench.query(c["index"]).test_accuracy[dataset] for c in r["result"]["endgame"]["cells"]]))
                for r in rs]
        for w in latency_weights:
            picks, acc, lat, every, best = [], [], [], [], []
            for r, (cell_lat, cell_acc) in zip(rs, held, strict=True):
                config, eg = r["job"]["config"], r["result"]["endgame"]
                weights = {"ntk": config["w_ntk"], "regions": config["w_regions"], "flops": config["w_flops"],
                           **proxy_weights, "latency": float(w)}
                i = search_lib.pick_endgame(eg, weights, config.get("precision", 3), use_classes, extra)
                picks.append(i)
                every.append(bench.query(i).test_accuracy)
                acc.append(every[-1][dataset])
                lat.append(next(c["latency_ms"] for c in eg["cells"] if c["index"] == i))
                # Cells of the pick's latency count too (sums of the same costs in another order
                # differ in the last bit); the pick itself is always among them.
                best.append(float(cell_acc[cell_lat <= lat[-1] * (1 + 1e-9)].max()))
            rows.append({"name": name, "dataset": dataset, "rule": "classes" if use_classes else "ranks",
                         "endgame_w_latency": float(w), "searches": len(rs),
                         "seeds": [r["job"]["seed"] for r in rs], "cells": picks,
                         "accuracy": {"mean": float(np.mean(acc)), "std": float(np.std(acc))},
                         "latency_ms": {"mean": float(np.mean(lat)), "std": float(np.std(lat))},
                         "test_accuracy": {d: float(np.mean([a[d] for a in every])) for d in every[0]},
                         "best_held": {"mean": float(np.mean(best)), "std": float(np.std(best))}})
    return rows


def capped_endgames(records: Sequence[Mapping[str, Any]], ratios: Sequence[float],
                    benchmark: benchmark_lib.Benchmark | None = None) -> list[dict[str, Any]]:
    """What the logged endgames pick when held to a latency their own pick sets: each search's
    endgame cells at most ``(its pick's latency) / k`` ms, ranked among themselves under the
    search's own weights and rule (``search.rerank_endgame``, or ``search.class_endgame`` for a
    search with ``endgame_classes``). It asks whether the proxies, told which latency
    to reach, pick well there, and sets their pick beside a cell drawn at random from those cells
    and the best of them (NB201's table).

    Returns:
      one row per (configuration, dataset, k): {'name', 'dataset', 'ratio', 'searches', 'seeds',
      'cells', 'accuracy': {'mean', 'std'}, 'latency_ms': {'mean', 'std'}, 'cap_ms': {'mean'},
      'random': {'mean'}, 'best': {'mean'}, 'empty'}; searches whose endgame held no cell within
      the cap are counted in 'empty' and left out of the means.
    """
    for k in ratios:
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"ratios: {k} (each a finite latency divisor > 0)")
    bench = benchmark or benchmark_lib.BuiltinBenchmark()
    rows = []
    for (name, dataset), rs in _endgame_groups(records).items():
        configs = [_search_config(r["job"]["config"]) for r in rs]
        cell_acc = [{c["index"]: bench.query(c["index"]).test_accuracy[dataset]  # once for every k
                     for c in r["result"]["endgame"]["cells"]} for r in rs]
        for k in ratios:
            picks, seeds, acc, lat, cap, rand, best, empty = [], [], [], [], [], [], [], 0
            for r, config, accs in zip(rs, configs, cell_acc, strict=True):
                eg = r["result"]["endgame"]
                limit = r["result"]["hardware"]["latency_ms"] / k
                held = [c for c in eg["cells"] if c["latency_ms"] <= limit * (1 + 1e-9)]  # last-bit ties
                if not held:
                    empty += 1
                    continue
                i = search_lib.pick_endgame({**eg, "cells": held}, config.endgame_weights, config.precision,
                                            config.endgame_classes)
                picks.append(i)
                seeds.append(r["job"]["seed"])
                acc.append(accs[i])
                lat.append(next(c["latency_ms"] for c in held if c["index"] == i))
                cap.append(limit)
                rand.append(float(np.mean([accs[c["index"]] for c in held])))
                best.append(float(np.max([accs[c["index"]] for c in held])))
            if not picks:
                rows.append({"name": name, "dataset": dataset, "ratio": float(k), "searches": 0, "seeds": [],
                             "cells": [], "empty": empty})
                continue
            rows.append({"name": name, "dataset": dataset, "ratio": float(k), "searches": len(picks),
                         "seeds": seeds, "cells": picks, "empty": empty,
                         "accuracy": {"mean": float(np.mean(acc)), "std": float(np.std(acc))},
                         "latency_ms": {"mean": float(np.mean(lat)), "std": float(np.std(lat))},
                         "cap_ms": {"mean": float(np.mean(cap))}, "random": {"mean": float(np.mean(rand))},
                         "best": {"mean": float(np.mean(best))}})
    return rows


def window_stats(records: Sequence[Mapping[str, Any]], windows: Sequence[tuple[float, float]],
                 benchmark: benchmark_lib.Benchmark | None = None) -> list[dict[str, Any]]:
    """How the logged endgames' proxies order the cells within a latency window (e.g. one class of
    cells with the same live convolutions): per search, the endgame's cells with ``lo <= latency <
    hi`` ms, their accuracy at random, at best, and as picked by each proxy alone (the most regions;
    the lowest NTK condition number, ties to the lower index), and each proxy's Kendall tau-b
    against accuracy within them (signed so that a positive tau orders them the right way).

    Returns:
      one row per (configuration, dataset, window): {'name', 'dataset', 'window_ms': [lo, hi],
      'searches' (those with a cell in the window), 'seeds', 'empty', 'cells': {'min', 'max'} per
      endgame, 'latency_ms', 'random', 'best', 'regions_pick', 'ntk_pick': {'mean'} over the
      searches (accuracies in %, NB201's table), 'tau': {'regions', 'ntk'}: the mean over the
      searches with at least 3 cells in the window and a defined tau (None if none)}.
    """
    for lo, hi in windows:
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValueError(f"windows: {lo}-{hi} ms (each finite, 0 <= lo < hi)")
    bench = benchmark or benchmark_lib.BuiltinBenchmark()
    rows = []
    for (name, dataset), rs in _endgame_groups(records).items():
        for lo, hi in windows:
            seeds, n, lat, rand, best, by_regions, by_ntk = [], [], [], [], [], [], []
            tau: dict[str, list[float]] = {"regions": [], "ntk": []}
            for r in rs:
                eg = r["result"]["endgame"]
                inside = [c for c in eg["cells"] if lo <= c["latency_ms"] < hi]
                if not inside:
                    continue
                ind = search_lib.logged_indicators({"cells": inside})
                acc = np.array([bench.query(c["index"]).test_accuracy[dataset] for c in inside])
                seeds.append(r["job"]["seed"])
                n.append(len(inside))
                lat.append(float(np.mean([c["latency_ms"] for c in inside])))
                rand.append(float(acc.mean()))
                best.append(float(acc.max()))
                ind = {k: np.where(np.isnan(v), np.inf, v) for k, v in ind.items()}  # NaN: the worst
                by_regions.append(float(acc[int(np.argmin(ind["regions"]))]))  # first minimum: lowest index
                by_ntk.append(float(acc[int(np.argmin(ind["ntk"]))]))
                if len(inside) >= 3:
                    for k in tau:
                        t = stats.kendalltau(-ind[k], acc).statistic
                        if math.isfinite(t):
                            tau[k].append(float(t))
            row = {"name": name, "dataset": dataset, "window_ms": [float(lo), float(hi)], "searches": len(seeds),
                   "seeds": seeds, "empty": len(rs) - len(seeds)}
            if seeds:
                row.update({"cells": {"min": int(min(n)), "max": int(max(n))},
                            **{k: {"mean": float(np.mean(v))} for k, v in (
                                ("latency_ms", lat), ("random", rand), ("best", best), ("regions_pick", by_regions),
                                ("ntk_pick", by_ntk))},
                            "tau": {k: float(np.mean(v)) if v else None for k, v in tau.items()}})
            rows.append(row)
    return rows


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    # Grid names grow with every flag that varies; the column grows with them.
    w = max([24] + [len(r["name"]) + 2 for r in rows])
    head = (f"{'configuration':<{w}}{'dataset':<16}{'n':>3}  {'accuracy %':>14}  {'latency ms':>16}  "
            f"{'MFLOPs':>14}  {'search s':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def ms(k, fmt, r=r):
            return f"{r[k]['mean']:{fmt}} +- {r[k]['std']:{fmt}}"

        lines.append(f"{r['name']:<{w}}{r['dataset']:<16}{r['searches']:>3}  {ms('accuracy', '6.2f'):>14}  "
                     f"{ms('latency_ms', '7.1f'):>16}  {ms('mflops', '6.1f'):>14}  {ms('wall_s', '5.0f'):>12}")
    return "\n".join(lines)
