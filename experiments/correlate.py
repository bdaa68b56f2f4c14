"""Rank correlation of the proxies (NTK, linear regions, their rank sum, FLOPs) with NB201 accuracy.

    python experiments/correlate.py --sample=1000 --cache=/tmp/scores.jsonl --json_out=/tmp/corr.json \
        --plot_out=/tmp/corr.png          # --sample=0: all 15,625 cells; rerun to resume
    python experiments/correlate.py --sample=0 --only_cached --cache=/tmp/scores.jsonl --budget_ms=535,735
                                      # what each proxy picks within each latency budget
    python experiments/correlate.py --sample=600 --only_cached --cache=/tmp/scores.jsonl \
        --latency_weights=0,0.5,1,1.5,2   # what the search's objective picks at each latency weight
"""

from absl import app, flags

from micronas_jax import cli, correlate, inputs
from micronas_jax.proxies import engine as engine_lib

_ARCH = flags.DEFINE_string("arch", "6111", "Report this cell's scores and rank among the sample.")
_SAMPLE = flags.DEFINE_integer("sample", 1000, "Cells to score (seeded sample); 0 = all 15,625 "
                              "(all within --max_latency_ms if given).")
_MAX_LATENCY = flags.DEFINE_float("max_latency_ms", None, "Draw the sample among the cells whose estimated MCU "
                                  "latency (default device) is at most this only, e.g. every cell a budget allows.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the sample and the proxies' initialisations and batches.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Seeds per cell (scores averaged).")
_DATASET = flags.DEFINE_enum("dataset", "cifar10", list(inputs.RESOLUTION), "Input shape and data.")
_INPUTS = cli.define_input_flags()
_NTK_MODE = flags.DEFINE_enum("ntk_mode", "exact", [m.value for m in engine_lib.ntk.NTKMode], "NTK kernel.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "NTK batch size.")
_PROXY_NET = cli.define_proxy_network_flags()
_INIT = flags.DEFINE_enum("init", "kaiming_normal", list(engine_lib.INITS), "Initialisation.")
_CACHE = flags.DEFINE_string("cache", "scores.jsonl", "Scores cache (JSONL); reruns resume from it.")
_ONLY_CACHED = flags.DEFINE_bool("only_cached", False, "Score nothing new: report on the cached cells.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write correlations as JSON here.")
_PLOT_OUT = flags.DEFINE_string("plot_out", None, "Write a PNG rank plot here.")
_BUDGETS = flags.DEFINE_list("budget_ms", [], "Latency budgets (ms): report what each proxy picks among the "
                             "scored cells within each (default device, the dataset's network).")
_WEIGHTS = flags.DEFINE_list("latency_weights", [], "Latency weights: report what the search's objective (NTK + "
                             "regions + w x latency, dense ranks) picks among the scored cells at each.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "With --budget_ms or --latency_weights: average the best this many cells.")


def main(argv):
    cli.no_extra_args(argv)
    cell = cli.arch_flag(_ARCH.value)
    budgets = cli.float_list("budget_ms", _BUDGETS.value)
    weights = cli.float_list("latency_weights", _WEIGHTS.value)
    config = engine_lib.ProxyConfig(dataset=_DATASET.value, **_PROXY_NET.values(), ntk_mode=_NTK_MODE.value,
                                    batch_size=_BATCH.value, init=_INIT.value)
    engine = engine_lib.ProxyEngine(config, _INPUTS.load(_DATASET.value))
    sample = correlate.sample_indices(0, _SEED.value)  # every cell, in the seeded order
    if _MAX_LATENCY.value is not None:
        sample = correlate.within_latency(sample, _MAX_LATENCY.value, _DATASET.value)
    sample = sample[:_SAMPLE.value or None].tolist()
    indices = sample if cell.index in sample else [cell.index, *sample]
    scores = correlate.score_space(engine, indices, _REPEATS.value, _SEED.value, _CACHE.value,
                                   only_cached=_ONLY_CACHED.value)
    indices = scores["index"].tolist()
    result = {"cells": len(indices), "repeats": _REPEATS.value, "inputs": engine.source.describe(),
              "fingerprint": correlate.fingerprint(config, engine.source.describe(), _SEED.value),
              "seconds_per_cell_draw": float(scores["seconds"].mean()),
              "timed_on": correlate.hosts(scores),
              "correlations": correlate.correlations(scores)}
    result["arch"] = {"cell": cell.to_string(), "index": cell.index, "scored": cell.index in indices}
    if result["arch"]["scored"]:
        k = indices.index(cell.index)
        result["arch"].update(ntk=float(scores["ntk"][k].mean()), regions=float(scores["regions"][k].mean()))
    print(f"{len(indices)} cells, {result['inputs']}, NTK {config.ntk_mode.value}, "
          f"{result['seconds_per_cell_draw']:.3f} s per cell and draw (both proxies, on "
          f"{', '.join(result['timed_on'])})")
    proxies = list(next(iter(result["correlations"].values())))
    w = 1 + max(map(len, proxies))  # the name column fits the longest proxy name
    print(f"{'proxy':<{w}}" + "".join(f"{d:>20}" for d in result["correlations"]))
    for proxy in proxies:
        print(f"{proxy:<{w}}" + "".join(f"{c[proxy]['kendall_tau']:>12.3f} tau" + " " * 4
                                       for c in result["correlations"].values()))
    if result["arch"]["scored"]:
        print(f"#{cell.index}: NTK condition {result['arch']['ntk']:.2f}, {result['arch']['regions']:.0f} regions")
    result["budget_picks"] = [correlate.budget_picks(scores, b, _DATASET.value, _TOP_K.value) for b in budgets]
    for picks in result["budget_picks"]:
        print(f"within {picks['budget_ms']:g} ms ({picks['cells_within']} cells; all of them: "
              f"{picks['all']['accuracy']:.2f} % at {picks['all']['latency_ms']:.0f} ms), {_DATASET.value} accuracy:")
        top = f"top-{picks['top_k']} acc %"
        w = 1 + max(map(len, picks["picks"]))
        print(f"  {'pick by':<{w}}{'best cell':>12}{'acc %':>8}{'ms':>7}{top:>16}{'ms':>7}")
        for name, p in picks["picks"].items():
            print(f"  {name:<{w}}{'#' + str(p['index']):>12}{p['accuracy']:>8.2f}{p['latency_ms']:>7.0f}"
                  f"{p['top_k_accuracy']:>16.2f}{p['top_k_latency_ms']:>7.0f}")
    if weights:
        result["weight_picks"] = correlate.weight_picks(scores, weights, _DATASET.value, _TOP_K.value)
        picks = result["weight_picks"]
        print(f"the search's objective, NTK + regions + w x latency ranks, over the {picks[0]['cells']} scored cells "
              f"with a path, {_DATASET.value} accuracy:")
        top = f"top-{picks[0]['top_k']} acc %"
        print(f"  {'w_latency':>9}{'best cell':>12}{'acc %':>8}{'ms':>7}{top:>16}{'ms':>7}")
        for p in picks:
            print(f"  {p['w_latency']:>9g}{'#' + str(p['index']):>12}{p['accuracy']:>8.2f}{p['latency_ms']:>7.0f}"
                  f"{p['top_k_accuracy']:>16.2f}{p['top_k_latency_ms']:>7.0f}")
    cli.write_json(_JSON_OUT.value, result)
    if _PLOT_OUT.value:
        correlate.plot(scores, _PLOT_OUT.value, title=f"{len(indices)} NB201 cells, {result['inputs']}")


if __name__ == "__main__":
    app.run(main)
