"""Correlation study: resumable scoring, correlations, and the correlate / bench_proxies launchers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from cells import skeleton as sk
from cells import space
from micronas_jax import benchmark, correlate
from micronas_jax.hardware import flops as flops_lib
from micronas_jax.hardware import latency as latency_lib
from micronas_jax.proxies import engine as engine_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def engine():
    return engine_lib.ProxyEngine(engine_lib.ProxyConfig(C=2, batch_size=4, lr_batch=50, lr_batches=2))


def test_resume_after_a_kill_loses_nothing(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(correlate, "CHUNK", 2)
    cache = str(tmp_path / "scores.jsonl")
    indices = correlate.sample_indices(5, seed=3)
    first = correlate.score_space(engine, indices[:3], 1, 0, cache, progress=False)
    with open(cache) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 + 3  # header + one line per (cell, seed)
    # A kill in the middle of a write leaves a truncated last line.
    with open(cache, "w") as f:
        f.write("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    calls = []
    original = engine.score_cells
    monkeypatch.setattr(engine, "score_cells",
                        lambda cells, keys, **kw: calls.append(list(cells)) or original(cells, keys, **kw))
    again = correlate.score_space(engine, indices, 1, 0, cache, progress=False)
    scored = [c for call in calls for c in call]
    assert sorted(scored) == sorted([int(indices[2]), *map(int, indices[3:])])  # only the lost and new
    np.testing.assert_array_equal(again["ntk"][:2], first["ntk"][:2])
    np.testing.assert_array_equal(again["index"], indices)
    # Killed between a record and its newline: the next record still starts on its own line.
    with open(cache, "a") as f:
        f.write(json.dumps({"index": 1, "seed": 0, "ntk": 2.0, "flag": "", "regions": 5, "seconds": 0.1}))
    correlate.score_space(engine, [*indices.tolist(), 2], 1, 0, cache, progress=False)
    with open(cache) as f:
        assert all(json.loads(line) for line in f.read().splitlines())
    # Reporting on what is cached scores nothing.
    calls.clear()
    cached = correlate.score_space(engine, correlate.sample_indices(8, seed=3), 1, 0, cache, progress=False,
                                   only_cached=True)
    assert calls == [] and sorted(cached["index"].tolist()) == sorted(indices.tolist())


def test_draws_are_scored_draw_major_and_add_up(engine, tmp_path, monkeypatch):
    """More draws later score only the new draws, with the keys a one-go run uses; time per draw
    is read right from caches that timed all of a cell's draws at once."""
    monkeypatch.setattr(correlate, "CHUNK", 2)
    indices = correlate.sample_indices(3, seed=5)
    fresh = correlate.score_space(engine, indices, 2, 0, str(tmp_path / "fresh.jsonl"), progress=False)
    cache = str(tmp_path / "grown.jsonl")
    correlate.score_space(engine, indices, 1, 0, cache, progress=False)
    calls = []
    original = engine.score_cells
    monkeypatch.setattr(engine, "score_cells",
                        lambda cells, keys, **kw: calls.append(len(keys)) or original(cells, keys, **kw))
    grown = correlate.score_space(engine, indices, 2, 0, cache, progress=False)
    assert calls == [1, 1]  # draw 1 of three cells in chunks of two; draw 0 came from the cache
    for field in ("ntk", "regions"):
        np.testing.assert_array_equal(grown[field], fresh[field])
    assert (grown["timed_on"] == engine_lib.timed_on()).all() and grown["timed_on"].shape == (3, 2)
    # A legacy record timed both draws of its cell: 0.4 s over two draws is 0.2 s per draw.
    legacy = str(tmp_path / "legacy.jsonl")
    with open(cache) as f:
        header = f.readline()
    with open(legacy, "w") as f:
        f.write(header)
        for i in indices:
            for r in range(2):
                f.write(json.dumps({"index": int(i), "seed": r, "ntk": 2.0, "flag": "", "regions": 5,
                                    "seconds": 0.4}) + "\n")
    for draws in (1, 2):  # also when fewer draws are asked for than were timed together
        got = correlate.score_space(engine, indices, draws, 0, legacy, progress=False, only_cached=True)
        np.testing.assert_allclose(got["seconds"], 0.2)
        assert (got["timed_on"] == engine_lib.UNRECORDED).all()  # legacy records name no host


