"""Benchmarks the search: wall time per search, the proxy engine's share by function, compile time.
The first search compiles; later ones reuse. Pin threads from outside (e.g. ``taskset -c 0``).

    python experiments/bench_search.py --seeds=0,1 --json_out=/tmp/bench_search.json
"""

from absl import app, flags

from cells import space
from micronas_jax import cli, search, search_bench

_ARCH = flags.DEFINE_string("arch", space.RESNET_CELL, "Reference cell (string or index) shown beside the found ones.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "One search per seed ('0,1', '0-3').")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Seeds per round (R).")
_W_LATENCY = flags.DEFINE_float("w_latency", 0.0, "Latency weight (0: TE-NAS's accuracy-only search).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "NTK batch size.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write results as JSON here.")


def main(argv):
    cli.no_extra_args(argv)
    ref = cli.arch_flag(_ARCH.value)
    config = search.SearchConfig(repeats=_REPEATS.value, w_latency=_W_LATENCY.value)
    result = search_bench.run(cli.seed_list("seeds", _SEEDS.value), config, batch_size=_BATCH.value)
    print(search_bench.format_table(result))
    for r in result["rows"]:
        print(f"seed {r['seed']}: #{r['index']} {r['cell']}, {r['accuracy']:.2f}%, {r['latency_ms']:.0f} ms")
    print(f"reference #{ref.index}: {ref.to_string()}")
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
