"""Benchmarks the hardware model: speed over all cells, and calibration quality on real devices.

    python experiments/bench_hardware.py --json_out=/tmp/bench_hw.json \
        --latency_csv=PATH/latency_measured.csv   # optional: measured latencies of every cell

``--latency_csv`` has one row per NB201 index (``arch_idx``) and one ``lat_*`` column of
milliseconds per device (e.g. HW-NAS-Bench's); columns with ``in16`` in their name were measured
on 16x16 inputs.
"""

from absl import app, flags

from micronas_jax import cli
from micronas_jax.hardware import bench

_ARCH = flags.DEFINE_string("arch", "6111", "Cell timed alone (string or index).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timing repeats (the table shows min and median).")
_LATENCY_CSV = flags.DEFINE_string("latency_csv", None, "Measured latencies of all cells per device.")
_N_TRAIN = flags.DEFINE_integer("n_train", 100, "Calibration cells per draw.")
_DRAWS = flags.DEFINE_integer("draws", 3, "Random draws of calibration cells.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write results as JSON here.")


def main(argv):
    cli.no_extra_args(argv)
    result = bench.run(_ARCH.value, repeats=_REPEATS.value, latency_csv=_LATENCY_CSV.value,
                       n_train=_N_TRAIN.value, draws=_DRAWS.value)
    print(bench.format_table(result))
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
