"""Rebuilds the data files shipped in the packages from the public source tables.

Maintainers only; users never need it. Run from the repository root::

    python -m micronas_jax.data.make_tables --nb201_csv=PATH/benchmark_200ep.csv \
        --mcu_csv=PATH/cortex_m7_cmsisnn_s8_ops.csv

Writes, byte-for-byte reproducibly (gzip mtime 0):

* ``cells/nb201_order.npy``: uint16[15625], official index -> base-5 operator code;
* ``micronas_jax/data/nb201_200ep.csv.gz``: the benchmark table (columns in ``DATA.md``);
* ``micronas_jax/hardware/stm32f746_cmsisnn_s8.json``: the default LUT (latency-bound cycles)
  and ``..._tput.json`` (throughput-bound cycles), from the Cortex-M7 CMSIS-NN operator table.
"""

from __future__ import annotations

import csv
import gzip
import io
import pathlib

import numpy as np
from absl import app, flags

from cells import space
from micronas_jax.hardware import lut as lut_lib

_NB201_CSV = flags.DEFINE_string("nb201_csv", None, "NB201 benchmark_200ep.csv to pack.")
_MCU_CSV = flags.DEFINE_string("mcu_csv", None, "Cortex-M7 CMSIS-NN s8 operator table.")

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "micronas_jax" / "data" / "nb201_200ep.csv.gz"
ORDER_PATH = ROOT / "cells" / space.ORDER_FILE
LUT_DIR = ROOT / "micronas_jax" / "hardware"

STM32F746 = {
    "name": "STM32F746 (NUCLEO-F746ZG)",
    "core": "Arm Cortex-M7",
    "clock_mhz": 216,
    "runtime": "CMSIS-NN s8 kernels (int8), BatchNorm folded",
    "sram_kb": 320,
    "flash_kb": 1024,
    "dead_edges": "dropped",
    "provenance": (
        "CMSIS-NN s8 kernels (ARM-software/CMSIS-NN 99f736a6, -mcpu=cortex-m7 -O2, DSP path) run "
        "bare-metal on QEMU mps2-an500; executed basic blocks costed with llvm-mca -mcpu=cortex-m7 "
        "({bound} cycles). Kernels only: no flash wait states, caches or interpreter overhead; "
        "calibrate overhead and scale from board measurements (calibrate.py)."
    ),
}


def _write_luts(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for column, bound, suffix in (("cycles_mca_latency_bound", "latency-bound", ""),
                                  ("cycles_mca_throughput", "throughput-bound", "_tput")):
        device = dict(STM32F746, provenance=STM32F746["provenance"].format(bound=bound))
        lut = lut_lib.lut_from_rows(rows, device, cost=column, source=path)
        doc = lut.to_json()
        # Ship the exact cycle counts only; ms follow from the board's clock.
        for entry, row in zip(doc["entries"], sorted(rows, key=_row_key), strict=True):
            del entry["ms"]
            entry["cycles"] = int(row[column])
        lut_lib.parse_lut(doc)  # still valid
        with open(LUT_DIR / f"stm32f746_cmsisnn_s8{suffix}.json", "w") as f:
            f.write(lut_lib.dumps(doc))


def _row_key(row):
    return lut_lib.OpKey(row["op"], *(int(row[k]) for k in lut_lib.KEY_FIELDS[1:]))


def main(argv):
    del argv
    if _MCU_CSV.value:
        _write_luts(_MCU_CSV.value)
    if not _NB201_CSV.value:
        return
    with open(_NB201_CSV.value, newline="") as f:
        rows = list(csv.DictReader(f))
    if [int(r["arch_idx"]) for r in rows] != list(range(space.NUM_CELLS)):
        raise ValueError(f"{_NB201_CSV.value}: rows are not indices 0..{space.NUM_CELLS - 1}")
    codes = np.array([space.parse(r["arch_str"]).code for r in rows], np.uint16)
    np.save(ORDER_PATH, codes, allow_pickle=False)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with open(TABLE_PATH, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode())


if __name__ == "__main__":
    app.run(main)
