"""Rebuilds the data files shipped in the packages from the public source tables.

Maintainers only; users never need it. Run from the repository root::

    python -m micronas_jax.data.make_tables --nb201_csv=PATH/benchmark_200ep.csv

Writes, byte-for-byte reproducibly (gzip mtime 0):

* ``cells/nb201_order.npy``: uint16[15625], official index -> base-5 operator code;
* ``micronas_jax/data/nb201_200ep.csv.gz``: the benchmark table (columns in ``DATA.md``).
"""

from __future__ import annotations

import csv
import gzip
import io
import pathlib

import numpy as np
from absl import app, flags

from cells import space

_NB201_CSV = flags.DEFINE_string("nb201_csv", None, "NB201 benchmark_200ep.csv to pack.")

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "micronas_jax" / "data" / "nb201_200ep.csv.gz"
ORDER_PATH = ROOT / "cells" / space.ORDER_FILE


def main(argv):
    del argv
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
    flags.mark_flag_as_required("nb201_csv")
    app.run(main)