def test_cache_of_another_configuration_is_refused(engine, tmp_path):
    cache = tmp_path / "scores.jsonl"
    cache.write_text(json.dumps({"header": {"config": {"C": 99}}}) + "\n")
    with pytest.raises(ValueError, match="made with another configuration"):
        correlate.score_space(engine, [0], 1, 0, str(cache), progress=False)
    cache.write_text(json.dumps({"header": correlate.fingerprint(engine.config, engine.source.describe(), 0)})
                     + "\nnot json\n{}\n")
    with pytest.raises(ValueError, match="corrupt at line 2"):
        correlate.score_space(engine, [0], 1, 0, str(cache), progress=False)


def test_correlations_match_scipy_on_known_scores():
    idx = correlate.sample_indices(300, seed=1)
    acc = benchmark.BuiltinBenchmark().test_accuracies("cifar10")[idx]
    rng = np.random.default_rng(0)
    scores = {"index": idx, "ntk": np.exp(-acc[:, None] / 10 + rng.normal(0, 0.1, (300, 1))),
              "regions": (acc[:, None] * 10).astype(np.int64)}
    scores["ntk"][0] = np.inf  # a flagged cell ranks last
    c = correlate.correlations(scores, ["cifar10"])["cifar10"]
    s = -np.log(scores["ntk"][:, 0])
    s[0] = s[1:].min() - 1
    assert c["ntk"]["kendall_tau"] == pytest.approx(stats.kendalltau(s, acc).statistic)
    assert c["regions"]["kendall_tau"] == pytest.approx(stats.kendalltau(scores["regions"][:, 0], acc).statistic)
    assert c["regions"]["kendall_tau"] > 0.99 and c["ntk"]["kendall_tau"] > 0.5


def test_budget_picks_match_a_brute_force_pick_within_the_budget():
    idx = correlate.sample_indices(300, seed=2)
    rng = np.random.default_rng(1)
    latency = rng.uniform(100, 1500, 15625)
    scores = {"index": idx, "ntk": rng.uniform(5, 500, (300, 2)), "regions": rng.integers(100, 10**6, (300, 2)),
              "seconds": np.ones(300)}
    best_ntk = int(np.argmin(np.where(latency[idx] <= 700, scores["ntk"].mean(1), np.inf)))
    scores["ntk"][best_ntk] = np.inf  # a flagged cell is never picked
    got = correlate.budget_picks(scores, 700, "cifar10", top_k=5, latency_ms=latency)

    within = np.flatnonzero(latency[idx] <= 700)
    acc = benchmark.BuiltinBenchmark().test_accuracies("cifar10")[idx[within]]
    log_ntk = np.log(scores["ntk"][within]).mean(1)
    regions = scores["regions"][within].mean(1)
    mflops = flops_lib.cost_table(sk.Skeleton.for_dataset("cifar10")).flops(space.all_matrices()[idx[within]])
    expected = {"ntk": np.argsort(log_ntk), "regions": np.argsort(-regions),
                "ntk+regions": np.argsort(stats.rankdata(log_ntk) + stats.rankdata(-regions)),
                "ntk+regions+flops": np.argsort(stats.rankdata(log_ntk) + stats.rankdata(-regions)
                                                + stats.rankdata(-mflops)),
                "oracle": np.argsort(-acc)}
    assert got["cells_within"] == len(within) and got["all"]["accuracy"] == pytest.approx(acc.mean())
    for name, order in expected.items():
        pick = got["picks"][name]
        assert pick["index"] == idx[within][order[0]], name
        assert pick["accuracy"] == pytest.approx(acc[order[0]])
        assert pick["latency_ms"] == pytest.approx(latency[idx[within][order[0]]]) and pick["latency_ms"] <= 700
        assert pick["top_k_accuracy"] == pytest.approx(acc[order[:5]].mean()), name
    assert got["picks"]["ntk"]["index"] != idx[best_ntk]
    assert got["picks"]["oracle"]["accuracy"] == pytest.approx(acc.max())
    least = f"{latency[idx].min():.4g}"
    with pytest.raises(ValueError, match=rf"budget 50 ms \(the least latency among them is {least} ms"):
        correlate.budget_picks(scores, 50, "cifar10", latency_ms=latency)


