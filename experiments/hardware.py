"""MCU cost of a cell (latency with breakdown, FLOPs, params, flash, peak SRAM), or of all cells.

    python experiments/hardware.py --arch=6111 --json_out=/tmp/hw.json
    python experiments/hardware.py --all --csv_out=/tmp/space.csv --plot_out=/tmp/space.png
"""

from absl import app, flags

from cells import space
from micronas_jax import cli, plots
from micronas_jax.hardware import lut as lut_lib
from micronas_jax.hardware import report

_ARCH = flags.DEFINE_string("arch", space.RESNET_CELL, "NB201 cell string or index (highlighted with --all).")
_ALL = flags.DEFINE_bool("all", False, "Estimate all 15,625 cells: summary, CSV and plot.")
_DATASET = flags.DEFINE_enum("dataset", "cifar10", ["cifar10", "cifar100", "ImageNet16-120"],
                             "Network input size and classes, and which accuracies to show.")
_C = flags.DEFINE_integer("C", 16, "Width of the first stage.")
_N = flags.DEFINE_integer("N", 5, "Cells per stage.")
_LUT = flags.DEFINE_string("lut", None, "LUT JSON file (default: STM32F746, CMSIS-NN s8).")
_ALLOW_ESTIMATE = flags.DEFINE_bool("allow_estimate", False,
                                    "Price shapes missing from the LUT with its fitted per-operator model.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the report as JSON here.")
_CSV_OUT = flags.DEFINE_string("csv_out", None, "With --all: every cell's costs as CSV.")
_PLOT_OUT = flags.DEFINE_string("plot_out", None, "With --all: PNG of latency against NB201 accuracy.")


def main(argv):
    cli.no_extra_args(argv)
    cell = cli.arch_flag(_ARCH.value)
    lut = lut_lib.load_lut(_LUT.value)
    kwargs = {"C": _C.value, "N": _N.value, "allow_estimate": _ALLOW_ESTIMATE.value}
    if not _ALL.value:
        result = report.cell_report(cell, lut, _DATASET.value, **kwargs)
        print(report.format_cell_report(result))
    else:
        costs = report.space_costs(lut, _DATASET.value, **kwargs)
        result = costs.summary(lut.device.flash_kb, lut.device.sram_kb)
        print(report.format_space_summary(result))
        if _CSV_OUT.value:
            costs.write_csv(_CSV_OUT.value)
        if _PLOT_OUT.value:
            best = result["best_fitting_cell"]
            highlight = {f"--arch #{cell.index}": cell.index}
            if best:
                highlight[f"most accurate fitting memory #{best['index']}"] = best["index"]
            plots.cost_vs_accuracy(
                costs.latency_ms, costs.accuracy, _PLOT_OUT.value,
                front=report.pareto_front(costs.latency_ms, costs.accuracy), highlight=highlight,
                ylabel=f"NB201 test accuracy, {_DATASET.value} (%)",
                title=f"{lut.device.name}: {_DATASET.value}, C={_C.value}, N={_N.value}")
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
