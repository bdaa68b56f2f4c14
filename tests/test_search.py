"""The pruning search: ranking on hand-made indicators (ties, NaN, inf), budgets, the batched round,
resumable batches, determinism, the launcher."""

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cells import space
from micronas_jax import batch, benchmark, inputs, search
from micronas_jax.hardware import latency as latency_lib
from micronas_jax.proxies import engine as engine_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- ranking on hand-made values ---------------------------------------------------------------
def test_dense_rank_ties_nan_and_infinities():
    v = np.array([0.5, -np.inf, 0.1234, 0.1231, np.nan, np.inf, 0.5])
    np.testing.assert_array_equal(search.dense_rank(v, precision=3), [2, 0, 1, 1, 4, 3, 2])
    np.testing.assert_array_equal(search.dense_rank(v, precision=4), [3, 0, 2, 1, 5, 4, 3])
    assert search.dense_rank(np.array([np.nan, np.nan])).tolist() == [0, 0]


def test_relative_decrease_makes_infinities_explicit():
    base = np.array([2.0, 2.0, np.inf, np.inf, 4.0])
    cand = np.array([1.0, np.inf, 3.0, np.inf, 4.0])
    np.testing.assert_array_equal(search.relative_decrease(base, cand), [0.5, -np.inf, 1.0, 0.0, 0.0])
    assert math.isnan(search.relative_decrease(np.array([np.nan]), np.array([1.0]))[0])


