"""Measurements behind ``experiments/bench_hardware.py``."""

from __future__ import annotations

import csv
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import calibrate, latency, memory
from micronas_jax.hardware import lut as lut_lib


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_s": min(times), "median_s": statistics.median(times)}


def read_device_latencies(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``lat_*`` columns of a CSV with one row per NB201 index -> float64[15625] each."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != space.NUM_CELLS or [int(r["arch_idx"]) for r in rows] != list(range(space.NUM_CELLS)):
        raise ValueError(f"{path}: expected one row per NB201 index 0..15624 in column arch_idx")
    columns = [c for c in rows[0] if c.startswith("lat_")]
    if not columns:
        raise ValueError(f"{path}: no lat_* columns")
    return {c: np.array([float(r[c]) for r in rows]) for c in columns}


def run(arch: space.ArchLike = 6111, *, repeats: int = 5, latency_csv: str | None = None,
        n_train: int = 100, draws: int = 3) -> dict[str, Any]:
    cell = space.as_cell(arch)
    lut = lut_lib.load_lut()
    skeleton = sk.Skeleton()
    matrices = space.all_matrices()

    def all_cells_cold():  # tables rebuilt from the LUT walk each time
        latency.latency_table.cache_clear()
        memory.memory_table.cache_clear()
        all_cells_warm()

    def all_cells_warm():
        latency.latency_table(lut, skeleton).latency(matrices)
        table = memory.memory_table(skeleton)
        table.flash(matrices)
        table.sram(matrices)

    timings = {
        "one cell: latency walk": _time(lambda: latency.estimate_latency(cell, lut, skeleton), repeats),
        "one cell: flash + SRAM walk": _time(lambda: memory.estimate_memory(cell, skeleton), repeats),
        "all 15,625 cells, cold (tables built)": _time(all_cells_cold, repeats),
        "all 15,625 cells, warm": _time(all_cells_warm, repeats),
    }
    result: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                              "arch": cell.to_string(), "timings": timings}
    if latency_csv:
        measured = read_device_latencies(latency_csv)
        result["calibration"] = {}
        for device, y in measured.items():
            dataset = "ImageNet16-120" if "in16" in device else "cifar10"
            result["calibration"][device] = calibrate.validate_on_devices(
                {device: y}, n_train=n_train, draws=draws,
                skeleton=sk.Skeleton.for_dataset(dataset))[device]
        result["calibration_setup"] = {"n_train": n_train, "draws": draws, "source": latency_csv}
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'timing':<40}{'min (s)':>12}{'median (s)':>12}"]
    for name, t in result["timings"].items():
        lines.append(f"{name:<40}{t['min_s']:>12.4f}{t['median_s']:>12.4f}")
    if "calibration" in result:
        setup = result["calibration_setup"]
        lines += ["", f"calibration: fit on {setup['n_train']} random cells, predict the rest, "
                  f"mean of {setup['draws']} draws (Kendall tau / median APE %)",
                  f"{'device':<28}{'selected model':>22}{'plain additive':>18}{'FLOPs-only':>18}  models"]
        for device, r in result["calibration"].items():
            cells = [f"{r[k]['kendall_tau']:.3f} / {r[k]['median_ape']:5.2f}"
                     for k in ("selected", "additive", "flops")]
            lines.append(f"{device:<28}{cells[0]:>22}{cells[1]:>18}{cells[2]:>18}  "
                         f"{','.join(sorted(set(r['models'])))}")
    return "\n".join(lines)
