"""MicroNAS: hardware-aware pruning search over the NB201 cell space.

TE-NAS's pruning with MicroNAS's hybrid objective. Start from the supernet (every edge carries
every operator; ``none`` dropped first by default, as TE-NAS does). Each round, every alive
(edge, op) of an edge with more than one op left is a candidate: the supernet with that op
removed. All candidates and the round's unpruned supernet are scored in one engine call under R
seeds (``ProxyEngine.score_round``: the base once per seed, every candidate with the same draw),
and each candidate gets four indicators, each oriented so that *lower means better to prune*:

* ``ntk``: minus the mean relative decrease of the NTK condition number (an op whose removal
  makes the network better conditioned is a good prune);
* ``regions``: the mean relative loss of linear regions (losing few regions is a good prune);
* ``flops`` / ``latency``: minus the share of the supernet's FLOPs / estimated MCU latency the
  op costs (saving much is a good prune).

Each indicator is dense-ranked over all the round's candidates (equal values, compared to
``precision`` decimal places as TE-NAS does, share a rank; NaN ranks last), the ranks are
combined as ``w_ntk * r_ntk + w_regions * r_regions + w_flops * r_flops + w_latency * r_latency``,
and on every edge the candidate with the lowest combined rank is pruned (a negative ``w_flops``,
opt-in, turns FLOPs from a cost into a reward: the paper notes FLOPs correlate with accuracy).
Ties break towards the lower operator index (``space.OPS`` order), which is TE-NAS's order. Edges
are pruned in edge order, each checked against the budgets with the edges before it already pruned.

Budgets (latency, flash, peak SRAM, FLOPs) are hard: a state (a mask) is feasible when at least one
cell it still contains meets every budget, computed exactly over all 15,625 cells; a prune that
would leave no such cell is skipped for the edge's next-best candidate (one always exists: the
edge's op in a feasible completion can stay). The search refuses to start when no cell meets the
budgets, naming the budget(s) at fault.

Opt-in endgame (``SearchConfig.endgame``): once few enough feasible cells are left in the state,
they are scored as cells and ranked directly (``score_endgame``) instead of pruned further; under a
tight budget this replaces the last rounds' forced prunes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from cells import skeleton as sk
from cells import space
from micronas_jax import benchmark as benchmark_lib
from micronas_jax.hardware import flops as flops_lib
from micronas_jax.hardware import latency as latency_lib
from micronas_jax.hardware import lut as lut_lib
from micronas_jax.hardware import memory as memory_lib
from micronas_jax.proxies import engine as engine_lib

INDICATORS = ("ntk", "regions", "flops", "latency")
_NONE = space.OPS.index("none")


class BudgetError(ValueError):
    """No cell of the search space meets the budgets."""


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Hard limits on the deployed network; ``None`` = no limit."""

    latency_ms: float | None = None
    flash_kb: float | None = None
    sram_kb: float | None = None
    mflops: float | None = None

    def active(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


DEFAULT_W_LATENCY = 3.0
"""The launcher's default latency weight: the largest latency cut within 1 pt of accuracy-only
accuracy in the README's 10-seed CIFAR-10 study (1.8x lower latency, -0.7 pt)."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The search's objective and schedule.

    Attributes:
      w_ntk, w_regions, w_flops, w_latency: weights of the indicators' ranks (w_flops = w_latency
        = 0 is TE-NAS's accuracy-only search). Only ``w_flops`` may be negative: it then rewards the
        ops (and, in the endgame, the cells) with more FLOPs, FLOPs taken as a sign of capacity
        rather than a cost; the others must be non-negative.
      w_budget: weight of the budget-pressure rank (opt-in; nothing without budgets): the share
        of the state's feasible cells that use the op on its edge, so that an op few cells within
        the budgets can use is pruned early rather than forced out in the last round.
      repeats: seeds (fresh initialisations and batches) per round, R.
      drop_none: remove ``none`` from every edge before the first round (TE-NAS).
      budgets: hard limits.
      require_path: only cells with a path from the cell's input to its output count as
        completions (matters only with ``drop_none=False``: NB201's disconnected cells are
        untrainable, about 10 % accuracy).
      precision: decimal places to which indicators (relative changes and shares) are compared
        when ranking; TE-NAS's launcher uses 3.
      endgame: when a round starts with at most this many cells left in the state (those that
        meet the budgets, with a path when ``require_path``), stop pruning and score each of them
        as a cell (R draws, the round's keys); the best by the same weighted ranks wins. 0 (the
        default) prunes to the end, as TE-NAS does.
      endgame_w_latency: the endgame's latency weight, if not ``w_latency`` (needs an endgame).
        A round ranks an op's share of a supernet's latency, the endgame whole cells' latencies:
        a weight that steers the rounds need not be the one that picks among the cells left.
      live_flops: the endgame's FLOPs indicator counts only the edges the deployed network runs
        (on a device that drops dead edges, those that reach the cell's output) instead of NB201's
        count, which includes dead edges. A FLOPs reward against a latency cost otherwise favours convolutions on dead
        edges: FLOPs that cost no latency. Rounds price supernets as before.
      endgame_classes: the endgame picks by ``class_pick`` (latency classes ranked by their best
        NTK rank plus the endgame latency weight times their latency rank, then the chosen class's
        cell with the most regions) instead of the weighted rank sum; the other weights then play
        no part in the pick (needs an endgame).
    """

    w_ntk: float = 1.0
    w_regions: float = 1.0
    w_flops: float = 0.0
    w_latency: float = 0.0
    w_budget: float = 0.0
    repeats: int = 3
    drop_none: bool = True
    budgets: Budgets = Budgets()
    require_path: bool = True
    precision: int = 3
    endgame: int = 0
    endgame_w_latency: float | None = None
    live_flops: bool = False
    endgame_classes: bool = False

    def __post_init__(self):
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if self.endgame < 0:
            raise ValueError(f"endgame must be 0 (off) or a number of cells, got {self.endgame}")
        if self.endgame_classes and not self.endgame:
            raise ValueError("endgame_classes needs an endgame (endgame > 0)")
        if self.endgame_w_latency is not None:
            if not self.endgame:
                raise ValueError(f"endgame_w_latency={self.endgame_w_latency} needs an endgame (endgame > 0)")
            if not (math.isfinite(self.endgame_w_latency) and self.endgame_w_latency >= 0):
                raise ValueError(f"endgame_w_latency must be finite and non-negative, got {self.endgame_w_latency}")
        if not math.isfinite(self.w_flops):
            raise ValueError(f"w_flops must be finite, got {self.w_flops}")
        for name in ("w_ntk", "w_regions", "w_latency", "w_budget"):
            w = getattr(self, name)
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"{name} must be finite and non-negative, got {w}")

    @property
    def weights(self) -> dict[str, float]:
        return {"ntk": self.w_ntk, "regions": self.w_regions, "flops": self.w_flops,
                "latency": self.w_latency, "budget": self.w_budget}

    @property
    def endgame_weights(self) -> dict[str, float]:
        latency = self.w_latency if self.endgame_w_latency is None else self.endgame_w_latency
        return {**self.weights, "latency": latency}


