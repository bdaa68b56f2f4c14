"""Describes an NB201 cell: canonical string, index, exact FLOPs/params, NB201 accuracies.

    python experiments/describe.py --arch=6111 --json_out=/tmp/cell.json
"""

from absl import app, flags

from cells import space
from micronas_jax import benchmark, cli, describe

_ARCH = flags.DEFINE_string("arch", space.RESNET_CELL, "NB201 cell string or index (0..15624).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the description as JSON here.")
_NB201_FILE = flags.DEFINE_string(
    "nb201_file", None, "Official NB201 .pth file to answer from (needs the [nb201] extra); "
    "default: the built-in table.")
_C = flags.DEFINE_integer("C", 16, "Width of the first stage for the computed costs.")
_N = flags.DEFINE_integer("N", 5, "Cells per stage for the computed costs.")


def main(argv):
    cli.no_extra_args(argv)
    cell = cli.arch_flag(_ARCH.value)
    result = describe.describe(
        cell, benchmark.load_benchmark(_NB201_FILE.value), C=_C.value, N=_N.value)
    print(describe.format_description(result))
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
