"""Hardware reports: one cell's costs on a device, or every cell's at once."""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any

import numpy as np
from absl import logging

from cells import skeleton as sk
from cells import space
from micronas_jax import benchmark
from micronas_jax.hardware import flops, latency, memory
from micronas_jax.hardware import lut as lut_lib


def _fits(value_kb: float, budget_kb: float | None) -> bool | None:
    return None if budget_kb is None else bool(value_kb <= budget_kb)


def cell_report(arch: space.ArchLike, lut: lut_lib.LUT | None = None, dataset: str = "cifar10", *,
                C: int = 16, N: int = 5, allow_estimate: bool = False) -> dict[str, Any]:
    """Latency (with breakdown), FLOPs, params, flash and peak SRAM of one cell's network."""
    cell = space.as_cell(arch)
    lut = lut or lut_lib.load_lut()
    skeleton = sk.Skeleton.for_dataset(dataset, C=C, N=N)
    lat = latency.estimate_latency(cell, lut, skeleton, allow_estimate=allow_estimate)
    mem = memory.estimate_memory(cell, skeleton, dead_edges=lut.device.dead_edges)
    flash_kb, sram_kb = mem.flash_bytes / 1024, mem.sram_bytes / 1024
    return {
        "cell": cell.to_string(),
        "index": cell.index,
        "dataset": dataset,
        "skeleton": dataclasses.asdict(skeleton),
        "device": dataclasses.asdict(lut.device),
        "latency": lat.to_json(),
        "latency_by_unit_ms": lat.by_unit(),
        "flops_M": flops.count_flops(skeleton, cell) / 1e6,
        "params_M": flops.count_params(skeleton, cell) / 1e6,
        "memory": mem.to_json(),
        "flash_kb": flash_kb,
        "sram_kb": sram_kb,
        "fits_flash": _fits(flash_kb, lut.device.flash_kb),
        "fits_sram": _fits(sram_kb, lut.device.sram_kb),
        "test_accuracy": benchmark.BuiltinBenchmark().query(cell).test_accuracy[dataset],
    }


def format_cell_report(r: dict[str, Any]) -> str:
    lat, dev = r["latency"], r["device"]
    est = " (includes estimated entries)" if lat["estimated"] else ""
    flash_budget = f" of {dev['flash_kb']:.0f}" if dev.get("flash_kb") else ""
    sram_budget = f" of {dev['sram_kb']:.0f}" if dev.get("sram_kb") else ""
    lines = [
        f"cell        {r['cell']}  (#{r['index']})",
        f"device      {dev['name']}, {dev['runtime']}, dead edges {dev['dead_edges']}",
        f"network     {r['dataset']}: C={r['skeleton']['C']}, N={r['skeleton']['N']}, "
        f"{r['skeleton']['resolution']}x{r['skeleton']['resolution']}",
        f"latency     {lat['total_ms']:.2f} ms{est} (overhead {lat['overhead_ms']:.2f} ms)",
        f"FLOPs       {r['flops_M']:.2f} M   params {r['params_M']:.4f} M",
        f"flash       {r['flash_kb']:.1f} KB{flash_budget}   fits: {r['fits_flash']}",
        f"peak SRAM   {r['sram_kb']:.1f} KB{sram_budget}   fits: {r['fits_sram']} "
        f"(at {r['memory']['peak_unit']}, {r['memory']['peak_step']})",
        f"NB201 acc   {r['test_accuracy']:.2f} % ({r['dataset']}, 200 epochs)",
        "latency by operator:",
    ]
    for op, ms in sorted(lat["terms_ms"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {op:<20}{ms:>10.2f} ms  {100 * ms / max(lat['total_ms'], 1e-12):5.1f} %")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SpaceCosts:
    """Every cell's costs on one device (arrays indexed by NB201 index)."""

    dataset: str
    device: str
    latency_ms: np.ndarray
    flops_M: np.ndarray
    params_M: np.ndarray
    flash_kb: np.ndarray
    sram_kb: np.ndarray
    accuracy: np.ndarray
    seconds: float  # wall time of the latency + flash + SRAM estimates

    def summary(self, flash_budget_kb: float | None = None,
                sram_budget_kb: float | None = None) -> dict[str, Any]:
        def stats(a):
            return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}

        fits = np.ones(len(self.latency_ms), bool)
        if flash_budget_kb is not None:
            fits &= self.flash_kb <= flash_budget_kb
        if sram_budget_kb is not None:
            fits &= self.sram_kb <= sram_budget_kb
        front = pareto_front(self.latency_ms, self.accuracy)
        best = int(np.argmax(np.where(fits, self.accuracy, -np.inf))) if fits.any() else None
        return {
            "dataset": self.dataset, "device": self.device, "cells": len(self.latency_ms),
            "seconds_latency_flash_sram": self.seconds,
            "latency_ms": stats(self.latency_ms), "flash_kb": stats(self.flash_kb),
            "sram_kb": stats(self.sram_kb), "flops_M": stats(self.flops_M),
            "cells_fitting_memory": int(fits.sum()),
            "best_fitting_cell": None if best is None else {
                "index": best, "cell": space.from_index(best).to_string(),
                "accuracy": float(self.accuracy[best]), "latency_ms": float(self.latency_ms[best])},
            "pareto_front": [{"index": int(i), "latency_ms": float(self.latency_ms[i]),
                              "accuracy": float(self.accuracy[i])} for i in front],
            "kendall_tau_latency_vs_flops": _tau(self.latency_ms, self.flops_M),
        }

    def write_csv(self, path: str | os.PathLike) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "cell", "latency_ms", "flops_M", "params_M", "flash_kb", "sram_kb",
                        f"test_acc_{self.dataset}"])
            for i, cell in enumerate(space.all_cells()):
                w.writerow([i, cell.to_string(), f"{self.latency_ms[i]:.6f}", f"{self.flops_M[i]:.6f}",
                            f"{self.params_M[i]:.6f}", f"{self.flash_kb[i]:.4f}", f"{self.sram_kb[i]:.4f}",
                            f"{self.accuracy[i]:.4f}"])


