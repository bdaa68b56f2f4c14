"""The paper's experiments, regenerated: batch-size study, indicator table, search table, Pareto
plots and a Markdown report that embeds them (``experiments/reproduce.py``).

Every stage caches what it computes under the output folder (proxy scores as JSONL through
``correlate.score_space``, searches through ``batch.run``, random searches as JSONL), so a killed
run resumes where it stopped, and writes its own JSON; the report is rebuilt from those files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from scipy import stats

from cells import skeleton as sk
from cells import space
from micronas_jax import batch, benchmark, correlate, inputs, plots, search
from micronas_jax.hardware import lut as lut_lib
from micronas_jax.hardware import report as report_lib
from micronas_jax.proxies import engine as engine_lib

PUBLISHED = {
    # TE-NAS (Chen et al., ICLR 2021), Table 2: mean +- std over its searches, real CIFAR batches.
    "TE-NAS (published)": {"cifar10": (93.9, 0.47), "cifar100": (71.24, 0.56), "ImageNet16-120": (42.38, 0.46),
                           "note": "1,558 GPU-seconds per search (published)"},
    # NB201's best cell per dataset (Dong & Yang, ICLR 2020).
    "NB201 optimum (published)": {"cifar10": (94.37, None), "cifar100": (73.51, None),
                                  "ImageNet16-120": (47.31, None), "note": ""},
}


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """What to regenerate; the defaults are the full report's.

    Attributes:
      datasets: searched and correlated datasets.
      seeds: search seeds 0 .. seeds-1 per configuration.
      repeats: R, draws per pruning round.
      batch_sizes: the batch-size study's NTK batch sizes (the paper's Fig. 1b).
      study_dataset, study_cells, study_seeds: the study's dataset, sampled cells and draws per cell.
      indicator_cells: cells sampled for the indicator table, per dataset: the study dataset's
        scores are the study's at ``batch_size`` (its draws), the others' one draw.
      w_flops, w_latency: the FLOPs- and latency-guided searches' weights.
      budget_quantiles: latency budgets, as quantiles of the latency of the space's connected cells
        (so they scale with the dataset's network): each gives a budgeted search, a random
        search under the same budget and wall-clock, a random cell and the oracle.
      hybrid: the weights (ntk, regions, flops, latency) of the indicator table's hybrid objective.
      batch_size: the NTK batch of the searches and the indicator table.
      sample_seed: seeds the sampled cells.
    """

    datasets: tuple[str, ...] = tuple(inputs.RESOLUTION)
    seeds: int = 10
    repeats: int = 3
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    study_dataset: str = "cifar10"
    study_cells: int = 1000
    study_seeds: int = 3
    indicator_cells: int = 1000
    w_flops: tuple[float, ...] = (1.0, 3.0)
    w_latency: tuple[float, ...] = (1.0, 3.0, 5.0)
    budget_quantiles: tuple[float, ...] = (0.25, 0.5)
    hybrid: tuple[float, float, float, float] = (1.0, 1.0, 0.0, search.DEFAULT_W_LATENCY)
    batch_size: int = 32
    sample_seed: int = 0

    def __post_init__(self):
        for d in (*self.datasets, self.study_dataset):
            if d not in inputs.RESOLUTION:
                raise ValueError(f"unknown dataset {d!r}; known: {', '.join(inputs.RESOLUTION)}")
        if self.seeds < 1 or self.repeats < 1 or self.study_seeds < 1:
            raise ValueError(f"seeds, repeats and study_seeds must be >= 1 (got {self.seeds}, {self.repeats}, "
                             f"{self.study_seeds})")
        for q in self.budget_quantiles:
            if not 0 < q <= 1:
                raise ValueError(f"budget quantile {q} is not in (0, 1]")
        for b in self.batch_sizes:
            if b < 2:
                raise ValueError(f"batch size {b}: the NTK needs at least 2 samples")


QUICK = ReproduceConfig(datasets=("cifar10",), seeds=2, repeats=1, batch_sizes=(8, 16, 32), study_cells=100,
                        study_seeds=1, indicator_cells=100, w_flops=(3.0,), w_latency=(3.0,),
                        budget_quantiles=(0.5,))
"""``--quick``: CIFAR-10 only, 2 seeds at R = 1, 100 cells; minutes on a 2-core CPU."""


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}


class Reproduction:
    """Runs the stages into ``out`` (created); each method is resumable and returns its JSON."""

    def __init__(self, out: str | os.PathLike, config: ReproduceConfig = ReproduceConfig(), *,
                 data_path: str | None = None, synthetic: str = "gaussian", lut: lut_lib.LUT | None = None,
                 reference: space.Cell | None = None, progress: bool = True):
        self.out, self.config, self.data_path, self.progress = os.fspath(out), config, data_path, progress
        self.synthetic = synthetic
        self.reference = reference
        os.makedirs(self.out, exist_ok=True)
        self.lut = lut or lut_lib.load_lut()
        self.bench = benchmark.BuiltinBenchmark()
        self._costs: dict[str, search.SpaceCosts] = {}
        self._engines: dict[tuple[str, int], engine_lib.ProxyEngine] = {}

    # -- shared pieces -------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def costs(self, dataset: str) -> search.SpaceCosts:
        if dataset not in self._costs:
            self._costs[dataset] = search.SpaceCosts(sk.Skeleton.for_dataset(dataset), self.lut)
        return self._costs[dataset]

    def engine(self, dataset: str, batch_size: int) -> engine_lib.ProxyEngine:
        if (dataset, batch_size) not in self._engines:
            config = engine_lib.ProxyConfig(dataset=dataset, batch_size=batch_size)
            self._engines[(dataset, batch_size)] = engine_lib.ProxyEngine(
                config, inputs.load_images(dataset, self.data_path, self.synthetic))
        return self._engines[(dataset, batch_size)]

    def inputs_description(self) -> str:
        return self.engine(self.config.study_dataset, self.config.batch_size).source.describe()

    def scores(self, dataset: str, batch_size: int, cells: int, draws: int) -> dict[str, np.ndarray]:
        """Proxy scores of ``cells`` sampled cells x ``draws`` draws, cached per (dataset, batch)."""
        indices = correlate.sample_indices(cells, self.config.sample_seed)
        return correlate.score_space(self.engine(dataset, batch_size), indices, draws, self.config.sample_seed,
                                     self.path(f"scores_{dataset}_b{batch_size}.jsonl"), progress=self.progress)

    def budgets(self, dataset: str) -> dict[float, float]:
        """quantile -> latency budget (ms) on ``dataset``'s deployed network."""
        c = self.costs(dataset)
        lat = c.cells["latency_ms"][c.connected]
        return {q: float(np.quantile(lat, q)) for q in self.config.budget_quantiles}

    # -- 1. batch-size study -----------------------------------------------------------------
    def batch_size_study(self) -> dict[str, Any]:
        """Kendall tau of the NTK condition number, and of the NTK + LR rank sum, against the
        study dataset's accuracy, per batch size and draw; with the engine's seconds per cell and
        draw."""
        cfg, d = self.config, self.config.study_dataset
        acc = self.bench.test_accuracies(d)
        rows = []
        for b in cfg.batch_sizes:
            s = self.scores(d, b, cfg.study_cells, cfg.study_seeds)
            a = acc[s["index"]]
            ntk_tau, hybrid_tau = [], []
            for r in range(cfg.study_seeds):
                ntk_score = correlate.infinite_last(-np.log(s["ntk"][:, r]))
                ntk_tau.append(_tau(ntk_score, a))
                rank_sum = stats.rankdata(-ntk_score) + stats.rankdata(-s["regions"][:, r].astype(np.float64))
                hybrid_tau.append(_tau(-rank_sum, a))
            rows.append({"batch_size": b, "cells": len(a), "draws": cfg.study_seeds,
                         "ntk_tau": _mean_std(ntk_tau), "ntk_regions_tau": _mean_std(hybrid_tau),
                         "ntk_tau_per_draw": ntk_tau, "ntk_regions_tau_per_draw": hybrid_tau,
                         "flagged": int((s["ntk_flag"] != "").sum()),
                         "seconds_per_cell_draw": float(np.median(s["seconds"])),
                         "timed_on": correlate.hosts(s)})
            logging.info("batch %d: tau NTK %.3f, NTK+LR %.3f, %.3f s per cell and draw", b,
                         rows[-1]["ntk_tau"]["mean"],
                         rows[-1]["ntk_regions_tau"]["mean"], rows[-1]["seconds_per_cell_draw"])
        result = {"dataset": d, "rows": rows}
        _write(self.path("batch_size.json"), result)
        plots.batch_size_study(rows, self.path("batch_size.png"),
                               title=f"NTK batch size: {cfg.study_cells} cells x {cfg.study_seeds} draws, {d}")
        return result

    # -- 2. indicator table ---------------------------------------------------------------------
    def indicator_table(self) -> dict[str, Any]:
        """Kendall tau and Spearman rho of NTK, LR, FLOPs, MCU latency, NTK + LR and the hybrid
        objective against each dataset's accuracy, the proxies scored on that dataset's inputs."""
        cfg = self.config
        w_ntk, w_regions, w_flops, w_latency = cfg.hybrid
        table: dict[str, Any] = {}
        for d in cfg.datasets:
            s = self.scores(d, cfg.batch_size, cfg.indicator_cells, cfg.study_seeds if d == cfg.study_dataset else 1)
            idx = s["index"]
            ntk_score = correlate.infinite_last(-np.log(s["ntk"]).mean(axis=1))
            regions = s["regions"].astype(np.float64).mean(axis=1)
            c = self.costs(d)
            flops, latency = c.cells["mflops"][idx], c.cells["latency_ms"][idx]
            rank = {"ntk": stats.rankdata(-ntk_score), "regions": stats.rankdata(-regions),
                    "flops": stats.rankdata(flops), "latency": stats.rankdata(latency)}  # 1 = best for the search
            indicators = {
                "NTK (-log condition)": ntk_score, "linear regions": regions, "FLOPs": flops,
                "MCU latency": latency, "NTK + LR (TE-NAS)": -(rank["ntk"] + rank["regions"]),
                f"hybrid ({_weights_name(cfg.hybrid)})": -(w_ntk * rank["ntk"] + w_regions * rank["regions"]
                                                          + w_flops * rank["flops"] + w_latency * rank["latency"]),
            }
            table[d] = {"cells": len(idx), "indicators": {}}
            for name, v in indicators.items():
                per = {}
                for target in benchmark.DATASETS:
                    a = self.bench.test_accuracies(target)[idx]
                    per[target] = {"kendall_tau": _tau(v, a), "spearman_rho": float(stats.spearmanr(v, a).statistic)}
                table[d]["indicators"][name] = per
        weights = dict(zip(("ntk", "regions", "flops", "latency"), cfg.hybrid, strict=True))
        result = {"hybrid_weights": weights, "tables": table}
        _write(self.path("indicators.json"), result)
        return result

    # -- 3. search table -------------------------------------------------------------------------
    def search_configs(self, dataset: str) -> dict[str, search.SearchConfig]:
        cfg = self.config
        out = {ACCURACY_ONLY: search.SearchConfig(repeats=cfg.repeats)}
        for w in cfg.w_flops:
            out[f"FLOPs-guided w_flops={w:g}"] = search.SearchConfig(w_flops=w, repeats=cfg.repeats)
        for w in cfg.w_latency:
            out[f"latency-guided w_latency={w:g}"] = search.SearchConfig(w_latency=w, repeats=cfg.repeats)
        for q, ms in self.budgets(dataset).items():
            out[_budget_name(q, ms)] = search.SearchConfig(repeats=cfg.repeats, budgets=search.Budgets(latency_ms=ms))
        return out

    def searches(self) -> list[dict[str, Any]]:
        """Every search configuration x seed x dataset (``batch.run``: resumable)."""
        cfg, records = self.config, []
        for d in cfg.datasets:
            jobs = batch.grid(range(cfg.seeds), [d], self.search_configs(d))
            records += batch.run(jobs, self.path("searches.jsonl"), lambda ds: self.engine(ds, cfg.batch_size),
                                 benchmark=self.bench, costs=self.costs, progress=self.progress)
        return records

    def random_searches(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per budget and seed: random cells within the budget, scored by the proxies (NTK + LR
        ranks) for as long as a standalone pruning search of that seed takes; the best is kept.

        The standalone time is the accuracy-only search's wall time less its compilation: later
        searches of a seed reuse its cached scores, so their own wall time understates the cost.
        The random search's own clock includes its first call's compilation (seed 0 of each
        dataset), which leaves that seed fewer cells."""
        path = self.path("random.jsonl")
        done = batch.read_results(path)
        standalone = {(r["job"]["dataset"], r["job"]["seed"]): r["result"]["time"] for r in records
                      if r["job"]["name"] == ACCURACY_ONLY}
        out = []
        for d in self.config.datasets:
            for ms in self.budgets(d).values():
                for seed in range(self.config.seeds):
                    t = standalone[(d, seed)]
                    target = t["wall_s"] - t["compile_s"]
                    key = json.dumps({"dataset": d, "latency_ms": ms, "seed": seed, "repeats": self.config.repeats,
                                      "batch_size": self.config.batch_size, "inputs": self.inputs_description()},
                                     sort_keys=True)
                    if key not in done:
                        done[key] = {"key": key, **self._random_search(d, ms, seed, target)}
                        batch.append_record(path, done[key])
                    out.append(done[key])
        return out

    def _random_search(self, dataset: str, latency_ms: float, seed: int, seconds: float) -> dict[str, Any]:
        c = self.costs(dataset)
        feasible = np.flatnonzero(c.feasible(search.Budgets(latency_ms=latency_ms), require_path=True))
        order = np.random.default_rng(seed).permutation(feasible)
        engine = self.engine(dataset, self.config.batch_size)
        keys = engine_lib.seed_keys(seed, self.config.repeats)
        chunk, scored, logcond, regions = 8, [], [], []
        start = time.perf_counter()
        while len(scored) < len(order) and (not scored or time.perf_counter() - start < seconds):
            cells = [int(i) for i in order[len(scored):len(scored) + chunk]]
            s = engine.score_cells(cells, keys, pad_to=chunk)
            scored += cells
            logcond += list(np.log(s["ntk"]).mean(axis=1))
            regions += list(s["regions"].astype(np.float64).mean(axis=1))
        rank = stats.rankdata(np.asarray(logcond)) + stats.rankdata(-np.asarray(regions))
        best = scored[int(np.argmin(rank))]  # ties: the first sampled
        report = search.cell_report(space.as_cell(best), c, self.bench)
        return {"dataset": dataset, "latency_ms_budget": latency_ms, "seed": seed, "cells_scored": len(scored),
                "wall_s": time.perf_counter() - start, "timed_on": engine_lib.timed_on(), "index": best, **report}

    def search_table(self) -> dict[str, Any]:
        records = self.searches()
        randoms = self.random_searches(records)
        summary = batch.summarize(records)
        rows: dict[str, list[dict[str, Any]]] = {d: [] for d in self.config.datasets}
        for s in summary:
            rows[s["dataset"]].append({"name": s["name"], "kind": "search", **{k: s[k] for k in _METRICS},
                                       "searches": s["searches"], "cells": s["cells"], "timed_on": s["timed_on"]})
        for d in self.config.datasets:
            c, acc = self.costs(d), self.bench.test_accuracies(d)
            for q, ms in self.budgets(d).items():
                rs = [r for r in randoms if r["dataset"] == d and r["latency_ms_budget"] == ms]
                rows[d].append({"name": f"random search, proxies, {_budget_name(q, ms)}, same wall-clock",
                                "kind": "random_search", "searches": len(rs), "cells": [r["index"] for r in rs],
                                "timed_on": batch.timed_on(rs),
                                "cells_scored": _mean_std([r["cells_scored"] for r in rs]),
                                **_metrics([_random_values(r, d) for r in rs])})
                feasible = np.flatnonzero(c.feasible(search.Budgets(latency_ms=ms), require_path=True))
                rows[d].append({"name": f"random cell, {_budget_name(q, ms)}", "kind": "random_cell",
                                "searches": len(feasible), "cells": [],
                                **_metrics([_cell_values(c, acc, i) for i in feasible])})
                best = int(feasible[np.argmax(acc[feasible])])
                rows[d].append({"name": f"oracle, {_budget_name(q, ms)}", "kind": "oracle", "searches": 1,
                                "cells": [best], **_metrics([_cell_values(c, acc, best)])})
            best = int(np.argmax(acc))
            rows[d].append({"name": "oracle, no budget", "kind": "oracle", "searches": 1, "cells": [best],
                            **_metrics([_cell_values(c, acc, best)])})
        result = {"rows": rows, "budgets_ms": {d: {str(q): ms for q, ms in self.budgets(d).items()}
                                               for d in self.config.datasets},
                  "published": PUBLISHED, "seeds": list(range(self.config.seeds)), "repeats": self.config.repeats}
        _write(self.path("searches.json"), result)
        return result

    # -- 4. Pareto plots ---------------------------------------------------------------------------
    def pareto_plots(self, table: Mapping[str, Any]) -> dict[str, str]:
        files = {}
        for d in self.config.datasets:
            c, acc = self.costs(d), self.bench.test_accuracies(d)
            lat = c.cells["latency_ms"]
            found = {r["name"]: r["cells"] for r in table["rows"][d] if r["kind"] in ("search", "random_search")}
            files[d] = f"pareto_{d}.png"
            ref = None if self.reference is None else (f"--arch #{self.reference.index}", self.reference.index)
            plots.found_cells(lat, acc, found, self.path(files[d]), front=report_lib.pareto_front(lat, acc),
                              reference=ref,
                              ylabel=f"NB201 test accuracy, {d} (%)",
                              title=f"accuracy vs estimated latency on {self.lut.device.name}: {d}")
        return files

    # -- 5. everything -------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] = ("batch_size", "indicators", "searches"),
            command: str = "") -> dict[str, Any]:
        """Runs the stages (each resumable), then writes ``report.md`` and ``report.json``."""
        result: dict[str, Any] = {"config": dataclasses.asdict(self.config), "machine": machine(),
                                  "inputs": self.inputs_description(), "device": self.lut.device.name,
                                  "command": command}
        for stage, fn in (("batch_size", self.batch_size_study), ("indicators", self.indicator_table),
                          ("searches", self.search_table)):
            if stage in stages:
                t0 = time.perf_counter()
                result[stage] = fn()
                result.setdefault("stage_seconds", {})[stage] = time.perf_counter() - t0
        if "searches" in result:
            result["pareto"] = self.pareto_plots(result["searches"])
        _write(self.path("report.json"), result)
        with open(self.path("report.md"), "w") as f:
            f.write(markdown(result))
        return result


ACCURACY_ONLY = "accuracy-only (TE-NAS objective)"
_METRICS = ("accuracy", "latency_ms", "mflops", "flash_kb", "sram_kb", "wall_s")


def _cell_values(c: search.SpaceCosts, acc: np.ndarray, i: int) -> dict[str, float]:
    return {"accuracy": acc[i], "latency_ms": c.cells["latency_ms"][i], "mflops": c.cells["mflops"][i],
            "flash_kb": c.cells["flash_kb"][i], "sram_kb": c.cells["sram_kb"][i], "wall_s": 0.0}


def _random_values(r: Mapping[str, Any], dataset: str) -> dict[str, float]:
    hw = r["hardware"]
    return {"accuracy": r["nb201"]["test_accuracy"][dataset], "latency_ms": hw["latency_ms"], "mflops": hw["mflops"],
            "flash_kb": hw["flash_kb"], "sram_kb": hw["sram_kb"], "wall_s": r["wall_s"]}


def _metrics(values: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    return {k: _mean_std([v[k] for v in values]) for k in _METRICS}


def _mean_std(v: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(v)), "std": float(np.std(v))}


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.kendalltau(x, y).statistic)


def _budget_name(q: float, ms: float) -> str:
    return f"latency <= {ms:.0f} ms (q{q:g})"


def _weights_name(w: Sequence[float]) -> str:
    return ", ".join(f"{n}={v:g}" for n, v in zip(("ntk", "regions", "flops", "latency"), w, strict=True) if v)


def _write(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)  # a kill mid-write leaves the previous file whole


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# -- the report --------------------------------------------------------------------------------------
def _ms(m: Mapping[str, float], fmt: str = ".2f") -> str:
    return f"{m['mean']:{fmt}} ± {m['std']:{fmt}}"


def markdown(r: Mapping[str, Any]) -> str:
    """The Markdown report of a ``Reproduction.run`` result."""
    cfg, m = r["config"], r["machine"]
    lines = ["# MicroNAS reproduction report", "",
             f"Command: `{r['command']}`  ", f"Report built on: {m['processor']}, {m['cpus']} CPUs, {m['platform']}; "
             f"JAX {m['jax']} on {m['backend']} ({', '.join(m['devices'])})  ",
             f"Timings taken on: {', '.join(_timed_on(r)) or 'nothing timed'} (each stage's rows say which; every "
             "timed record in the caches names its host)  ",
             f"Inputs: {r['inputs']}  ", f"Device (latency LUT): {r['device']}  ",
             f"Search seeds: 0-{cfg['seeds'] - 1}, R = {cfg['repeats']}, NTK batch {cfg['batch_size']}; "
             f"stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in r.get("stage_seconds", {}).items()), "",
             "Every number below is in a JSON file beside this report: `batch_size.json`, `indicators.json`, "
             "`searches.json` (summaries), `searches.jsonl` and `random.jsonl` (every search, with its per-round "
             "log), `scores_*.jsonl` (every proxy score).", ""]
    if "batch_size" in r:
        b = r["batch_size"]
        lines += ["## NTK batch size (the paper's Fig. 1b)", "",
                  f"Kendall tau against {b['dataset']} test accuracy over {b['rows'][0]['cells']} sampled cells, "
                  f"mean ± std over {b['rows'][0]['draws']} draws (initialisation and batch).", "",
                  "| batch | tau, NTK | tau, NTK + LR | engine s / cell and draw | timed on | flagged |",
                  "|---:|---:|---:|---:|---|---:|"]
        for row in b["rows"]:
            lines.append(f"| {row['batch_size']} | {_ms(row['ntk_tau'], '.3f')} | {_ms(row['ntk_regions_tau'], '.3f')} "
                         f"| {row['seconds_per_cell_draw']:.3f} | {', '.join(row.get('timed_on', []))} "
                         f"| {row['flagged']} |")
        lines += ["", "![batch size](batch_size.png)", ""]
    if "indicators" in r:
        lines += ["## Indicators", "", "Kendall tau / Spearman rho against NB201 test accuracy; the proxies are "
                  "scored on each dataset's own inputs and network. FLOPs and latency enter as they are (higher "
                  "cost, higher accuracy); the hybrid objective ranks them lower-is-better, as the search does.", ""]
        for d, t in r["indicators"]["tables"].items():
            targets = list(next(iter(t["indicators"].values())))
            lines += [f"### Proxies on {d} ({t['cells']} cells)", "",
                      "| indicator | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
            for name, per in t["indicators"].items():
                lines.append(f"| {name} | " + " | ".join(
                    f"{per[x]['kendall_tau']:.3f} / {per[x]['spearman_rho']:.3f}" for x in targets) + " |")
            lines.append("")
    if "searches" in r:
        s = r["searches"]
        lines += ["## Searches", "", "Mean ± std over the seeds (random cell: over every cell within the budget). "
                  "Latency, flash and peak SRAM are estimates for the deployed NB201 network (C = 16, N = 5) on "
                  f"{r['device']}. Budgets are quantiles of the connected cells' latency. A seed's searches share "
                  "one cache of proxy scores, so only its first (accuracy-only) search's time is a standalone "
                  "search's; the random searches get that time.", ""]
        for d, rows in s["rows"].items():
            lines += [f"### {d}", "", "| configuration | n | test accuracy % | latency ms | MFLOPs | flash KB | "
                      "SRAM KB | search s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for row in rows:
                lines.append(f"| {row['name']} | {row['searches']} | {_ms(row['accuracy'])} | "
                             f"{_ms(row['latency_ms'], '.0f')} | {_ms(row['mflops'], '.1f')} | "
                             f"{_ms(row['flash_kb'], '.0f')} | {_ms(row['sram_kb'], '.0f')} | "
                             f"{_ms(row['wall_s'], '.1f')} |")
            for name, p in s["published"].items():
                mean, std = p[d]
                lines.append(f"| {name} | | {mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")
                             + f" | | | | | {p['note']} |")
            lines += ["", f"Search and random-search times taken on: {', '.join(_hosts(rows))}.", "",
                      f"![Pareto plot, {d}]({r['pareto'][d]})", ""]
    return "\n".join(lines) + "\n"


def _hosts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every host that the timings of ``rows`` (each with an optional 'timed_on' list) came from."""
    return sorted({h for row in rows for h in row.get("timed_on", [])})


def _timed_on(r: Mapping[str, Any]) -> list[str]:
    """Every host that a timing in the report came from."""
    return _hosts([*r.get("batch_size", {}).get("rows", []),
                   *(row for rows in r.get("searches", {}).get("rows", {}).values() for row in rows)])


def run_stages(out: str, config: ReproduceConfig, stages: Sequence[str], *, data_path: str | None = None,
               synthetic: str = "gaussian", lut_path: str | None = None, reference: space.Cell | None = None,
               progress: bool = True, command: str = "") -> dict[str, Any]:
    """``experiments/reproduce.py``'s one library call."""
    rep = Reproduction(out, config, data_path=data_path, synthetic=synthetic, lut=lut_lib.load_lut(lut_path),
                       reference=reference, progress=progress)
    return rep.run(stages, command=command)


def summary_text(result: Mapping[str, Any]) -> str:
    """A few lines for the console."""
    lines = []
    if "batch_size" in result:
        lines.append("batch size -> tau NTK: " + ", ".join(
            f"{row['batch_size']}: {row['ntk_tau']['mean']:.3f}" for row in result["batch_size"]["rows"]))
    if "searches" in result:
        for d, rows in result["searches"]["rows"].items():
            for row in rows:
                if row["kind"] == "search":
                    lines.append(f"{d:<15} {row['name']:<40} {_ms(row['accuracy'])} %  "
                                 f"{_ms(row['latency_ms'], '.0f')} ms")
    return "\n".join(lines)

