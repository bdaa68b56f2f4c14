"""Benchmarks the proxy engine: candidates per second, compile time and peak memory, for single
cells and pruning rounds, in every NTK mode. Pin threads from outside (e.g. ``taskset -c 0``).

    python experiments/bench_proxies.py --arch=6111 --cells=0,1000,3000,11472 --json_out=/tmp/bench.json
"""

from absl import app, flags

from micronas_jax import cli
from micronas_jax.proxies import bench

_ARCH = flags.DEFINE_string("arch", "6111", "A cell to time (string or index), first in the list.")
_CELLS = flags.DEFINE_list("cells", ["0", "1000", "3000", "11472", "2000"], "More cells (indices or strings).")
_MODES = flags.DEFINE_list("modes", ["exact", "per_sample_running_stats", "per_sample_batch_stats"], "NTK modes.")
_ROUND_SIZES = flags.DEFINE_list("round_sizes", ["1", "8", "24"], "Candidates per pruning round.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repeats (median).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "NTK batch size.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write results as JSON here.")


def main(argv):
    cli.no_extra_args(argv)
    cells = [cli.arch_flag(a).index for a in [_ARCH.value, *_CELLS.value]]
    result = bench.run(cells, modes=_MODES.value, round_sizes=[int(k) for k in _ROUND_SIZES.value],
                       repeats=_REPEATS.value, batch_size=_BATCH.value)
    print(bench.format_table(result))
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