def _tau(a, b) -> float:
    from scipy import stats

    return float(stats.kendalltau(a, b).statistic)


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the cells no other cell beats on both lower ``cost`` and higher ``value``,
    ordered by cost."""
    order = np.lexsort((-value, cost))
    front, best = [], -np.inf
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, np.int64)


def space_costs(lut: lut_lib.LUT | None = None, dataset: str = "cifar10", *, C: int = 16, N: int = 5,
                allow_estimate: bool = False) -> SpaceCosts:
    """Latency, FLOPs, params, flash and peak SRAM of all 15,625 cells."""
    lut = lut or lut_lib.load_lut()
    skeleton = sk.Skeleton.for_dataset(dataset, C=C, N=N)
    matrices = space.all_matrices()
    start = time.perf_counter()
    lat = latency.latency_all(lut, skeleton, allow_estimate=allow_estimate)
    mem = memory.memory_table(skeleton, dead_edges=lut.device.dead_edges)
    flash, sram = mem.flash(matrices) / 1024, mem.sram(matrices) / 1024
    seconds = time.perf_counter() - start
    logging.info("latency, flash and SRAM of %d cells in %.3f s", len(lat), seconds)
    costs = flops.cost_table(skeleton)
    return SpaceCosts(dataset, lut.device.name, lat, costs.flops(matrices) / 1e6,
                      costs.params(matrices) / 1e6, flash, sram,
                      benchmark.BuiltinBenchmark().test_accuracies(dataset), seconds)


def format_space_summary(s: dict[str, Any]) -> str:
    lines = [f"{s['cells']:,} cells on {s['device']} ({s['dataset']}): latency, flash and SRAM "
             f"estimated in {s['seconds_latency_flash_sram']:.3f} s", "",
             f"{'':<14}{'min':>10}{'median':>10}{'max':>10}"]
    for key, label in (("latency_ms", "latency ms"), ("flops_M", "FLOPs M"), ("flash_kb", "flash KB"),
                       ("sram_kb", "SRAM KB")):
        v = s[key]
        lines.append(f"{label:<14}{v['min']:>10.2f}{v['median']:>10.2f}{v['max']:>10.2f}")
    lines.append(f"\ncells fitting the device's flash and SRAM: {s['cells_fitting_memory']:,}")
    if s["best_fitting_cell"]:
        b = s["best_fitting_cell"]
        lines.append(f"most accurate of them: #{b['index']} {b['cell']} "
                     f"({b['accuracy']:.2f} %, {b['latency_ms']:.1f} ms)")
    lines.append(f"Kendall tau(latency, FLOPs) = {s['kendall_tau_latency_vs_flops']:.3f}")
    # The front's steps say what a latency target costs in accuracy before any search runs.
    lines.append(f"\nPareto front, latency against {s['dataset']} accuracy ({len(s['pareto_front'])} cells, "
                 f"memory not checked):\n{'latency ms':>12}{'accuracy %':>12}{'index':>8}  cell")
    for p in s["pareto_front"]:
        lines.append(f"{p['latency_ms']:>12.1f}{p['accuracy']:>12.2f}{p['index']:>8}  "
                     f"{space.from_index(p['index']).to_string()}")
    return "\n".join(lines)