def test_combine_and_choose_follow_tenas_on_hand_made_values():
    # Two edges, three candidates each (edge, op); lower indicator = better to prune.
    cands = [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    ind = {"ntk": np.array([0.1, 0.3, 0.2, np.nan, -np.inf, 0.0]),
           "regions": np.array([0.2, 0.1, 0.3, 0.0, 0.5, 0.0]),
           "flops": np.array([-0.0, -0.1, -0.3, -0.0, -0.1, -0.3]),
           "latency": np.array([-0.0, -0.1, -0.3, -0.0, -0.1, -0.3])}
    ranks, combined = search.combine(ind, {"ntk": 1, "regions": 1, "flops": 0, "latency": 0})
    np.testing.assert_array_equal(ranks["ntk"], [2, 4, 3, 5, 0, 1])  # NaN last, -inf first
    np.testing.assert_array_equal(ranks["regions"], [2, 1, 3, 0, 4, 0])
    np.testing.assert_array_equal(combined, [4, 5, 6, 5, 4, 1])
    mask = np.zeros((6, 5), np.float32)
    mask[:2, 1:4] = 1
    mask[2:, 1] = 1
    new, pruned = search.choose(cands, combined, mask, lambda m: True)
    assert pruned == [(0, 1), (1, 3)]
    assert new[0, 1] == 0 and new[1, 3] == 0 and new.sum() == mask.sum() - 2
    # The latency weight turns the choice towards the costly op.
    _, combined = search.combine(ind, {"ntk": 1, "regions": 1, "flops": 0, "latency": 3})
    assert search.choose(cands, combined, mask, lambda m: True)[1] == [(0, 3), (1, 3)]
    # A negative FLOPs weight rewards FLOPs: the cheap op goes instead.
    _, combined = search.combine(ind, {"ntk": 0, "regions": 0, "flops": -1, "latency": 0})
    np.testing.assert_array_equal(combined, [-2, -1, 0, -2, -1, 0])
    assert search.choose(cands, combined, mask, lambda m: True)[1] == [(0, 1), (1, 1)]
    # Ties break towards the lower op index; a disallowed prune falls to the next best.
    tie = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert search.choose(cands, tie, mask, lambda m: True)[1] == [(0, 1), (1, 1)]
    assert search.choose(cands, tie, mask, lambda m: m[0, 1] > 0)[1] == [(0, 2), (1, 1)]


# -- a stand-in engine: deterministic pseudo-scores, no JAX ---------------------------------------
class FakeEngine:
    """Scores a mask by a hash of (mask, key), with conditions sometimes infinite: the search's
    logic at test speed."""

    def __init__(self, dataset="cifar10"):
        self.config = engine_lib.ProxyConfig(dataset=dataset)
        self.source = type("S", (), {"describe": lambda self: "fake"})()
        self.compile_seconds = 0.0
        self.calls = 0

    def score_round(self, base, cands, keys):
        self.calls += 1
        masks = np.concatenate([np.asarray(base)[None], cands])
        seeds = [int(np.asarray(jax.random.key_data(k)).sum()) for k in keys]
        ntk = np.empty((len(masks), len(keys)))
        regions = np.empty((len(masks), len(keys)), np.int64)
        for i, m in enumerate(masks):
            for j, s in enumerate(seeds):
                rng = np.random.default_rng([s, *np.flatnonzero(m.ravel() > 0)])
                ntk[i, j] = np.inf if rng.random() < 0.05 else rng.lognormal(3, 1)
                regions[i, j] = rng.integers(100, 1000)
        flags = np.where(np.isinf(ntk), "singular", "")
        return {"ntk": ntk, "ntk_flag": flags, "regions": regions}

    def score_cells(self, cells, keys):
        self.calls += 1
        masks = np.stack([space.as_cell(c).matrix for c in cells])
        return self.score_round(masks[0], masks[1:], keys)


@pytest.fixture(scope="module")
def costs():
    return search.default_costs("cifar10")


def test_search_meets_random_budgets(costs):
    rng = np.random.default_rng(0)
    engine = FakeEngine()
    for trial in range(12):
        # Budgets drawn between the space's 5th and 60th percentiles, one to four at a time.
        names = rng.choice(["latency_ms", "flash_kb", "sram_kb", "mflops"], size=rng.integers(1, 5), replace=False)
        limits = {n: float(np.percentile(costs.cells[n], rng.uniform(5, 60))) for n in names}
        budgets = search.Budgets(**limits)
        config = search.SearchConfig(repeats=2, budgets=budgets, w_latency=float(rng.choice([0, 2])),
                                     drop_none=bool(trial % 2), w_budget=float(trial % 3 == 0))
        try:
            result = search.search(engine, trial, config, costs=costs, progress=False)
        except search.BudgetError:
            within = search.contains(search.initial_mask(config), costs.ops) & costs.connected
            assert not (costs.feasible(budgets) & within).any()
            continue
        hw = result.report["hardware"]
        for name, limit in limits.items():
            assert hw[name] <= limit + 1e-9, (trial, name, hw[name], limit)
        assert costs.connected[result.cell.index]


def test_budget_pressure_prunes_the_op_fewest_feasible_cells_use(costs):
    budgets = search.Budgets(latency_ms=float(np.percentile(costs.cells["latency_ms"], 30)))
    config = search.SearchConfig(w_ntk=0, w_regions=0, w_budget=1, repeats=1, budgets=budgets)
    first = search.search(FakeEngine(), 0, config, costs=costs, progress=False).rounds[0]
    # Brute force over the space: the cells without 'none' within the budget, and each op's share per edge.
    feasible = costs.ops[(costs.cells["latency_ms"] <= budgets.latency_ms) & (costs.ops != 0).all(axis=1)]
    for row in first["candidates"]:
        e = next(k for k, (a, b) in enumerate(space.EDGES) if f"{a}->{b}" == row["edge"])
        o = space.OPS.index(row["op"])
        assert row["indicators"]["budget"] == pytest.approx((feasible[:, e] == o).mean())
    share0 = [(round(float((feasible[:, 0] == o).mean()), 3), o) for o in range(1, space.NUM_OPS)]
    assert first["pruned"][0] == {"edge": "0->1", "op": space.OPS[min(share0)[1]]}  # ties: lower op index
    # Without budgets the indicator is flat, so it cannot steer the search.
    free = search.search(FakeEngine(), 0, dataclasses.replace(config, budgets=search.Budgets()), costs=costs,
                         progress=False)
    assert all(row["indicators"]["budget"] == 0 for r in free.rounds for row in r["candidates"])


def test_job_keys_leave_out_later_fields_at_their_default():
    job = batch.Job("a", "cifar10", search.SearchConfig(), 0)
    # Result files written before w_budget and endgame stay valid.
    assert "w_budget" not in job.to_json()["config"] and "endgame" not in job.to_json()["config"]
    assert batch.Job("a", "cifar10", search.SearchConfig(w_budget=1), 0).to_json()["config"]["w_budget"] == 1
    assert batch.Job("a", "cifar10", search.SearchConfig(endgame=8), 0).to_json()["config"]["endgame"] == 8
    assert "endgame_w_latency" not in batch.Job("a", "cifar10", search.SearchConfig(endgame=8), 0).to_json()["config"]
    config = search.SearchConfig(endgame=8, endgame_w_latency=2.5)
    assert batch.Job("a", "cifar10", config, 0).to_json()["config"]["endgame_w_latency"] == 2.5


def _replay(config, rounds):
    mask = search.initial_mask(config)
    for r in rounds:
        for p in r["pruned"]:
            mask[[f"{a}->{b}" for a, b in space.EDGES].index(p["edge"]), space.OPS.index(p["op"])] = 0
    return mask


@pytest.mark.parametrize("drop_none,budget_pct,w_latency", [(True, None, 0), (False, 40, 0), (False, 20, 3)])
def test_endgame_scores_every_cell_left_and_keeps_the_best_by_the_ranks(costs, drop_none, budget_pct, w_latency):
    budgets = search.Budgets(latency_ms=None if budget_pct is None else
                             float(np.percentile(costs.cells["latency_ms"], budget_pct)))
    config = search.SearchConfig(repeats=2, drop_none=drop_none, budgets=budgets, w_latency=w_latency, endgame=64)
    result = search.search(FakeEngine(), 4, config, costs=costs, progress=False)
    eg = result.endgame
    assert eg is not None  # two ops per edge leave at most 2^6 = 64 cells
    # The cells it compared are exactly the state's feasible completions, brute-forced over the space.
    mask = _replay(config, result.rounds)
    left = search.contains(mask, costs.ops) & costs.feasible(budgets, require_path=config.require_path)
    if drop_none:
        left &= (costs.ops != 0).all(axis=1)
    assert [c["index"] for c in eg["cells"]] == np.flatnonzero(left).tolist()
    assert 0 < len(eg["cells"]) <= 64 and eg["round"] == len(result.rounds)
    # The winner: the lowest weighted rank sum (ties: the lower index), recomputed here from the log.
    ntk = [np.inf if any(isinstance(v, str) for v in c["ntk_condition"]) else np.mean(c["ntk_condition"])
           for c in eg["cells"]]
    ind = {"ntk": np.array(ntk), "regions": np.array([-np.mean(c["regions"]) for c in eg["cells"]]),
           "flops": np.array([c["mflops"] for c in eg["cells"]]),
           "latency": np.array([c["latency_ms"] for c in eg["cells"]])}
    _, combined = search.combine(ind, config.weights)
    assert result.cell.index == eg["chosen"] == eg["cells"][int(np.argmin(combined))]["index"]
    # Re-ranked from the JSON log: the search's own weights give its pick back; latency alone, the
    # fastest cell (to 3 decimals; ties to the lower index).
    logged = json.loads(json.dumps(result.to_json()))["endgame"]
    assert search.rerank_endgame(logged, config.weights) == eg["chosen"]
    fastest = min(logged["cells"], key=lambda c: (round(c["latency_ms"], 3), c["index"]))["index"]
    assert search.rerank_endgame(logged, {"latency": 1.0}) == fastest
    for name, limit in budgets.active().items():
        assert result.report["hardware"][name] <= limit
    # Up to the endgame it prunes as the search without one.
    plain = search.search(FakeEngine(), 4, dataclasses.replace(config, endgame=0), costs=costs, progress=False)
    assert [r["pruned"] for r in plain.rounds[:len(result.rounds)]] == [r["pruned"] for r in result.rounds]
    assert "endgame" in json.dumps(result.to_json()) and "endgame" not in plain.to_json()
    assert "endgame over" in search.format_result(result.to_json())


def test_endgame_ranks_hand_made_cells_with_ties_and_infinities(costs):
    class Scripted:
        def score_cells(self, cells, keys):
            return {"ntk": np.array([[10.0, 20.0], [np.inf, 1.0], [15.0, 15.0], [30.0, 30.0]]),
                    "ntk_flag": np.array([["", ""], ["singular", ""], ["", ""], ["", ""]]),
                    "regions": np.array([[100, 100], [900, 900], [100, 100], [500, 500]])}

    cells = np.array([10, 20, 30, 40])
    # NTK ranks: 15, inf, 15, 30 -> 0, 2, 0, 1; regions -100, -900, -100, -500 -> 2, 0, 2, 1.
    eg = search.score_endgame(Scripted(), cells, costs, search.SearchConfig(), search.round_keys(0, 0, 2), 0, 0,
                              None)
    assert [c["combined"] for c in eg["cells"]] == [2, 2, 2, 2]
    assert eg["chosen"] == 10  # all tied: the lowest index
    assert eg["cells"][1]["ntk_condition"][0] == "inf"
    eg = search.score_endgame(Scripted(), cells, costs, search.SearchConfig(w_regions=2), search.round_keys(0, 0, 2),
                              0, 0, None)
    assert eg["chosen"] == 20  # many regions outweigh the singular draw
    with pytest.raises(ValueError, match="endgame must be 0"):
        search.SearchConfig(endgame=-1)
    # A negative FLOPs weight: among cells tied on the proxies, the most FLOPs wins.
    cells = np.array([20, 30, 40, 50, 60])  # MFLOPs 78.6, 43.2, 47.1, 90.4, 19.6: neither extreme comes first
    tied = {"ntk": np.full((5, 2), 10.0), "ntk_flag": np.full((5, 2), ""), "regions": np.full((5, 2), 100)}
    scripted = type("Tied", (), {"score_cells": lambda self, c, k: tied})()
    mflops = costs.cells["mflops"][cells]
    for w_flops, best in ((-1, cells[np.argmax(mflops)]), (1, cells[np.argmin(mflops)])):
        eg = search.score_endgame(scripted, cells, costs, search.SearchConfig(w_flops=w_flops),
                                  search.round_keys(0, 0, 2), 0, 0, None)
        assert eg["chosen"] == best and best != cells[0]


def test_rerank_reads_infinite_draws_from_the_log_and_refuses_an_empty_one():
    cell = {"ntk_condition": [10.0, 10.0], "regions": [100, 100], "mflops": 1.0, "latency_ms": 5.0}
    log = {"cells": [{**cell, "index": 7, "ntk_condition": [1.0, "inf"]}, {**cell, "index": 9},
                     {**cell, "index": 3, "ntk_condition": ["nan", 1.0], "regions": [900, 900]}]}
    # #7's best draw and #3's regions do not count for them: a non-finite draw ranks the cell last on NTK.
    assert search.rerank_endgame(log, {"ntk": 1.0}) == 9
    assert search.rerank_endgame(log, {"regions": 1.0}) == 3
    assert search.rerank_endgame(log, {"latency": 1.0}) == 7  # all tie: the first logged
    with pytest.raises(ValueError, match="no cells"):
        search.rerank_endgame({"cells": []}, {"ntk": 1.0})


def test_class_pick_ranks_latency_classes_by_their_best_ntk_then_takes_most_regions():
    # Three latency classes: 10 ms (cells 0, 1), 20 ms (2, 3, 4; 20.04 rounds into it), 30 ms (5).
    lat = np.array([10.0, 10.0, 20.0, 20.04, 19.98, 30.0])
    ntk = np.array([50.0, 40.0, 5.0, 60.0, 70.0, 1.0])  # NTK ranks 3, 2, 1, 4, 5, 0: best per class 2, 1, 0
    regions = -np.array([9.0, 1.0, 2.0, 8.0, 8.0, 3.0])  # minus counts; in 20 ms, #3 and #4 tie at 8
    ind = {"ntk": ntk, "regions": regions, "latency": lat}
    keys, label = search.latency_classes(lat)
    np.testing.assert_allclose(keys, [10.0, 20.0, 30.0])
    assert label.tolist() == [0, 0, 1, 1, 1, 2]
    # Weight 0: the class holding the best NTK rank (30 ms), its only cell.
    assert search.class_pick(ind, 0.0) == 5
    # Class ranks by best NTK: 30 ms 0, 20 ms 1, 10 ms 2; latency ranks 0, 1, 2 from 10 ms up.
    # w = 1: sums 2, 2, 2 for 10, 20, 30 ms: a tie goes to the faster class, and within it the cell
    # with the most regions (#0, not #1 whose NTK gave the class its rank).
    assert search.class_pick(ind, 1.0) == 0
    # w = 0.5: 10 ms 2.0, 20 ms 1.5, 30 ms 1.0 -> 30 ms; w = 0.9: 2.0, 1.9, 1.8 -> still 30 ms.
    assert search.class_pick(ind, 0.5) == 5 and search.class_pick(ind, 0.9) == 5
    # Without the 30 ms class, 20 ms wins at w < 1; its cells #3 and #4 tie on regions: the first.
    sub = {k: v[:5] for k, v in ind.items()}
    assert search.class_pick(sub, 0.5) == 3
    # The NTK of the other cells in the class does not matter, nor does the NTK of the picked cell.
    worse = {**sub, "ntk": np.array([50.0, 40.0, 5.0, np.inf, np.nan])}
    assert search.class_pick(worse, 0.5) == 3
    # NaN regions count as the fewest; an infinite NTK ranks its class after every finite one.
    nan = {**sub, "regions": np.array([-9.0, -1.0, -2.0, np.nan, -8.0])}
    assert search.class_pick(nan, 0.5) == 4
    inf = {**sub, "ntk": np.array([50.0, 40.0, np.inf, np.inf, np.inf])}
    assert search.class_pick(inf, 0.0) == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="w_latency"):
            search.class_pick(ind, bad)


