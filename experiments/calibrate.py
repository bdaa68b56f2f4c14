"""Fits a latency model to whole-network measurements of a few cells and writes it as a LUT.

    python experiments/calibrate.py --measurements=board.csv --lut_out=board_lut.json \
        --device_name="my STM32F746" --arch=6111

``board.csv`` has columns ``arch`` (NB201 cell string or index) and ``ms``.
"""

from absl import app, flags

from cells import skeleton as sk
from micronas_jax import cli
from micronas_jax.hardware import calibrate, latency

_MEASUREMENTS = flags.DEFINE_string("measurements", None, "CSV of measured cells: arch, ms.")
_LUT_OUT = flags.DEFINE_string("lut_out", None, "Write the calibrated LUT here.")
_ARCH = flags.DEFINE_string("arch", "11472", "Report this cell's calibrated latency (string or index).")
_DATASET = flags.DEFINE_enum("dataset", "cifar10", list(sk.DATASETS), "The measured networks' input and classes.")
_C = flags.DEFINE_integer("C", 16, "Width of the measured networks.")
_N = flags.DEFINE_integer("N", 5, "Cells per stage of the measured networks.")
_DEVICE_NAME = flags.DEFINE_string("device_name", "calibrated device", "Device name for the LUT.")
_CORE = flags.DEFINE_string("core", "unknown", "Processor core.")
_CLOCK_MHZ = flags.DEFINE_float("clock_mhz", 216.0, "Clock (MHz).")
_RUNTIME = flags.DEFINE_string("runtime", "unknown", "Inference runtime.")
_MODELS = flags.DEFINE_list("models", list(calibrate.MODELS), "Candidate models.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the fit's summary as JSON here.")


def main(argv):
    cli.no_extra_args(argv)
    cell = cli.arch_flag(_ARCH.value)
    skeleton = sk.Skeleton.for_dataset(_DATASET.value, C=_C.value, N=_N.value)
    indices, ms = calibrate.read_measurements(_MEASUREMENTS.value)
    model = calibrate.fit(indices, ms, skeleton, models=_MODELS.value)
    device = {"name": _DEVICE_NAME.value, "core": _CORE.value, "clock_mhz": _CLOCK_MHZ.value,
              "runtime": _RUNTIME.value,
              "provenance": f"calibrated from {len(indices)} whole-network timings in {_MEASUREMENTS.value}"}
    lut = calibrate.to_lut(model, device)
    if _LUT_OUT.value:
        lut.save(_LUT_OUT.value)
    est = latency.estimate_latency(cell, lut, skeleton)
    result = {"model": model.model, "overhead_ms": model.overhead_ms,
              "costs_ms": dict(zip(model.names, model.coef_ms, strict=True)), "fit": model.fit,
              "arch": {"cell": cell.to_string(), "index": cell.index, "latency_ms": est.total_ms}}
    print(f"fitted on {len(indices)} cells; candidates (cross-validated):")
    for name, s in model.fit["candidates"].items():
        mark = "*" if name == model.model else " "
        print(f" {mark} {name:<18} tau {s['cv_kendall_tau']:.4f}   median APE {s['cv_median_ape']:6.2f} %")
    print(f"overhead {model.overhead_ms:.3f} ms; cell #{cell.index}: {est.total_ms:.3f} ms")
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    flags.mark_flag_as_required("measurements")
    app.run(main)