def test_weight_picks_match_a_brute_force_ranking_of_the_connected_cells():
    idx = correlate.sample_indices(400, seed=5)
    rng = np.random.default_rng(2)
    latency = np.round(rng.uniform(200, 1500, 15625), 1)
    scores = {"index": idx, "ntk": rng.uniform(5, 50, (400, 2)), "regions": rng.integers(100, 200, (400, 2))}
    # A path from input to output, read off NB201's own string (all terms zero: '#+#+#').
    connected = np.array(["0" in space.from_index(int(i)).isomorphism_key() for i in idx])
    assert 0 < connected.sum() < 400
    ok = np.flatnonzero(connected)
    star = idx[ok[0]]  # the best cell on every count but one infinite NTK draw: never the w = 0 pick
    scores["ntk"][ok[0]] = [1.0, np.inf]
    scores["regions"][ok[0]] = 1000
    latency[star] = 100.0
    got = correlate.weight_picks(scores, [0, 1.5, 1e6], "cifar10", top_k=4, latency_ms=latency)

    ntk = np.where(np.isinf(scores["ntk"][ok]).any(1), np.inf, scores["ntk"][ok].mean(1))
    dense = {n: stats.rankdata(np.round(v, 3), method="dense") for n, v in
             {"ntk": ntk, "regions": -scores["regions"][ok].mean(1), "latency": latency[idx[ok]]}.items()}
    acc = benchmark.BuiltinBenchmark().test_accuracies("cifar10")[idx[ok]]
    for w, pick in zip([0, 1.5, 1e6], got, strict=True):
        total = dense["ntk"] + dense["regions"] + w * dense["latency"]
        order = np.lexsort((idx[ok], total))  # ties to the lower NB201 index
        assert pick["w_latency"] == w and pick["cells"] == len(ok) and pick["top_k"] == 4
        assert pick["index"] == idx[ok][order[0]]
        assert pick["accuracy"] == pytest.approx(acc[order[0]])
        assert pick["top_k_accuracy"] == pytest.approx(acc[order[:4]].mean())
        assert pick["top_k_latency_ms"] == pytest.approx(latency[idx[ok][order[:4]]].mean())
    assert got[0]["index"] != star and got[2]["index"] == star  # a dominant weight takes the cheapest
    with pytest.raises(ValueError, match="no scored cell has a path"):
        correlate.weight_picks({k: v[~connected] for k, v in scores.items()}, [1], latency_ms=latency)


def test_within_latency_keeps_the_order_and_the_cells_a_budget_allows():
    latency = np.random.default_rng(0).uniform(100, 1000, 15625)
    order = correlate.sample_indices(0, 4)
    got = correlate.within_latency(order, 400.0, latency_ms=latency)
    assert got.tolist() == [int(i) for i in order if latency[i] <= 400.0]  # brute force, same order
    assert 0 < len(got) < len(order)
    assert correlate.within_latency([3, 1, 2], 1e9).tolist() == [3, 1, 2]  # the default device's LUT


def _run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_correlate_launcher(tmp_path):
    out, png = tmp_path / "corr.json", tmp_path / "corr.png"
    proc = _run("correlate.py", "--sample=6", "--batch_size=4", f"--cache={tmp_path / 's.jsonl'}",
                f"--json_out={out}", f"--plot_out={png}", "--arch=6111", "--budget_ms=1e9,600")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["cells"] == 7 and result["arch"]["index"] == 6111  # the sample plus --arch
    assert set(result["correlations"]) == {"cifar10", "cifar100", "ImageNet16-120"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert result["timed_on"] == [engine_lib.timed_on()]
    everything, fast = result["budget_picks"]
    acc = benchmark.BuiltinBenchmark().test_accuracies("cifar10")
    assert everything["cells_within"] == 7 and everything["picks"]["oracle"]["accuracy"] == pytest.approx(
        max(acc[i] for i in [*correlate.sample_indices(6, 0).tolist(), 6111]))
    assert all(p["latency_ms"] <= 600 for p in fast["picks"].values())
    # The same cache, only the cells within 600 ms: nothing new is scored.
    proc = _run("correlate.py", "--sample=0", "--max_latency_ms=600", "--only_cached", "--batch_size=4",
                f"--cache={tmp_path / 's.jsonl'}", f"--json_out={out}", "--arch=6111", "--latency_weights=0,1e6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    latency = latency_lib.latency_all()
    scored = [*correlate.sample_indices(6, 0).tolist(), 6111]
    result = json.loads(out.read_text())
    assert result["cells"] == sum(latency[i] <= 600 for i in scored) + (latency[6111] > 600)
    assert [p["w_latency"] for p in result["weight_picks"]] == [0, 1e6]
    assert "the search's objective" in proc.stdout and "w_latency" in proc.stdout


@pytest.mark.slow
def test_bench_proxies_launcher(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("bench_proxies.py", "--arch=0", "--cells=11472", "--modes=exact", "--round_sizes=2",
                "--repeats=1", "--batch_size=4", f"--json_out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["what"] for r in rows} >= {"NTK, single cells", "LR, single cells", "round: NTK + LR, shared base"}
    assert all(r["seconds_per_candidate"] > 0 for r in rows)