def test_class_endgame_reads_a_log_like_rerank_endgame():
    cell = {"mflops": 1.0}
    log = {"cells": [{**cell, "index": 3, "ntk_condition": [1.0, 3.0], "regions": [5, 5], "latency_ms": 40.0},
                     {**cell, "index": 8, "ntk_condition": [9.0, "inf"], "regions": [9, 9], "latency_ms": 40.0},
                     {**cell, "index": 11, "ntk_condition": [4.0, 4.0], "regions": [1, 1], "latency_ms": 10.0}]}
    # Weight 0: the 40 ms class (#3's NTK is the best), its most regions (#8, despite its infinite draw).
    assert search.class_endgame(log, 0.0) == 8
    assert search.class_endgame(log, 2.0) == 11  # the latency rank outweighs the class rank
    with pytest.raises(ValueError, match="no cells"):
        search.class_endgame({"cells": []}, 0.5)


def test_a_search_with_the_class_aware_endgame_is_its_rerank(tmp_path, costs):
    configs = {"acc": search.SearchConfig(repeats=1, endgame=64),
               "cls": search.SearchConfig(repeats=1, endgame=64, endgame_w_latency=0.5, endgame_classes=True)}
    records = batch.run(batch.grid([0, 1], ["cifar10"], configs), tmp_path / "runs.jsonl", lambda d: FakeEngine(d),
                        costs=lambda d: costs, progress=False)
    found = {(r["job"]["name"], r["job"]["seed"]): r for r in records}
    assert found["cls", 0]["job"]["config"]["endgame_classes"] is True
    assert "endgame_classes" not in found["acc", 0]["job"]["config"]  # earlier files' keys stay valid
    # The same rounds; the class rule on the weight-0 search's logged endgame gives the class search's cell.
    for s in (0, 1):
        assert [c["index"] for c in found["cls", s]["result"]["endgame"]["cells"]] == \
            [c["index"] for c in found["acc", s]["result"]["endgame"]["cells"]]
        eg = found["cls", s]["result"]["endgame"]
        assert eg["chosen"] == found["cls", s]["result"]["index"] == search.class_endgame(
            found["acc", s]["result"]["endgame"], 0.5)
    rows = {(r["name"], r["endgame_w_latency"]): r for r in batch.rerank_endgames(records, [0.0, 0.5])}
    assert rows["cls", 0.5]["rule"] == "classes" and rows["acc", 0.5]["rule"] == "ranks"  # each as it ran
    assert rows["cls", 0.5]["cells"] == [found["cls", s]["result"]["index"] for s in (0, 1)]
    assert batch.rerank_endgames(records, [0.5], classes=True)[0]["cells"] == rows["cls", 0.5]["cells"]
    assert rows["acc", 0.0]["cells"] == [found["acc", s]["result"]["index"] for s in (0, 1)]
    with pytest.raises(ValueError, match="cls: the class-aware endgame"):
        batch.rerank_endgames(records, [0.5], proxy_weights={"ntk": 1.0})
    # One configuration name whose searches ran with both rules: said, not picked by the first's.
    mixed = [found["cls", 0], {**found["acc", 1], "job": {**found["acc", 1]["job"], "name": "cls"}}]
    with pytest.raises(ValueError, match=r"cls \(cifar10\): its searches ran with both endgame rules"):
        batch.rerank_endgames(mixed, [0.5])
    weights = {**configs["acc"].endgame_weights, "latency": 0.5}
    assert batch.rerank_endgames(mixed, [0.5], classes=False)[0]["cells"] == [
        search.rerank_endgame(r["result"]["endgame"], weights) for r in mixed]
    # pick_endgame is the one switch both replays go through.
    eg = found["acc", 0]["result"]["endgame"]
    assert search.pick_endgame(eg, weights, classes=True) == search.class_endgame(eg, 0.5)
    assert search.pick_endgame(eg, weights) == search.rerank_endgame(eg, weights)
    with pytest.raises(ValueError, match="no extra indicators"):
        search.pick_endgame(eg, weights, classes=True, extra={"x": {c["index"]: 0.0 for c in eg["cells"]}})
    # Capped: the class search re-picks by its own rule among the cells held (which moves the classes'
    # NTK ranks, so not necessarily to the same cell).
    for r in batch.capped_endgames(records, [1.5]):
        if r["name"] == "cls":
            assert r["searches"] >= 1
            for s, i in zip(r["seeds"], r["cells"], strict=True):
                res = found["cls", s]["result"]
                held = [c for c in res["endgame"]["cells"]
                        if c["latency_ms"] <= res["hardware"]["latency_ms"] / 1.5 * (1 + 1e-9)]
                assert i == search.class_endgame({"cells": held}, 0.5)
    with pytest.raises(ValueError, match="endgame_classes needs an endgame"):
        search.SearchConfig(endgame_classes=True)