# -- hardware costs over the space -------------------------------------------------------------
class SpaceCosts:
    """Every cell's deployed costs, and the supernet costs the indicators use.

    Args:
      skeleton: the deployed network (NB201: C=16, N=5 for the dataset).
      lut: the device's per-operator LUT (default: STM32F746, CMSIS-NN); a LUT holding a
        calibrated whole-network model is refused (the supernet indicator prices single operators).
    """

    def __init__(self, skeleton: sk.Skeleton, lut: lut_lib.LUT | None = None, *, allow_estimate: bool = False):
        self.skeleton, self.lut = skeleton, lut or lut_lib.load_lut()
        if self.lut.calibration is not None:
            raise ValueError(f"the search prices each supernet operator, so it needs a per-operator LUT; "
                             f"{self.lut.source} holds a calibrated whole-network model")
        matrices = space.all_matrices()
        ftable = flops_lib.cost_table(skeleton)
        ltable = latency_lib.latency_table(self.lut, skeleton, allow_estimate=allow_estimate)
        mtable = memory_lib.memory_table(skeleton, dead_edges=self.lut.device.dead_edges)
        self.ops = matrices.argmax(-1)  # int[15625, 6]
        self.connected = latency_lib.live_edges(matrices, "dropped").any(-1)  # a path from input to output
        self.cells = {
            "mflops": ftable.flops(matrices) / 1e6,
            # NB201 counts every edge's FLOPs; the deployed network runs only the live ones (the
            # device's dead-edge mode: a graph converter drops edges that reach no output).
            "mflops_live": ftable.flops(matrices * latency_lib.live_edges(
                matrices, self.lut.device.dead_edges)[..., None]) / 1e6,
            "latency_ms": latency_lib.latency_all(self.lut, skeleton, allow_estimate=allow_estimate),
            "flash_kb": mtable.flash(matrices) / 1024,
            "sram_kb": mtable.sram(matrices) / 1024,
        }
        # The supernet runs every alive op: its cost is fixed + the sum of alive ops' costs.
        self._edge_op = {"flops": ftable.edge_op_flops.astype(np.float64), "latency": ltable.edge_op_ms}
        self._fixed = {"flops": float(ftable.fixed_flops), "latency": ltable.fixed_ms + ltable.overhead_ms}

    def feasible(self, budgets: Budgets, require_path: bool = False) -> np.ndarray:
        """bool[15625]: the cells that meet every budget (and have a path from input to output)."""
        ok = self.connected.copy() if require_path else np.ones(space.NUM_CELLS, bool)
        for name, limit in budgets.active().items():
            ok &= self.cells[name] <= limit
        return ok

    def check(self, budgets: Budgets, mask: np.ndarray, require_path: bool = False) -> np.ndarray:
        """The feasible cells within ``mask``; raises ``BudgetError`` naming the budgets if none."""
        within = contains(mask, self.ops) & (self.connected if require_path else True)
        feasible = self.feasible(budgets) & within
        if feasible.any():
            return feasible
        parts = []
        for name, limit in budgets.active().items():
            best = self.cells[name][within].min()
            if best > limit:
                parts.append(f"{name} <= {limit:g} (the least any cell reaches is {best:.4g})")
        if not parts:
            parts.append(f"all of {budgets.active()} at once (each alone can be met)")
        raise BudgetError("no cell of the search space meets the budget " + "; ".join(parts))

    def supernet_share(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """indicator -> float64[6, 5]: each op's share of the supernet's cost under ``mask``."""
        live = (np.asarray(mask) > 0).astype(np.float64)
        out = {}
        for name, table in self._edge_op.items():
            total = self._fixed[name] + float((live * table).sum())
            out[name] = table / total
        return out


def contains(mask: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """bool[K]: whether each cell ``ops`` (int[K, 6]) is inside the (partly pruned) ``mask``."""
    alive = np.asarray(mask) > 0
    return alive[np.arange(space.NUM_EDGES), ops].all(-1)


# -- ranking -----------------------------------------------------------------------------------
def dense_rank(values: np.ndarray, precision: int = 3) -> np.ndarray:
    """int64[K]: 0 for the lowest value, equal values (to ``precision`` decimal places, as TE-NAS
    compares its relative changes) sharing a rank and the next distinct value one more (TE-NAS's
    ranking); -inf ranks first, +inf after every finite value and NaN last of all."""
    v = np.round(np.asarray(values, np.float64), precision)
    nan = np.isnan(v)
    distinct = np.unique(v[~nan])
    ranks = np.searchsorted(distinct, v).astype(np.int64)
    ranks[nan] = len(distinct)
    return ranks


def combine(indicators: Mapping[str, np.ndarray], weights: Mapping[str, float],
            precision: int = 3) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(rank per indicator int64[K], combined rank float64[K]); indicators with weight 0 are
    ranked but do not count."""
    ranks = {name: dense_rank(values, precision) for name, values in indicators.items()}
    total = np.zeros(len(next(iter(ranks.values()))))
    for name, r in ranks.items():
        if weights.get(name, 0.0):
            total = total + weights[name] * r
    return ranks, total


def relative_decrease(base: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(base - cand) / base, elementwise, with infinities made explicit: a candidate that turns a
    finite base infinite gets -inf, one that makes an infinite base finite gets 1 (the largest
    possible relative decrease), both infinite 0."""
    base, cand = np.broadcast_arrays(np.asarray(base, np.float64), np.asarray(cand, np.float64))
    out = np.full(base.shape, np.nan)
    fb, fc = np.isfinite(base), np.isfinite(cand)
    both = fb & fc & (base != 0)
    out[both] = (base[both] - cand[both]) / base[both]
    out[fb & ~fc & ~np.isnan(cand)] = -np.inf
    out[~fb & fc & ~np.isnan(base)] = 1.0
    out[np.isinf(base) & np.isinf(cand)] = 0.0
    return out


def choose(candidates: Sequence[tuple[int, int]], combined: np.ndarray, mask: np.ndarray,
           allowed: Callable[[np.ndarray], bool]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Prunes, edge by edge in edge order, the edge's candidate with the lowest combined rank (ties:
    lower op index) whose removal ``allowed`` accepts. Returns (new mask, pruned (edge, op))."""
    mask = np.array(mask, np.float32)
    pruned = []
    for edge in range(space.NUM_EDGES):
        options = sorted((combined[k], op, k) for k, (e, op) in enumerate(candidates) if e == edge)
        for _, op, _ in options:
            trial = mask.copy()
            trial[edge, op] = 0
            if allowed(trial):
                mask = trial
                pruned.append((edge, op))
                break
        else:
            if options:
                raise AssertionError(f"no candidate of edge {edge} keeps the budgets")  # cannot happen
    return mask, pruned


# -- the search --------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchResult:
    """What one search found and how (JSON-ready via ``to_json``)."""

    cell: space.Cell
    seed: int
    rounds: list[dict[str, Any]]
    wall_seconds: float
    engine_seconds: float
    compile_seconds: float
    report: dict[str, Any]
    engine_breakdown: dict[str, float] = dataclasses.field(default_factory=dict)
    timed_on: str = dataclasses.field(default_factory=engine_lib.timed_on)
    endgame: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"cell": self.cell.to_string(), "index": self.cell.index, "seed": self.seed,
                **self.report, "rounds": self.rounds, **({"endgame": self.endgame} if self.endgame else {}),
                "time": {"wall_s": self.wall_seconds, "engine_s": self.engine_seconds,
                         "compile_s": self.compile_seconds, "engine_breakdown_s": self.engine_breakdown,
                         "timed_on": self.timed_on}}


ScoreCache = dict  # (seed, round, R, mask bytes) or ("cell", seed, round, R, index) -> (ntk float64[R],
#                   flags str[R], regions int64[R])


def round_keys(seed: int, round_index: int, repeats: int) -> list[jax.Array]:
    """The R keys of a round: the same (seed, round) gives the same draws in every search."""
    key = jax.random.fold_in(jax.random.key(seed), round_index)
    return list(jax.random.split(key, repeats))


def _cached_scores(cache: ScoreCache | None, tags: Sequence[tuple], score: Callable[[list[int]], Mapping]
                   ) -> dict[str, np.ndarray]:
    """Scores of the items named by ``tags``: those in ``cache`` reused, the rest scored in one
    call ``score(positions)`` (returning 'ntk', 'ntk_flag', 'regions' rows in that order) and added
    to the cache. Returns the three arrays stacked in ``tags`` order."""
    cache = {} if cache is None else cache
    todo = [k for k, t in enumerate(tags) if t not in cache]
    if todo:
        out = score(todo)
        for j, k in enumerate(todo):
            cache[tags[k]] = (out["ntk"][j], out["ntk_flag"][j], out["regions"][j])
    rows = [cache[t] for t in tags]
    return {"ntk": np.stack([r[0] for r in rows]), "ntk_flag": np.stack([r[1] for r in rows]),
            "regions": np.stack([r[2] for r in rows])}


def score_masks(engine: engine_lib.ProxyEngine, base: np.ndarray, cands: np.ndarray, keys, seed: int,
                round_index: int, cache: ScoreCache | None) -> dict[str, np.ndarray]:
    """``engine.score_round``, with masks already scored under the same (seed, round) in this
    ``cache`` (e.g. by another weight setting's search) reused, not recomputed."""
    masks = np.concatenate([np.asarray(base, np.float32)[None], cands])
    tags = [(seed, round_index, len(keys), m.tobytes()) for m in masks]
    # The first mask to score plays the base: score_round treats all masks alike.
    return _cached_scores(cache, tags, lambda todo: engine.score_round(masks[todo[0]], masks[todo[1:]], keys))


def search(engine: engine_lib.ProxyEngine, seed: int, config: SearchConfig | None = None, *,
           costs: SpaceCosts | None = None, benchmark: benchmark_lib.Benchmark | None = None,
           cache: ScoreCache | None = None, progress: bool = True) -> SearchResult:
    """Runs one pruning search.

    Args:
      engine: the proxy engine (its config fixes the dataset, NTK mode and proxy networks).
      seed: seeds every round's draws (``round_keys``).
      config: objective, repeats and budgets.
      costs: the deployed network's costs (default: NB201's C=16, N=5 network for the engine's
        dataset on the default device).
      benchmark: where the found cell's accuracies come from (default: the built-in table).
      cache: scores shared between searches of the same engine and seed.
      progress: a progress bar over rounds.
    """
    config = config or SearchConfig()
    start = time.perf_counter()
    compile_before = engine.compile_seconds
    seconds_before = dict(getattr(engine, "seconds", {}))
    dataset = engine.config.dataset
    costs = costs or default_costs(dataset)
    mask = initial_mask(config)
    feasible = costs.check(config.budgets, mask, config.require_path)
    feasible_ops = costs.ops[feasible]  # within the initial mask
    endgame = None

    def allowed(m):
        return bool(contains(m, feasible_ops).any())

    rounds: list[dict[str, Any]] = []
    engine_seconds = 0.0
    total_rounds = int((mask > 0).sum(-1).max()) - 1
    bar = tqdm(total=total_rounds, desc=f"search seed {seed}", disable=not progress, leave=False)
    while (mask > 0).sum(-1).max() > 1:
        r = len(rounds)
        left = np.flatnonzero(feasible & contains(mask, costs.ops)) if config.endgame else None
        if left is not None and len(left) <= config.endgame:
            t = time.perf_counter()
            endgame = score_endgame(engine, left, costs, config, round_keys(seed, r, config.repeats), seed, r, cache)
            engine_seconds += time.perf_counter() - t
            mask = space.from_index(endgame["chosen"]).matrix
            logging.info("seed %d round %d: endgame over %d cells, chose #%d", seed, r, len(left), endgame["chosen"])
            bar.update(bar.total - bar.n)
            break
        candidates = [(e, o) for e in range(space.NUM_EDGES) if (mask[e] > 0).sum() > 1
                      for o in range(space.NUM_OPS) if mask[e, o] > 0]
        cand_masks = np.stack([_without(mask, e, o) for e, o in candidates])
        t = time.perf_counter()
        scores = score_masks(engine, mask, cand_masks, round_keys(seed, r, config.repeats), seed, r, cache)
        engine_seconds += time.perf_counter() - t
        share = costs.supernet_share(mask)
        idx = tuple(np.array(candidates).T)
        indicators = {
            "ntk": -relative_decrease(scores["ntk"][0][None], scores["ntk"][1:]).mean(axis=1),
            "regions": relative_decrease(scores["regions"][0][None], scores["regions"][1:]).mean(axis=1),
            "flops": -share["flops"][idx],
            "latency": -share["latency"][idx],
            "budget": _budget_pressure(mask, feasible_ops, bool(config.budgets.active()))[idx],
        }
        ranks, combined = combine(indicators, config.weights, config.precision)
        mask, pruned = choose(candidates, combined, mask, allowed)
        rounds.append(_round_log(r, candidates, scores, indicators, ranks, combined, pruned))
        logging.info("seed %d round %d: %d candidates, pruned %s", seed, r, len(candidates),
                     ", ".join(f"{space.EDGES[e][0]}->{space.EDGES[e][1]} {space.OPS[o]}" for e, o in pruned))
        bar.update(1)
    bar.close()
    cell = space.Cell(tuple(space.OPS[o] for o in mask.argmax(-1)))
    report = cell_report(cell, costs, benchmark)
    breakdown = {k: v - seconds_before.get(k, 0.0) for k, v in getattr(engine, "seconds", {}).items()}
    return SearchResult(cell, seed, rounds, time.perf_counter() - start, engine_seconds,
                        engine.compile_seconds - compile_before, report, breakdown, endgame=endgame)


def cell_indicators(ntk: np.ndarray, regions: np.ndarray) -> dict[str, np.ndarray]:
    """Each cell's proxy indicators over its draws, lower = better, as the endgame ranks them.

    Args:
      ntk: float[K, D], NTK condition numbers per cell and draw.
      regions: int or float[K, D], linear-region counts per cell and draw.

    Returns:
      {'ntk': float64[K], the mean condition number, infinite if any draw is; 'regions':
      float64[K], minus the mean region count}.
    """
    ntk = np.asarray(ntk, np.float64)
    return {"ntk": np.where(np.isfinite(ntk).all(1), ntk.mean(1), np.inf),
            "regions": -np.asarray(regions, np.float64).mean(1)}


def score_endgame(engine: engine_lib.ProxyEngine, indices: np.ndarray, costs: SpaceCosts, config: SearchConfig,
                  keys, seed: int, round_index: int, cache: ScoreCache | None) -> dict[str, Any]:
    """Scores the state's remaining cells ``indices`` (int[K], ascending) as cells and picks one.

    Each cell's indicators, lower = better: its mean NTK condition number over the draws (infinite
    if any draw is), minus its mean region count, its FLOPs (live edges only with ``config.live_flops``)
    and its latency; they are dense-ranked and combined with the config's weights as in a round
    (``endgame_w_latency`` in place of ``w_latency`` if set; ``w_budget`` has nothing to rank here).
    Ties go to the lower NB201 index. With ``config.endgame_classes`` the pick is ``class_pick``'s
    (the ranks are logged all the same). Returns the log: every cell's scores, ranks and combined
    rank, and 'chosen', the winner's index.
    """
    tags = [("cell", seed, round_index, len(keys), int(i)) for i in indices]
    scores = _cached_scores(cache, tags, lambda todo: engine.score_cells([int(indices[k]) for k in todo], keys))
    ntk = scores["ntk"].astype(np.float64)
    regions = scores["regions"].astype(np.float64)
    indicators = {**cell_indicators(ntk, regions),
                  "flops": costs.cells["mflops_live" if config.live_flops else "mflops"][indices],
                  "latency": costs.cells["latency_ms"][indices]}
    ranks, combined = combine(indicators, config.endgame_weights, config.precision)
    if config.endgame_classes:
        best = class_pick(indicators, config.endgame_weights["latency"], config.precision)
    else:
        best = int(np.argmin(combined))  # first minimum: the lowest index among ties
    cells = [{"index": int(i), "cell": space.from_index(int(i)).to_string(),
              "ntk_condition": [float(c) if math.isfinite(c) else str(c) for c in ntk[k]],
              "regions": [int(c) for c in regions[k]], "mflops": float(indicators["flops"][k]),
              "latency_ms": float(indicators["latency"][k]),
              "ranks": {n: int(v[k]) for n, v in ranks.items()}, "combined": float(combined[k])}
             for k, i in enumerate(indices)]
    return {"round": round_index, "cells": cells, "chosen": int(indices[best])}


def rerank_endgame(endgame: Mapping[str, Any], weights: Mapping[str, float], precision: int = 3,
                   extra: Mapping[str, Mapping[int, float]] | None = None) -> int:
    """The NB201 index of the cell that a logged endgame (``SearchResult.endgame``) picks under
    other weights: its logged scores, ranked as ``score_endgame`` ranks them (the search's own
    weights give back its 'chosen'). Traces what a weight does to the endgame without scoring again;
    the rounds before it stay as they ran. ``extra``: further indicators, lower = better, by name
    and NB201 index (every endgame cell needs one), ranked beside the logged ones with ``weights[name]``."""
    cells = endgame["cells"]
    indicators = logged_indicators(endgame)
    for name, by_index in (extra or {}).items():
        if name in indicators:
            raise ValueError(f"extra indicator {name!r} is one of the logged ones")
        missing = [c["index"] for c in cells if c["index"] not in by_index]
        if missing:
            raise ValueError(f"extra indicator {name!r} has no value for cells {missing[:5]} "
                             f"({len(missing)} of the endgame's {len(cells)})")
        indicators[name] = np.array([by_index[c["index"]] for c in cells], np.float64)
    _, combined = combine(indicators, weights, precision)
    return int(cells[int(np.argmin(combined))]["index"])  # first minimum: cells are logged by index


def logged_indicators(endgame: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The indicators of a logged endgame's cells as ``score_endgame`` ranks them (float64[K] each)."""
    cells = endgame["cells"]
    if not cells:
        raise ValueError("the endgame log has no cells")
    ntk = np.array([[float(v) for v in c["ntk_condition"]] for c in cells])  # 'inf' / 'nan' strings parse
    return {**cell_indicators(ntk, np.array([c["regions"] for c in cells], np.float64)),
            "flops": np.array([c["mflops"] for c in cells], np.float64),
            "latency": np.array([c["latency_ms"] for c in cells], np.float64)}


def latency_classes(latency_ms: np.ndarray, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(class latencies float64[C], ascending; each cell's class int64[K]): cells whose latencies
    agree to ``decimals`` places share a class (in NB201 on one LUT, in effect the cells that run the
    same operators; sums of the same costs in another order differ in the last bit)."""
    keys, label = np.unique(np.round(np.asarray(latency_ms, np.float64), decimals), return_inverse=True)
    return keys, label.reshape(-1).astype(np.int64)


def class_pick(indicators: Mapping[str, np.ndarray], w_latency: float, precision: int = 3) -> int:
    """The position of the cell that the class-aware endgame picks among K scored cells.

    The endgame's cells are grouped into latency classes (``latency_classes``). Each class is
    scored by the best NTK rank among its cells (``dense_rank`` of the condition numbers over all K
    cells), the classes dense-ranked on that score and on their latency, and the ranks combined as
    ``class rank + w_latency * latency rank``; the class with the lowest sum wins (ties: the faster
    class), and within it the cell with the most linear regions (ties: the first, i.e. the lowest
    NB201 index in an endgame log). Why two stages: in the logged endgames the NTK ranks the cheap
    classes well but orders cells within a class backwards, while the region count orders them within
    a class (see reproduction/LATENCY_TRADEOFF.md).

    Args:
      indicators: {'ntk': float64[K], mean condition numbers (inf if a draw is not finite),
        'regions': float64[K], minus the mean region counts, 'latency': float64[K], ms}, as
        ``cell_indicators`` gives them, lower = better.
      w_latency: the weight of the class latency rank; 0 takes the class of the best NTK rank.
    """
    if not math.isfinite(w_latency) or w_latency < 0:
        raise ValueError(f"class_pick: w_latency={w_latency} (finite and non-negative)")
    ntk_rank = dense_rank(indicators["ntk"], precision)
    keys, label = latency_classes(indicators["latency"])
    best = np.full(len(keys), np.iinfo(np.int64).max)
    np.minimum.at(best, label, ntk_rank)
    combined = dense_rank(best, precision) + w_latency * dense_rank(keys, precision)
    members = np.flatnonzero(label == int(np.argmin(combined)))  # first minimum: the faster class
    regions = np.nan_to_num(np.asarray(indicators["regions"], np.float64)[members], nan=np.inf)  # NaN: fewest
    return int(members[int(np.argmin(regions))])


def class_endgame(endgame: Mapping[str, Any], w_latency: float, precision: int = 3) -> int:
    """The NB201 index of the cell that the class-aware endgame (``class_pick``) takes from a logged
    endgame (``SearchResult.endgame``), its scores as logged."""
    return int(endgame["cells"][class_pick(logged_indicators(endgame), w_latency, precision)]["index"])


def pick_endgame(endgame: Mapping[str, Any], weights: Mapping[str, float], precision: int = 3,
                 classes: bool = False, extra: Mapping[str, Mapping[int, float]] | None = None) -> int:
    """The NB201 index of the cell a logged endgame picks under ``weights``: by the class-aware rule
    (``class_endgame`` at ``weights['latency']``) if ``classes``, else by the weighted rank sum
    (``rerank_endgame``, with ``extra`` indicators if given)."""
    if classes:
        if extra:
            raise ValueError("the class-aware endgame takes no extra indicators")
        return class_endgame(endgame, weights["latency"], precision)
    return rerank_endgame(endgame, weights, precision, extra)


def _budget_pressure(mask: np.ndarray, feasible_ops: np.ndarray, active: bool) -> np.ndarray:
    """float64[6, 5]: the share of the feasible cells still within ``mask`` that use each (edge,
    op); zeros without budgets (every op then has the same share of the state's cells)."""
    if not active:
        return np.zeros(mask.shape)
    within = feasible_ops[contains(mask, feasible_ops)]  # int[F, 6]
    return (within[:, :, None] == np.arange(space.NUM_OPS)).mean(axis=0)


def initial_mask(config: SearchConfig) -> np.ndarray:
    """float32[6, 5]: the supernet the search starts from."""
    mask = np.ones((space.NUM_EDGES, space.NUM_OPS), np.float32)
    if config.drop_none:
        mask[:, _NONE] = 0
    return mask


def _without(mask: np.ndarray, edge: int, op: int) -> np.ndarray:
    m = mask.copy()
    m[edge, op] = 0
    return m


def _round_log(r, candidates, scores, indicators, ranks, combined, pruned) -> dict[str, Any]:
    def num(x):
        x = float(x)
        return x if math.isfinite(x) else str(x)

    rows = []
    for k, (e, o) in enumerate(candidates):
        rows.append({"edge": f"{space.EDGES[e][0]}->{space.EDGES[e][1]}", "op": space.OPS[o],
                     "ntk_condition": [num(c) for c in scores["ntk"][k + 1]],
                     "regions": [int(c) for c in scores["regions"][k + 1]],
                     "indicators": {n: num(v[k]) for n, v in indicators.items()},
                     "ranks": {n: int(v[k]) for n, v in ranks.items()},
                     "combined_rank": num(combined[k]),
                     "pruned": (e, o) in pruned})
    return {"round": r,
            "base": {"ntk_condition": [num(c) for c in scores["ntk"][0]],
                     "ntk_flag": [str(f) for f in scores["ntk_flag"][0]],
                     "regions": [int(c) for c in scores["regions"][0]]},
            "candidates": rows,
            "pruned": [{"edge": f"{space.EDGES[e][0]}->{space.EDGES[e][1]}", "op": space.OPS[o]} for e, o in pruned]}


@functools.cache
def default_costs(dataset: str) -> SpaceCosts:
    """NB201's deployed network (C=16, N=5) for ``dataset`` on the default device."""
    return SpaceCosts(sk.Skeleton.for_dataset(dataset, C=16, N=5))


def cell_report(cell: space.Cell, costs: SpaceCosts, benchmark: benchmark_lib.Benchmark | None = None
                ) -> dict[str, Any]:
    """The found cell's accuracies and deployed costs."""
    benchmark = benchmark or benchmark_lib.BuiltinBenchmark()
    lat = latency_lib.estimate_latency(cell, costs.lut, costs.skeleton)
    mem = memory_lib.estimate_memory(cell, costs.skeleton, dead_edges=costs.lut.device.dead_edges)
    return {
        "nb201": benchmark.query(cell).to_json(),
        "hardware": {
            "device": costs.lut.device.name,
            "skeleton": {"C": costs.skeleton.C, "N": costs.skeleton.N, "dataset_resolution": costs.skeleton.resolution},
            "latency_ms": lat.total_ms,
            "latency": lat.to_json(),
            "latency_by_unit_ms": lat.by_unit(),
            "mflops": flops_lib.count_flops(costs.skeleton, cell) / 1e6,
            "mparams": flops_lib.count_params(costs.skeleton, cell) / 1e6,
            "flash_kb": mem.flash_bytes / 1024,
            "sram_kb": mem.sram_bytes / 1024,
            "memory": mem.to_json(),
        },
    }


def format_result(result: Mapping[str, Any], dataset: str = "cifar10") -> str:
    """A readable summary of ``SearchResult.to_json()``."""
    hw = result["hardware"]
    acc = result["nb201"]["test_accuracy"]
    lines = [
        f"found cell #{result['index']} (seed {result['seed']}): {result['cell']}",
        "  NB201 test accuracy: " + ", ".join(f"{d} {a:.2f}%" for d, a in acc.items())
        + f"  [searched on {dataset}]",
        f"  {hw['device']}: latency {hw['latency_ms']:.1f} ms, {hw['mflops']:.2f} MFLOPs, "
        f"{hw['mparams']:.3f} M params, flash {hw['flash_kb']:.1f} KB, peak SRAM {hw['sram_kb']:.1f} KB",
        "  latency by unit (ms): " + ", ".join(f"{u} {ms:.1f}" for u, ms in hw["latency_by_unit_ms"].items()),
    ]
    for rd in result["rounds"]:
        lines.append(f"  round {rd['round']}: {len(rd['candidates'])} candidates, pruned "
                     + ", ".join(f"{p['edge']} {p['op']}" for p in rd["pruned"]))
    if result.get("endgame"):
        eg = result["endgame"]
        lines.append(f"  round {eg['round']}: endgame over {len(eg['cells'])} cells, chose #{eg['chosen']}")
    t = result["time"]
    lines.append(f"  time: {t['wall_s']:.1f} s wall, {t['engine_s']:.1f} s in the proxy engine "
                 f"(of which {t['compile_s']:.1f} s compiling), on {t.get('timed_on', engine_lib.UNRECORDED)}")
    return "\n".join(lines)
