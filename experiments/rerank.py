"""What the logged endgames of a batch of searches pick at other latency weights, without scoring again.

    python experiments/rerank.py --results=runs.jsonl --latency_weights=0,0.5,1,1.5,2,3 --json_out=rerank.json
    python experiments/rerank.py --results=runs.jsonl --latency_weights=0,2,4,6 --seeds=6-19  # held-out seeds
    python experiments/rerank.py --results=runs.jsonl --latency_weights=0,1,2 --w_regions=0  # NTK and latency only
    python experiments/rerank.py --results=runs.jsonl --latency_weights=2,4 --w_flops=-1  # FLOPs rewarded
    python experiments/rerank.py --results=runs.jsonl --latency_weights=3 --w_regions=0 --w_naswot=0.5  # NASWOT
    python experiments/rerank.py --results=runs.jsonl --latency_weights=0 --cap_ratios=2,2.5  # told the latency
    python experiments/rerank.py --results=runs.jsonl --latency_weights=0.5 --classes  # class-aware endgame
    python experiments/rerank.py --results=runs.jsonl --latency_weights=0 --windows=387-388.5,466-467.5  # within

Reads a results file of ``micronas-search --endgame=K`` and re-ranks each search's logged endgame
cells (their NTK, region, FLOPs and latency scores as logged) at each weight; the rounds before the
endgame stay as they ran under the search's own weights. Ratios and differences are against
``--baseline``, a configuration of the same file as it ran (default: the one whose FLOPs and
latency weights are all 0, if there is exactly one), over the same ``--seeds``: a weight chosen on
some seeds is judged on the others alone. Each row is exactly what a search with
``--endgame_w_latency`` at that weight finds: the same rounds, the same endgame scores.
``--w_ntk``, ``--w_regions`` and ``--w_flops`` replace the searches' weights in the endgame alone (the
rounds ran with their own; the baseline stays the configuration as it ran); a negative ``--w_flops``
rewards the cells with more FLOPs (as logged: NB201's count, or live edges' with ``--live_flops``).
``--w_naswot`` adds NASWOT (``micronas_jax.proxies.naswot``; not part of MicroNAS's objective), which the
searches did not log: it is computed here for every endgame cell, on the searches' own proxy network and
inputs, one draw from ``--naswot_seed`` with ``--naswot_batch`` inputs (0.35 s a cell on 2 cores at C = 3,
N = 3), and ranked beside the logged indicators, larger scores better.

"best held %" is the mean over the searches of the most accurate cell (NB201's table) that each
endgame held at no more than its pick's latency: the pick a perfect judge of accuracy would have
made at that latency, so its gap to "accuracy %" is what the proxies lost within the endgame.

``--classes`` picks by the class-aware endgame (``search.class_endgame``): the endgame's cells grouped
by latency (to 0.1 ms), the classes ranked by the best NTK rank among their cells plus each latency
weight times their latency rank, then the chosen class's cell with the most linear regions: each row
is what ``micronas-search --endgame_classes`` with that ``--endgame_w_latency`` finds, the same rounds
and scores. Without it, each search's endgame picks by the rule it ran with.

``--cap_ratios=k,...`` adds a second table: each search's endgame held to the cells at most its own
pick's latency / k, ranked among themselves under the search's own weights (``batch.capped_endgames``):
the proxies told which latency to reach, beside a random cell of those ("random %") and the best.

``--windows=lo-hi,...`` adds a third table (``batch.window_stats``): within each endgame's cells of
``lo <= latency < hi`` ms (a class of cells with the same live convolutions, say), a random cell, the
best, the cell with the most regions and the one with the lowest NTK condition number, and each
proxy's Kendall tau against accuracy there: how the proxies order cells of one cost.
"""

import numpy as np
from absl import app, flags

from cells import space
from micronas_jax import batch, benchmark, cli, search