def _tau_b(x, y):
    """Kendall's tau-b by counting pairs: the float64 reference for ``batch.window_stats``."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = int(x[i] > x[j]) - int(x[i] < x[j]), int(y[i] > y[j]) - int(y[i] < y[j])  # infs tie
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def test_window_stats_describe_the_proxies_within_a_latency_window(tmp_path, costs):
    records = batch.run(batch.grid([0, 1, 2], ["cifar10"], {"acc": search.SearchConfig(repeats=2, endgame=64)}),
                        tmp_path / "runs.jsonl", lambda d: FakeEngine(d), costs=lambda d: costs, progress=False)
    table = benchmark.BuiltinBenchmark().test_accuracies("cifar10")
    lat = np.concatenate([[c["latency_ms"] for c in r["result"]["endgame"]["cells"]] for r in records])
    lo, hi = np.percentile(lat, [20, 80])
    never = float(lat.max()) + 1.0
    rows = batch.window_stats(records, [(lo, hi), (never, never + 1)])
    assert [r["window_ms"] for r in rows] == [[lo, hi], [never, never + 1]]
    assert rows[1]["searches"] == 0 and rows[1]["empty"] == 3 and "random" not in rows[1]
    r = rows[0]
    want = {k: [] for k in ("random", "best", "regions_pick", "ntk_pick", "tau_regions", "tau_ntk", "n")}
    for rec in records:
        inside = [c for c in rec["result"]["endgame"]["cells"] if lo <= c["latency_ms"] < hi]
        if not inside:
            continue
        acc = np.array([table[c["index"]] for c in inside])
        regions = np.array([np.mean(c["regions"]) for c in inside])
        ntk = np.array([np.mean([float(v) for v in c["ntk_condition"]]) for c in inside])
        ntk[~np.isfinite(ntk)] = np.inf
        want["n"].append(len(inside))
        want["random"].append(acc.mean())
        want["best"].append(acc.max())
        want["regions_pick"].append(acc[int(np.argmax(regions))])
        want["ntk_pick"].append(acc[int(np.argmin(ntk))])
        if len(inside) >= 3:
            want["tau_regions"].append(_tau_b(regions, acc))
            want["tau_ntk"].append(_tau_b(-ntk, acc))
    assert r["searches"] == len(want["n"]) >= 2 and r["cells"] == {"min": min(want["n"]), "max": max(want["n"])}
    for k in ("random", "best", "regions_pick", "ntk_pick"):
        assert r[k]["mean"] == pytest.approx(np.mean(want[k]))
    assert r["tau"]["regions"] == pytest.approx(np.mean(want["tau_regions"]))
    assert r["tau"]["ntk"] == pytest.approx(np.mean(want["tau_ntk"]))
    assert r["best"]["mean"] >= max(r["random"]["mean"], r["regions_pick"]["mean"], r["ntk_pick"]["mean"])
    with pytest.raises(ValueError, match=r"5\.0-1\.0 ms"):
        batch.window_stats(records, [(5.0, 1.0)])


def test_rerank_endgames_of_a_batch_and_its_launcher(tmp_path, costs):
    path = tmp_path / "runs.jsonl"
    configs = {"acc": search.SearchConfig(repeats=1, endgame=64),
               "lat": search.SearchConfig(repeats=1, endgame=64, w_latency=2),
               "plain": search.SearchConfig(repeats=1, w_latency=1),  # no endgame: not re-ranked
               "acc_eg5": search.SearchConfig(repeats=1, endgame=64, endgame_w_latency=5)}
    records = batch.run(batch.grid([0, 1], ["cifar10"], configs), path, lambda d: FakeEngine(d),
                        costs=lambda d: costs, progress=False)
    rows = batch.rerank_endgames(records, [0.0, 2.0, 1e6])
    assert [(r["name"], r["endgame_w_latency"]) for r in rows] == [(n, w) for n in ("acc", "lat", "acc_eg5")
                                                           for w in (0.0, 2.0, 1e6)]
    found = {(r["job"]["name"], r["job"]["seed"]): r["result"] for r in records}
    # Re-ranking is exact: what a search with that endgame weight finds (same rounds, same scores).
    again = batch.rerank_endgames(records, [5.0])
    assert again[0]["name"] == "acc" and again[0]["cells"] == [found["acc_eg5", s]["index"] for s in (0, 1)]
    assert [r["cells"] for r in again if r["name"] == "acc_eg5"] == [again[0]["cells"]]
    acc = {r["index"]: r["nb201"]["test_accuracy"]["cifar10"] for r in found.values()}
    table = benchmark.BuiltinBenchmark().test_accuracies("cifar10")
    c100 = {r["index"]: r["nb201"]["test_accuracy"]["cifar100"] for r in found.values()}
    for r in rows:
        if (r["name"], r["endgame_w_latency"]) in {("acc", 0.0), ("lat", 2.0), ("acc_eg5", 5.0)}:  # as they ran
            assert r["cells"] == [found[r["name"], s]["index"] for s in (0, 1)]
            assert r["accuracy"]["mean"] == pytest.approx(np.mean([acc[i] for i in r["cells"]]))
            other = np.mean([c100[i] for i in r["cells"]])
            assert r["test_accuracy"]["cifar100"] == pytest.approx(other) and "ImageNet16-120" in r["test_accuracy"]
        if r["endgame_w_latency"] == 1e6:  # the fastest cell of each endgame
            for s, i in zip(r["seeds"], r["cells"], strict=True):
                lat = {c["index"]: c["latency_ms"] for c in found[r["name"], s]["endgame"]["cells"]}
                assert lat[i] == pytest.approx(min(lat.values()), abs=1e-3)
        # best_held: the most accurate logged endgame cell no slower than the pick, from the table.
        held = []
        for s, i in zip(r["seeds"], r["cells"], strict=True):
            cells = found[r["name"], s]["endgame"]["cells"]
            pick_ms = next(c["latency_ms"] for c in cells if c["index"] == i)
            held.append(max(table[c["index"]] for c in cells if c["latency_ms"] <= pick_ms * (1 + 1e-9)))
        assert r["best_held"]["mean"] == pytest.approx(np.mean(held))
        assert r["best_held"]["mean"] >= r["accuracy"]["mean"]
    # Other proxy weights in the endgame: regions alone pick each endgame's most regions (first by index).
    by_regions = batch.rerank_endgames(records, [0.0], proxy_weights={"ntk": 0.0, "regions": 1.0})
    for r in by_regions:
        for s, i in zip(r["seeds"], r["cells"], strict=True):
            cells = found[r["name"], s]["endgame"]["cells"]
            assert i == cells[int(np.argmax([np.mean(c["regions"]) for c in cells]))]["index"]
    with pytest.raises(ValueError, match="regions=-1"):
        batch.rerank_endgames(records, [0.0], proxy_weights={"regions": -1.0})
    # FLOPs alone, rewarded: each endgame's cell with the most logged FLOPs (first by index).
    by_flops = batch.rerank_endgames(records, [0.0], proxy_weights={"ntk": 0.0, "regions": 0.0, "flops": -1.0})
    for r in by_flops:
        for s, i in zip(r["seeds"], r["cells"], strict=True):
            cells = found[r["name"], s]["endgame"]["cells"]
            assert i == cells[int(np.argmax([c["mflops"] for c in cells]))]["index"]
    with pytest.raises(ValueError, match="flops=inf"):
        batch.rerank_endgames(records, [0.0], proxy_weights={"flops": float("inf")})
    with pytest.raises(ValueError, match="latency=1"):
        batch.rerank_endgames(records, [0.0], proxy_weights={"latency": 1.0})
    # Capped: each endgame held to its own pick's latency / k, ranked among those cells alone.
    capped = batch.capped_endgames(records, [1.0, 2.0, 1e9])
    assert [(r["name"], r["ratio"]) for r in capped] == [(n, k) for n in ("acc", "lat", "acc_eg5")
                                                         for k in (1.0, 2.0, 1e9)]
    for r in capped:
        assert r["searches"] + r["empty"] == 2 and len(r["seeds"]) == r["searches"]
        if r["ratio"] == 1e9:  # no cell is that fast: every search counted as empty
            assert r["searches"] == 0
        if not r["searches"]:
            assert "accuracy" not in r
            continue
        cfg = configs[r["name"]]
        weights = {"ntk": cfg.w_ntk, "regions": cfg.w_regions, "flops": cfg.w_flops,
                   "latency": cfg.w_latency if cfg.endgame_w_latency is None else cfg.endgame_w_latency}
        picked, rand, best = [], [], []
        for s, i in zip(r["seeds"], r["cells"], strict=True):
            res = found[r["name"], s]
            limit = res["hardware"]["latency_ms"] / r["ratio"]
            held = [c for c in res["endgame"]["cells"] if c["latency_ms"] <= limit * (1 + 1e-9)]
            assert i == search.rerank_endgame({**res["endgame"], "cells": held}, weights)
            assert next(c["latency_ms"] for c in held if c["index"] == i) <= limit * (1 + 1e-9)
            picked.append(table[i])
            rand.append(np.mean([table[c["index"]] for c in held]))
            best.append(max(table[c["index"]] for c in held))
        assert r["accuracy"]["mean"] == pytest.approx(np.mean(picked))
        assert r["random"]["mean"] == pytest.approx(np.mean(rand)) and r["best"]["mean"] == pytest.approx(np.mean(best))
        if r["ratio"] == 1.0:  # the search's own pick is within its own latency
            assert r["searches"] == 2 and r["empty"] == 0
    with pytest.raises(ValueError, match="ratios: 0"):
        batch.capped_endgames(records, [0.0])
    # The class-aware endgame, from the same logs: each pick is class_endgame's on that search's endgame.
    by_class = batch.rerank_endgames(records, [0.0, 1e6], classes=True)
    assert {r["rule"] for r in by_class} == {"classes"} and {r["rule"] for r in rows} == {"ranks"}
    for r in by_class:
        for s, i in zip(r["seeds"], r["cells"], strict=True):
            cells = found[r["name"], s]["endgame"]["cells"]
            assert i == search.class_endgame(found[r["name"], s]["endgame"], r["endgame_w_latency"])
            if r["endgame_w_latency"] == 1e6:  # the fastest class
                lat = {c["index"]: c["latency_ms"] for c in cells}
                assert lat[i] == pytest.approx(min(lat.values()), abs=0.05)
    with pytest.raises(ValueError, match="class-aware"):
        batch.rerank_endgames(records, [0.0], proxy_weights={"regions": 1.0}, classes=True)
    fastest = next(r for r in rows if r["endgame_w_latency"] == 1e6)
    slowest_ok = next(r for r in rows if r["name"] == fastest["name"] and r["endgame_w_latency"] == 0.0)
    assert fastest["best_held"]["mean"] <= slowest_ok["best_held"]["mean"]  # fewer cells are held faster
    out = tmp_path / "rerank.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0,2", f"--json_out={out}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["baseline"] == "acc" and "vs acc" in run.stdout and "reference --arch #11472" in run.stdout
    base = np.mean([found["acc", s]["hardware"]["latency_ms"] for s in (0, 1)])
    for r in doc["rows"]:
        assert r["vs_baseline"]["latency_ratio"] == pytest.approx(base / r["latency_ms"]["mean"])
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--baseline=nope"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'nope'" in bad.stderr
    # --seeds: rows and baseline over those seeds alone.
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0", "--seeds=1", f"--json_out={out}"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [1] and all(r["seeds"] == [1] for r in doc["rows"])
    acc_row = next(r for r in doc["rows"] if r["name"] == "acc")
    assert acc_row["cells"] == [found["acc", 1]["index"]]
    assert acc_row["vs_baseline"]["latency_ratio"] == pytest.approx(1.0)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0.5", "--classes", "--windows=0-1e9", f"--json_out={out}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["rule"] == "classes" and "class-aware endgame" in run.stdout and "within latency windows" in run.stdout
    # Every endgame cell; against 'acc' as it ran.
    assert [{k: v for k, v in r.items() if k != "vs_baseline"} for r in doc["windows"]] == \
        batch.window_stats(records, [(0.0, 1e9)])
    acc_window = next(r for r in doc["windows"] if r["name"] == "acc")
    assert acc_window["vs_baseline"]["best_change"] >= 0  # the search's own pick is among the cells
    assert [r["cells"] for r in doc["rows"]] == [r["cells"] for r in batch.rerank_endgames(records, [0.5],
                                                                                          classes=True)]
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--classes", "--w_regions=0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--w_regions" in bad.stderr
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--windows=400"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'400'" in bad.stderr
    none = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                           "--seeds=5-7"], capture_output=True, text=True, timeout=300)
    assert none.returncode != 0 and "--seeds=5-7" in none.stderr
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0", "--w_ntk=0", "--w_regions=1", f"--json_out={out}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["proxy_weights"] == {"ntk": 0.0, "regions": 1.0} and "endgame regions weight 1" in run.stdout
    assert [r["cells"] for r in doc["rows"]] == [r["cells"] for r in by_regions]
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0", "--w_ntk=0", "--w_regions=0", "--w_flops=-1", f"--json_out={out}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["proxy_weights"]["flops"] == -1.0 and "endgame flops weight -1" in run.stdout
    assert [r["cells"] for r in doc["rows"]] == [r["cells"] for r in by_flops]
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0", "--cap_ratios=1,2", f"--json_out={out}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert [(r["name"], r["ratio"]) for r in doc["capped"]] == [(n, k) for n in ("acc", "lat", "acc_eg5")
                                                                for k in (1.0, 2.0)]
    by_key = {(r["name"], r["ratio"]): r for r in capped}
    assert all(r["cells"] == by_key[r["name"], r["ratio"]]["cells"] for r in doc["capped"])
    assert "own pick's latency / k" in run.stdout and "random %" in run.stdout


def test_live_flops_leave_out_the_edges_that_reach_no_output(costs):
    live, nb201 = costs.cells["mflops_live"], costs.cells["mflops"]
    dead = (costs.ops != space.OPS.index("none")) & ~latency_lib.live_edges(space.all_matrices(), "dropped")
    np.testing.assert_array_equal(live[~dead.any(1)], nb201[~dead.any(1)])
    assert (live <= nb201).all()
    dead_conv = (dead & np.isin(costs.ops, [space.OPS.index("nor_conv_1x1"), space.OPS.index("nor_conv_3x3")])).any(1)
    assert dead_conv.sum() > 1000 and (live[dead_conv] < nb201[dead_conv]).all()
    # #4609's convolutions into nodes 1 and 2 reach the output only through `none`: it runs as #6960.
    dead_cell = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|none~2|").index
    run_as = space.parse("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|").index
    assert live[dead_cell] == nb201[run_as] == live[run_as] < nb201[dead_cell]
    # The endgame's FLOPs reward, proxies tied: NB201's count picks the dead-edge cell, the live one does not.
    cells = np.array(sorted([dead_cell, run_as, space.parse(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|").index]))
    tied = {"ntk": np.full((3, 2), 10.0), "ntk_flag": np.full((3, 2), ""), "regions": np.full((3, 2), 100)}
    scripted = type("Tied", (), {"score_cells": lambda self, c, k: tied})()
    picks = {lf: search.score_endgame(scripted, cells, costs, search.SearchConfig(w_flops=-1, live_flops=lf),
                                      search.round_keys(0, 0, 2), 0, 0, None)["chosen"] for lf in (False, True)}
    assert picks[False] == dead_cell
    assert picks[True] == cells[np.argmax(live[cells])] != dead_cell


@pytest.mark.parametrize("name", ["w_ntk", "w_regions", "w_latency", "w_budget"])
def test_only_the_flops_weight_may_be_negative(name):
    assert search.SearchConfig(w_flops=-2.5).w_flops == -2.5
    with pytest.raises(ValueError, match=f"{name} must be finite and non-negative, got -1"):
        search.SearchConfig(**{name: -1.0})
    with pytest.raises(ValueError, match="w_flops must be finite, got nan"):
        search.SearchConfig(w_flops=float("nan"))


def test_endgame_latency_weight_needs_an_endgame_and_replaces_only_the_endgames():
    with pytest.raises(ValueError, match=r"endgame_w_latency=2\.0 needs an endgame"):
        search.SearchConfig(endgame_w_latency=2.0)
    with pytest.raises(ValueError, match="endgame_w_latency must be finite and non-negative, got -1"):
        search.SearchConfig(endgame=64, endgame_w_latency=-1.0)
    config = search.SearchConfig(w_latency=1.0, w_flops=0.5, endgame=64, endgame_w_latency=3.0)
    assert config.weights["latency"] == 1.0
    assert config.endgame_weights == {**config.weights, "latency": 3.0}
    assert search.SearchConfig(w_latency=1.0, endgame=64).endgame_weights == search.SearchConfig(w_latency=1.0).weights


def test_impossible_budget_fails_at_start_naming_it(costs):
    with pytest.raises(search.BudgetError, match=r"latency_ms <= 1 \(the least any cell reaches is"):
        search.search(FakeEngine(), 0, search.SearchConfig(budgets=search.Budgets(latency_ms=1.0)),
                      costs=costs, progress=False)
    # Each budget alone can be met, but not together (in this space one cell is the cheapest by
    # every measure, so anti-correlated costs are made up).
    made_up = copy.copy(costs)
    x = np.arange(space.NUM_CELLS, dtype=np.float64)
    made_up.cells = {**costs.cells, "latency_ms": x, "flash_kb": space.NUM_CELLS - x}
    with pytest.raises(search.BudgetError, match="at once"):
        made_up.check(search.Budgets(latency_ms=100, flash_kb=200),
                      search.initial_mask(search.SearchConfig(drop_none=False)))


def test_search_structure_and_determinism(costs):
    config = search.SearchConfig(repeats=2)
    a = search.search(FakeEngine(), 5, config, costs=costs, progress=False)
    b = search.search(FakeEngine(), 5, config, costs=costs, progress=False)
    assert a.cell == b.cell
    assert [len(r["candidates"]) for r in a.rounds] == [24, 18, 12]
    assert all(len(r["pruned"]) == 6 for r in a.rounds)
    assert "none" not in a.cell.ops
    keep = search.search(FakeEngine(), 5, search.SearchConfig(repeats=2, drop_none=False), costs=costs,
                         progress=False)
    assert [len(r["candidates"]) for r in keep.rounds] == [30, 24, 18, 12]
    json.dumps(a.to_json())  # JSON-ready


def test_score_cache_reuses_masks_of_the_same_seed_and_round(costs):
    engine, cache = FakeEngine(), {}
    a = search.search(engine, 3, search.SearchConfig(repeats=1), costs=costs, cache=cache, progress=False)
    calls = engine.calls
    b = search.search(engine, 3, search.SearchConfig(repeats=1), costs=costs, cache=cache, progress=False)
    assert engine.calls == calls and a.cell == b.cell  # every mask of the same search was cached
    c = search.search(engine, 3, search.SearchConfig(repeats=1, w_latency=5), costs=costs, cache=cache,
                      progress=False)
    assert c.rounds[0]["candidates"] == a.rounds[0]["candidates"] or engine.calls > calls


# -- batches: resume after a kill ------------------------------------------------------------------
def test_batch_resumes_after_a_kill_without_losing_finished_searches(tmp_path, costs, monkeypatch):
    path = tmp_path / "runs.jsonl"
    configs = {"acc": search.SearchConfig(repeats=1), "lat": search.SearchConfig(repeats=1, w_latency=2)}
    jobs = batch.grid([0, 1], ["cifar10"], configs)
    ran = []
    real = search.search

    def killed_on_third(engine, seed, config, **kw):
        if len(ran) == 2:
            raise KeyboardInterrupt("killed")
        ran.append(seed)
        return real(engine, seed, config, **kw)

    monkeypatch.setattr(search, "search", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        batch.run(jobs, path, lambda d: FakeEngine(d), costs=lambda d: costs, progress=False)
    assert len(path.read_text().splitlines()) == 2
    with open(path, "a") as f:
        f.write('{"key": "half a line')  # a kill in the middle of a write
    monkeypatch.setattr(search, "search", real)
    calls = []

    def counting(engine, seed, config, **kw):
        calls.append(seed)
        return real(engine, seed, config, **kw)

    monkeypatch.setattr(search, "search", counting)
    records = batch.run(jobs, path, lambda d: FakeEngine(d), costs=lambda d: costs, progress=False)
    assert calls == [1, 1]  # only the two searches not finished before the kill
    assert [r["job"]["seed"] for r in records] == [0, 0, 1, 1]
    assert len(path.read_text().splitlines()) == 4
    rows = batch.summarize(records)
    assert [r["searches"] for r in rows] == [2, 2]
    assert all(r["timed_on"] == [engine_lib.timed_on()] for r in rows)
    del records[0]["result"]["time"]["timed_on"]  # as in results files older than the field
    assert batch.summarize(records)[0]["timed_on"] == sorted([engine_lib.UNRECORDED, engine_lib.timed_on()])
    assert "acc" in batch.format_summary(rows)
    # A rerun runs nothing.
    calls.clear()
    again = batch.run(jobs, path, lambda d: FakeEngine(d), costs=lambda d: costs, progress=False)
    assert calls == [] and [r["result"]["index"] for r in again] == [r["result"]["index"] for r in records]


def test_corrupt_results_file_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('not json\n{"key": "k"}\n')
    with pytest.raises(ValueError, match="corrupt at line 1"):
        batch.read_results(path)


# -- the real engine --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_engine():
    config = engine_lib.ProxyConfig(C=2, N=1, batch_size=8, lr_batch=64, lr_batches=2)
    return engine_lib.ProxyEngine(config)


def test_summary_columns_stay_aligned_with_long_configuration_names():
    stat = {"mean": 1.0, "std": 0.0}
    long = "w_flops=-3,w_latency=0,keep_none,endgame=729,latency_ms<=536"
    rows = [{"name": n, "dataset": "cifar10", "searches": 10, "accuracy": stat, "latency_ms": stat,
             "mflops": stat, "wall_s": stat} for n in ("w_latency=3", long)]
    head, _, *lines = batch.format_summary(rows).splitlines()
    # Every line puts the dataset column where the header does, and keeps the whole name.
    col = head.index("dataset")
    assert all(line[col:].startswith("cifar10") for line in lines)
    assert lines[1].startswith(long + " ")


def test_batched_round_equals_one_by_one(small_engine):
    base = search.initial_mask(search.SearchConfig())
    cands = np.stack([search._without(base, e, o) for e, o in [(0, 1), (2, 3), (5, 4), (3, 2)]])
    keys = search.round_keys(0, 0, 2)
    together = small_engine.score_round(base, cands, keys)
    for k, m in enumerate(cands):
        alone = small_engine.score_round(base, m[None], keys)
        np.testing.assert_allclose(alone["ntk"][1], together["ntk"][k + 1], rtol=1e-4)
        np.testing.assert_array_equal(alone["regions"][1], together["regions"][k + 1])
    np.testing.assert_allclose(alone["ntk"][0], together["ntk"][0], rtol=1e-4)


def test_real_search_same_seed_same_cell(small_engine, costs):
    config = search.SearchConfig(repeats=1, w_latency=1)
    a = search.search(small_engine, 7, config, costs=costs, progress=False)
    b = search.search(engine_lib.ProxyEngine(small_engine.config), 7, config, costs=costs, progress=False)
    assert a.cell == b.cell
    assert [r["pruned"] for r in a.rounds] == [r["pruned"] for r in b.rounds]
    assert a.report["nb201"]["index"] == a.cell.index
    assert "found cell #" in search.format_result(a.to_json())


def test_real_endgame_scores_each_cell_as_the_engine_scores_it_alone(small_engine, costs):
    budgets = search.Budgets(latency_ms=536.0)
    config = search.SearchConfig(repeats=1, drop_none=False, budgets=budgets, endgame=64)
    result = search.search(small_engine, 2, config, costs=costs, progress=False)
    eg = result.endgame
    assert result.cell.index == eg["chosen"] and result.report["hardware"]["latency_ms"] <= 536.0
    keys = search.round_keys(2, eg["round"], 1)
    for c in [*eg["cells"][:3], next(c for c in eg["cells"] if c["index"] == eg["chosen"])]:
        alone = small_engine.score_cells([c["index"]], keys)
        if alone["ntk_flag"][0, 0]:
            assert c["ntk_condition"] == ["inf"]
        else:
            np.testing.assert_allclose(c["ntk_condition"], alone["ntk"][0], rtol=1e-4)
        assert c["regions"] == alone["regions"][0].tolist()


@pytest.mark.slow
def test_launcher_writes_results_and_resumes(tmp_path):
    out, results = tmp_path / "s.json", tmp_path / "s.jsonl"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "search.py"), "--repeats=1", "--batch_size=4",
           f"--results={results}", f"--json_out={out}", "--w_latency=0,2", "--progress=false", "--compilation_cache=",
           f"--plot_out={tmp_path / 's.png'}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "w_flops=0,w_latency=2" in run.stdout and "reference --arch #11472" in run.stdout
    doc = json.loads(out.read_text())
    assert len(doc["searches"]) == 2 and (tmp_path / "s.png").stat().st_size > 0
    for s in doc["searches"]:
        assert space.from_index(s["result"]["index"]).to_string() == s["result"]["cell"]
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert again.returncode == 0 and len(results.read_text().splitlines()) == 2
    # Other inputs are other work: not answered from the white-noise results.
    natural = subprocess.run([*cmd, "--synthetic=natural", "--w_latency=0"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=900)
    assert natural.returncode == 0, natural.stderr[-3000:]
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and "1/f^2" in lines[-1] and "1/f^2" not in lines[0]
    # So is a deeper NTK network: its searches are keyed by it.
    deeper = subprocess.run([*cmd, "--proxy_N=2", "--w_latency=0"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=900)
    assert deeper.returncode == 0, deeper.stderr[-3000:]
    lines = results.read_text().splitlines()
    proxy_depth = [json.loads(json.loads(line)["key"])["proxy"]["N"] for line in lines]
    assert proxy_depth == [1, 1, 1, 2]
    zero = subprocess.run([*cmd, "--proxy_N=0"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert zero.returncode != 0 and "--proxy_N must be a positive integer, got 0" in zero.stderr
    bad = subprocess.run([*cmd, "--max_latency_ms=1"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode != 0 and "latency_ms <= 1" in bad.stderr


def test_launcher_seed_and_switch_lists():
    from absl import app

    from micronas_jax import cli, search_cli

    assert cli.seed_list("seeds", ["0-3", "7"]) == [0, 1, 2, 3, 7]
    assert search_cli._bools("drop_none", ["true", "False"]) == [True, False]
    with pytest.raises(app.UsageError, match="--seeds: 'x-y'"):
        cli.seed_list("seeds", ["x-y"])
    with pytest.raises(app.UsageError, match="maybe"):
        search_cli._bools("drop_none", ["maybe"])
    assert search_cli._ints("endgame", ["0", "64"]) == [0, 64]
    with pytest.raises(app.UsageError, match=r"--endgame: .*'6\.5'"):
        search_cli._ints("endgame", ["6.5"])


def test_launcher_endgame_latency_weights_span_the_grid():
    from absl import app, flags
    from absl.testing import flagsaver

    from micronas_jax import search_cli

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # defaults, as if launched without flags
    with flagsaver.flagsaver(endgame=["64"], endgame_w_latency=["1", "3"], w_latency=["0.5"]):
        got = {name: (c.w_latency, c.endgame, c.endgame_w_latency) for name, c in search_cli.configs().items()}
    assert got == {"w_flops=0,w_latency=0.5,endgame=64,endgame_w_latency=1": (0.5, 64, 1.0),
                   "w_flops=0,w_latency=0.5,endgame=64,endgame_w_latency=3": (0.5, 64, 3.0)}
    with flagsaver.flagsaver(endgame=["64"]):
        assert [c.endgame_w_latency for c in search_cli.configs().values()] == [None]
    with flagsaver.flagsaver(endgame_w_latency=["1"]), pytest.raises(app.UsageError, match="needs an endgame"):
        search_cli.configs()
    with flagsaver.flagsaver(endgame=["729"], endgame_w_latency=["0.5"], w_latency=["0"], endgame_classes=True):
        got = {name: (c.endgame_classes, c.endgame_w_latency) for name, c in search_cli.configs().items()}
    assert got == {"w_flops=0,w_latency=0,endgame=729,endgame_w_latency=0.5,classes": (True, 0.5)}
    with flagsaver.flagsaver(endgame_classes=True), pytest.raises(app.UsageError, match="needs an endgame"):
        search_cli.configs()


def test_rerank_endgames_with_naswot(tmp_path, costs):
    """NASWOT in the endgame: computed for every logged endgame cell on the searches' own proxy
    network and inputs (here a small real one), ranked beside the logged indicators."""
    fake = tmp_path / "fake.jsonl"
    batch.run(batch.grid([0, 1], ["cifar10"], {"acc": search.SearchConfig(repeats=1, endgame=64)}), fake,
              lambda d: FakeEngine(d), costs=lambda d: costs, progress=False)
    with pytest.raises(ValueError, match="'fake'"):  # inputs it cannot rebuild: named
        batch.endgame_naswot(list(batch.read_results(fake).values()))
    config = engine_lib.ProxyConfig(C=2, N=1, batch_size=8, lr_batch=64, lr_batches=2)
    source = inputs.ImageSource("cifar10")
    records = []
    for r in batch.read_results(fake).values():  # as if a small real engine had run them
        key = json.loads(r["key"])
        key["proxy"] = batch.proxy_fingerprint(config, source.describe())
        records.append({**r, "key": json.dumps(key, sort_keys=True)})
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    scores = batch.endgame_naswot(records, seed=5, batch_size=8)
    cells = sorted({c["index"] for r in records for c in r["result"]["endgame"]["cells"]})
    assert sorted(scores) == cells
    direct = engine_lib.ProxyEngine(config, source).naswot_cells(cells, jax.random.PRNGKey(5), 8)
    np.testing.assert_allclose([scores[i] for i in cells], direct, rtol=1e-6)
    # NASWOT alone picks each endgame's highest score (ties: the first logged).
    rows = batch.rerank_endgames(records, [0.0], proxy_weights={"ntk": 0.0, "regions": 0.0, "naswot": 1.0},
                                 extra_indicators={"naswot": {i: -v for i, v in scores.items()}})
    by_seed = {r["job"]["seed"]: r["result"]["endgame"]["cells"] for r in records}
    want = [by_seed[s][int(np.argmax([round(scores[c["index"]], 3) for c in by_seed[s]]))]["index"]
            for s in rows[0]["seeds"]]
    assert rows[0]["cells"] == want
    with pytest.raises(ValueError, match="naswot=1"):  # a weight for an indicator nobody computed
        batch.rerank_endgames(records, [0.0], proxy_weights={"naswot": 1.0})
    with pytest.raises(ValueError, match="no value for cells"):
        search.rerank_endgame(records[0]["result"]["endgame"], {"naswot": 1.0}, extra={"naswot": {}})
    with pytest.raises(ValueError, match="'ntk' is one of the logged"):
        search.rerank_endgame(records[0]["result"]["endgame"], {"ntk": 1.0}, extra={"ntk": {}})
    out = tmp_path / "rerank.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--latency_weights=0", "--w_ntk=0", "--w_regions=0", "--w_naswot=1", "--naswot_seed=5",
                          "--naswot_batch=8", f"--json_out={out}"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert "endgame naswot weight 1" in run.stdout and doc["naswot"]["seed"] == 5
    assert {int(i): v for i, v in doc["naswot"]["scores"].items()} == pytest.approx(scores)
    assert doc["rows"][0]["cells"] == want
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "rerank.py"), f"--results={path}",
                          "--w_naswot=1", "--naswot_batch=1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--naswot_batch=1" in bad.stderr


@pytest.mark.parametrize("preset, expected", [
    ("accuracy_first", {"synthetic": "natural", "proxy_N": 1,
                        "configs": {"w_flops=0,w_latency=0": (0.0, True, 0, None, None)}}),
    ("latency_first", {"synthetic": "natural", "proxy_N": 3,
                       "configs": {"w_flops=0,w_latency=0,keep_none,endgame=64,endgame_w_latency=4":
                                   (0.0, False, 64, 4.0, None)}}),
    ("latency_budget", {"synthetic": "gaussian", "proxy_N": 3,
                        "configs": {"w_flops=0,w_latency=0,keep_none,endgame=64,latency_ms<=536":
                                    (0.0, False, 64, None, 536.0)}}),
])
def test_preset_flagfiles_name_the_documented_searches(preset, expected):
    from absl import flags
    from absl.testing import flagsaver

    from micronas_jax import search_cli

    path = os.path.join(ROOT, "experiments", "presets", f"{preset}.flags")
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["micronas-search", f"--flagfile={path}"])
        got = {name: (c.w_latency, c.drop_none, c.endgame, c.endgame_w_latency, c.budgets.latency_ms)
               for name, c in search_cli.configs().items()}
        assert got == expected["configs"]
        assert flags.FLAGS.synthetic == expected["synthetic"] and flags.FLAGS.proxy_N == expected["proxy_N"]
        assert flags.FLAGS.seeds == ["0"] and flags.FLAGS.repeats == 3  # the rest stays at the defaults
        flags.FLAGS(["micronas-search", f"--flagfile={path}", "--max_latency_ms=400"])  # a later flag wins
        assert [c.budgets.latency_ms for c in search_cli.configs().values()] == [400.0]


def test_calibrated_lut_is_refused_with_a_clear_error():
    from micronas_jax.hardware import lut as lut_lib

    calibrated = dataclasses.replace(lut_lib.load_lut(), calibration={"model": "additive"})
    with pytest.raises(ValueError, match="per-operator LUT"):
        search.SpaceCosts(search.default_costs("cifar10").skeleton, calibrated)


@pytest.mark.slow
def test_bench_search_launcher(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "bench_search.py"), "--seeds=0", "--repeats=1",
           "--batch_size=4", f"--json_out={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["candidates"] == 24 + 18 + 12 and row["masks_scored"] == 57
    assert 0 < row["engine_s"] <= row["wall_s"] and "jac_mask" in row["breakdown_s"]
    assert "s/cand." in run.stdout