_ARCH = flags.DEFINE_string("arch", space.RESNET_CELL, "Reference cell (string or index) reported beside the picks.")
_RESULTS = flags.DEFINE_string("results", "micronas_search.jsonl", "Results JSONL of searches with an endgame.")
_WEIGHTS = flags.DEFINE_list("latency_weights", ["0", "1", "2", "3"], "Latency weights to re-rank the endgames at.")
_SEEDS = flags.DEFINE_list("seeds", [], "Only these seeds ('0-9', '3,5'); default every seed in the file.")
_W_NTK = flags.DEFINE_float("w_ntk", None, "The endgame's NTK weight, if not each search's own.")
_W_REGIONS = flags.DEFINE_float("w_regions", None, "The endgame's linear-region weight, if not each search's own.")
_W_FLOPS = flags.DEFINE_float("w_flops", None, "The endgame's FLOPs weight, if not each search's own "
                              "(negative: FLOPs rewarded).")
_W_NASWOT = flags.DEFINE_float("w_naswot", None, "Also rank the endgame cells by NASWOT, computed here, with this "
                               "weight (larger scores better).")
_NASWOT_SEED = flags.DEFINE_integer("naswot_seed", 100, "PRNG seed of NASWOT's one draw (variables and inputs).")
_NASWOT_BATCH = flags.DEFINE_integer("naswot_batch", 64, "Inputs in NASWOT's batch (the kernel is batch x batch).")
_DATA_PATH = flags.DEFINE_string("data_path", None, "The searches' training images, if they ran on real ones "
                                 "(NASWOT only).")
_CAPS = flags.DEFINE_list("cap_ratios", [], "Also pick within each endgame's cells at most its own pick's "
                          "latency / k, for each k.")
_CLASSES = flags.DEFINE_bool("classes", False, "Pick by the class-aware endgame (latency classes by best NTK "
                             "rank + latency weight x latency rank, then most regions) instead of rank sums.")
_WINDOWS = flags.DEFINE_list("windows", [], "Also describe each endgame's cells within these latency windows, "
                             "'lo-hi' ms each (lo inclusive).")
_BASELINE = flags.DEFINE_string("baseline", None, "Configuration name (as in the results) to compare against.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the rows as JSON here.")


def _vs_baseline(row: dict, base: dict | None, name: str | None) -> str:
    """Adds row['vs_baseline'] (latency ratio, accuracy change against the baseline's searches as
    they ran) and returns its table cell; nothing without a baseline."""
    if not base:
        return ""
    row["vs_baseline"] = {"name": name, "latency_ratio": base["latency_ms"]["mean"] / row["latency_ms"]["mean"],
                          "accuracy_change": row["accuracy"]["mean"] - base["accuracy"]["mean"]}
    return f"   {row['vs_baseline']['latency_ratio']:.2f}x, {row['vs_baseline']['accuracy_change']:+.2f} pt"


def main(argv):
    cli.no_extra_args(argv)
    reference = cli.arch_flag(_ARCH.value)
    weights = cli.float_list("latency_weights", _WEIGHTS.value)
    records = list(batch.read_results(_RESULTS.value).values())
    if _SEEDS.value:
        wanted = set(cli.seed_list("seeds", _SEEDS.value))
        records = [r for r in records if r["job"]["seed"] in wanted]
        if not records:
            raise app.UsageError(f"{_RESULTS.value}: no search with --seeds={','.join(_SEEDS.value)}")
    proxy_weights = {k: f.value for k, f in (("ntk", _W_NTK), ("regions", _W_REGIONS), ("flops", _W_FLOPS))
                     if f.value is not None}
    ratios = cli.float_list("cap_ratios", _CAPS.value) if _CAPS.value else []
    windows = []
    for w in _WINDOWS.value:
        lo, sep, hi = w.partition("-")
        try:
            windows.append((float(lo), float(hi)))
        except ValueError:
            raise app.UsageError(f"--windows: {w!r} is not 'lo-hi' (ms)") from None
        if not sep:
            raise app.UsageError(f"--windows: {w!r} is not 'lo-hi' (ms)")
    extra, naswot_scores = {}, {}
    try:
        if _W_NASWOT.value is not None:
            if _NASWOT_BATCH.value < 2:
                raise ValueError(f"--naswot_batch={_NASWOT_BATCH.value}: NASWOT needs at least 2 inputs")
            proxy_weights["naswot"] = _W_NASWOT.value
            naswot_scores = batch.endgame_naswot(records, _NASWOT_SEED.value, _NASWOT_BATCH.value, _DATA_PATH.value)
            extra = {"naswot": {i: -v for i, v in naswot_scores.items()}}  # ranked lower = better
        if _CLASSES.value and proxy_weights:
            raise ValueError(f"--classes takes no proxy weights ({', '.join(f'--w_{k}' for k in proxy_weights)})")
        rows = batch.rerank_endgames(records, weights, proxy_weights=proxy_weights, extra_indicators=extra,
                                     classes=True if _CLASSES.value else None)
        capped = batch.capped_endgames(records, ratios)
        within = batch.window_stats(records, windows)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if not rows:
        raise app.UsageError(f"{_RESULTS.value}: no search with an endgame (run with --endgame=K)")
    summary = {(r["name"], r["dataset"]): r for r in batch.summarize(records)}
    names = sorted({n for n, _ in summary})
    baseline = _BASELINE.value
    if baseline is None:
        free = sorted({n for (n, _), s in summary.items()
                       if not any(s["config"].get(w) for w in ("w_flops", "w_latency", "endgame_w_latency"))})
        baseline = free[0] if len(free) == 1 else None
    elif baseline not in names:
        raise app.UsageError(f"--baseline={baseline!r} is not a configuration of {_RESULTS.value}: {names}")
    seeds = sorted({r["job"]["seed"] for r in records})
    print(f"endgames re-ranked at other latency weights (rounds as they ran); {_RESULTS.value}, "
          f"seeds {', '.join(map(str, seeds))}"
          + "".join(f"; endgame {k} weight {v:g}" for k, v in proxy_weights.items())
          + ("; class-aware endgame (weight: the class latency weight)" if _CLASSES.value else ""))
    w = max(len(r["name"]) for r in rows) + 2
    print(f"{'configuration':<{w}}{'dataset':<10}{'endgame w':>11}{'n':>4}{'accuracy %':>17}{'latency ms':>17}"
          f"{'best held %':>13}"
          + (f"   vs {baseline}" if baseline else ""))
    for r in rows:
        line = (f"{r['name']:<{w}}{r['dataset']:<10}{r['endgame_w_latency']:>11g}{r['searches']:>4}"
                f"{r['accuracy']['mean']:>9.2f} +- {r['accuracy']['std']:<4.2f}"
                f"{r['latency_ms']['mean']:>9.0f} +- {r['latency_ms']['std']:<4.0f}{r['best_held']['mean']:>14.2f}")
        line += _vs_baseline(r, summary.get((baseline, r["dataset"])), baseline)
        others = [f"{d} {a:.2f}" for d, a in r["test_accuracy"].items() if d != r["dataset"]]
        print(line + (f"   ({', '.join(others)} %)" if others else ""))
    if capped:
        print("\nendgames held to their own pick's latency / k, picked under each search's own weights")
        print(f"{'configuration':<{w}}{'dataset':<10}{'k':>6}{'n':>4}{'accuracy %':>17}{'latency ms':>17}"
              f"{'cap ms':>9}{'random %':>10}{'best %':>9}" + (f"   vs {baseline}" if baseline else ""))
        for r in capped:
            if not r["searches"]:
                print(f"{r['name']:<{w}}{r['dataset']:<10}{r['ratio']:>6g}   0   (no cell within the cap)")
                continue
            line = (f"{r['name']:<{w}}{r['dataset']:<10}{r['ratio']:>6g}{r['searches']:>4}"
                    f"{r['accuracy']['mean']:>9.2f} +- {r['accuracy']['std']:<4.2f}"
                    f"{r['latency_ms']['mean']:>9.0f} +- {r['latency_ms']['std']:<4.0f}{r['cap_ms']['mean']:>9.0f}"
                    f"{r['random']['mean']:>10.2f}{r['best']['mean']:>9.2f}")
            line += _vs_baseline(r, summary.get((baseline, r["dataset"])), baseline)
            print(line + (f"   ({r['empty']} without a cell)" if r["empty"] else ""))
    if within:
        print("\nwithin latency windows: a random cell, the best, the most regions, the lowest NTK condition number; "
              "Kendall tau of each proxy against accuracy there (mean over the endgames)")
        print(f"{'configuration':<{w}}{'dataset':<10}{'window ms':>14}{'n':>4}{'cells':>9}{'latency ms':>11}"
              f"{'random %':>10}{'best %':>8}{'regions %':>11}{'NTK %':>8}{'tau regions':>13}{'tau NTK':>9}")
        for r in within:
            lo, hi = r["window_ms"]
            head = f"{r['name']:<{w}}{r['dataset']:<10}{f'{lo:g}-{hi:g}':>14}{r['searches']:>4}"
            if not r["searches"]:
                print(head + "   (no cell in the window)")
                continue
            tau = [f"{t:>{k}.2f}" if t is not None else f"{'-':>{k}}" for t, k in ((r["tau"]["regions"], 13),
                                                                                 (r["tau"]["ntk"], 9))]
            line = (head + f"{r['cells']['min']:>5}-{r['cells']['max']:<3}{r['latency_ms']['mean']:>11.1f}"
                    f"{r['random']['mean']:>10.2f}{r['best']['mean']:>8.2f}{r['regions_pick']['mean']:>11.2f}"
                    f"{r['ntk_pick']['mean']:>8.2f}" + "".join(tau))
            base = summary.get((baseline, r["dataset"]))
            if base:  # against the baseline's searches of the same seeds, as they ran
                same = [x for x in records if x["job"]["name"] == baseline and x["job"]["dataset"] == r["dataset"]
                        and x["job"]["seed"] in set(r["seeds"])]
                b_lat = float(np.mean([x["result"]["hardware"]["latency_ms"] for x in same]))
                b_acc = float(np.mean([x["result"]["nb201"]["test_accuracy"][r["dataset"]] for x in same]))
                v = {"name": baseline, "seeds": len(same), "latency_ratio": b_lat / r["latency_ms"]["mean"],
                     **{f"{k}_change": r[k]["mean"] - b_acc for k in ("random", "best", "regions_pick", "ntk_pick")}}
                r["vs_baseline"] = v
                line += (f"   {v['latency_ratio']:.2f}x; random {v['random_change']:+.2f}, "
                         f"best {v['best_change']:+.2f}, regions {v['regions_pick_change']:+.2f} pt")
            print(line + (f"   ({r['empty']} without a cell)" if r["empty"] else ""))
    ref = {}
    for d in sorted({r["dataset"] for r in rows}):
        ref[d] = search.cell_report(reference, search.default_costs(d), benchmark.BuiltinBenchmark())
        print(f"reference --arch #{reference.index} on {d}: {ref[d]['nb201']['test_accuracy'][d]:.2f}%, "
              f"{ref[d]['hardware']['latency_ms']:.1f} ms")
    cli.write_json(_JSON_OUT.value, {"results": _RESULTS.value, "seeds": seeds, "baseline": baseline,
                                     "rule": "classes" if _CLASSES.value else "as run",
                                     "proxy_weights": proxy_weights, "rows": rows, "capped": capped,
                                     "windows": within,
                                     **({"naswot": {"seed": _NASWOT_SEED.value, "batch": _NASWOT_BATCH.value,
                                                    "scores": {str(i): v for i, v in naswot_scores.items()}}}
                                        if extra else {}),
                                     "reference": {"cell": reference.to_string(), "index": reference.index, **ref}})


if __name__ == "__main__":
    app.run(main)
