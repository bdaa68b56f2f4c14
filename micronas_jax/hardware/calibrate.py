"""Calibrating a latency model from whole-network measurements of a handful of cells.

Given measured latencies of some cells on any device (a CSV of cell -> ms), fit non-negative
costs (``scipy.optimize.nnls``) of a linear model over cell features, choose among candidate
models by k-fold cross-validation on the measured cells alone, and write the result as a LUT
(``lut.py`` format, ``calibration`` section) that ``latency.estimate_latency`` uses.

Candidate models (features per cell, all + a constant overhead):

* ``additive-dropped`` / ``additive-executed``: one cost per operator type (conv1x1, conv3x3,
  avg pool, skip) times the number of such edges that run, one per node addition; dead edges
  dropped or executed (``latency.live_edges``).
* ``liveness``: as above, but an edge's cost depends on whether it is live, fed only zeros (it
  reaches the output but not from the input), or unused (it cannot reach the output): runtimes
  differ in which of these they prune.
* ``position``: one cost per (edge, operator type) for live edges, one per addition per node.

Pure Python + NumPy + SciPy.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from scipy import optimize, stats

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import latency
from micronas_jax.hardware import lut as lut_lib

MODELS = ("additive-dropped", "additive-executed", "liveness", "position")
_OP_NAMES = ("skip", "conv1x1", "conv3x3", "pool")  # space.OPS[1:]


def _reaches_output(on: np.ndarray) -> np.ndarray:
    e01, e02, e12, e03, e13, e23 = (on[..., e] for e in range(6))
    to3 = {3: np.ones_like(e01), 2: e23}
    to3[1] = e13 | (e12 & to3[2])
    to3[0] = e03 | (e01 & to3[1]) | (e02 & to3[2])
    return np.stack([on[..., e] & to3[d] for e, (_, d) in enumerate(space.EDGES)], axis=-1)


def features(model: str, matrices: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """(float64[..., F] features, their names) of cells as one-hot float[..., 6, 5] matrices."""
    m = np.asarray(matrices)
    op = m.argmax(-1)
    on = m[..., 0] == 0
    cols, names = [], []
    if model.startswith("additive"):
        run = latency.live_edges(m, model.split("-")[1])
        for o, name in enumerate(_OP_NAMES, start=1):
            cols.append(((op == o) & run).sum(-1))
            names.append(f"{name}")
        cols.append(latency.node_additions(run))
        names.append("add")
    elif model == "liveness":
        live = latency.live_edges(m, "dropped")
        out = _reaches_output(on)
        for o, name in enumerate(_OP_NAMES, start=1):
            is_o = op == o
            cols += [(is_o & live).sum(-1), (is_o & out & ~live).sum(-1), (is_o & on & ~out).sum(-1)]
            names += [f"{name}", f"{name}_zero_input", f"{name}_unused"]
        added = latency.node_additions(live)
        cols += [added, latency.node_additions(on) - added]
        names += ["add", "add_dead"]
    elif model == "position":
        live = latency.live_edges(m, "dropped")
        for e, (src, dst) in enumerate(space.EDGES):
            for o, name in enumerate(_OP_NAMES, start=1):
                cols.append((op[..., e] == o) & live[..., e])
                names.append(f"{name}@{src}->{dst}")
        for node, idx in latency._INTO.items():
            cols.append(np.maximum(live[..., idx].sum(-1) - 1, 0))
            names.append(f"add@node{node}")
    else:
        raise ValueError(f"unknown calibration model {model!r}; known: {', '.join(MODELS)}")
    return np.stack(cols, axis=-1).astype(np.float64), tuple(names)


def feature_names(model: str) -> tuple[str, ...]:
    return features(model, space.Cell(("none",) * space.NUM_EDGES).matrix)[1]


def _fit_nnls(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares for (costs, constant); columns scaled for conditioning."""
    A = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    scale = np.maximum(np.abs(A).max(axis=0), 1e-12)
    coef, _ = optimize.nnls(A / scale, y)
    coef = coef / scale
    return coef[:-1], float(coef[-1])


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.kendalltau(a, b).statistic)


def median_ape(pred: np.ndarray, true: np.ndarray) -> float:
    """Median absolute percentage error (%)."""
    return float(np.median(np.abs(pred - true) / np.abs(true)) * 100)


@dataclasses.dataclass(frozen=True)
class CalibratedModel:
    """A fitted whole-network latency model of one skeleton.

    Attributes:
      model: one of ``MODELS``.
      names: feature names; ``coef_ms``: their non-negative costs (ms each).
      overhead_ms: the fitted constant.
      skeleton: (C, N, num_classes, resolution) of the measured networks.
      fit: how it was fitted (cells, cross-validation scores of every candidate).
    """

    model: str
    names: tuple[str, ...]
    coef_ms: tuple[float, ...]
    overhead_ms: float
    skeleton: tuple[int, int, int, int]
    fit: Mapping[str, Any]

    def latency(self, matrices: np.ndarray) -> np.ndarray:
        """float64[...]: predicted latency (ms), overhead included."""
        X, _ = features(self.model, matrices)
        return X @ np.asarray(self.coef_ms) + self.overhead_ms

    def terms(self, matrix: np.ndarray) -> dict[str, float]:
        """Non-zero feature costs of one cell (ms), overhead excluded."""
        X, _ = features(self.model, matrix)
        return {n: float(x * c) for n, x, c in zip(self.names, X, self.coef_ms, strict=True) if x * c}

    def check_skeleton(self, skeleton: sk.Skeleton) -> None:
        got = (skeleton.C, skeleton.N, skeleton.num_classes, skeleton.resolution)
        if got != self.skeleton:
            raise ValueError(f"the calibrated model was fitted on networks with (C, N, classes, "
                             f"resolution) = {self.skeleton}, not {got}")

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "features": list(self.names), "coef_ms": list(self.coef_ms),
                "skeleton": dict(zip(("C", "N", "num_classes", "resolution"), self.skeleton,
                                     strict=True)),
                "fit": dict(self.fit)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], overhead_ms: float = 0.0,
                  source: str = "<memory>") -> CalibratedModel:
        try:
            model, names, coef = d["model"], tuple(d["features"]), tuple(map(float, d["coef_ms"]))
            s = d["skeleton"]
            skel = (int(s["C"]), int(s["N"]), int(s["num_classes"]), int(s["resolution"]))
        except (KeyError, TypeError, ValueError) as err:
            raise lut_lib.LUTError(f"LUT {source}: malformed calibration section: {err!r}") from None
        expected = feature_names(model)
        if names != expected or len(coef) != len(names) or min(coef, default=0) < 0:
            raise lut_lib.LUTError(f"LUT {source}: calibration features/costs do not match model "
                                   f"{model!r} (expected features {list(expected)})")
        return cls(model, names, coef, overhead_ms, skel, d.get("fit", {}))


def fit(indices: Sequence[int], measured_ms: Sequence[float], skeleton: sk.Skeleton | None = None,
        *, models: Sequence[str] = MODELS, folds: int = 5, seed: int = 0) -> CalibratedModel:
    """Fits every candidate model and keeps the best by k-fold cross-validated Kendall tau.

    Args:
      indices: NB201 indices of the measured cells (at least ``folds`` of them).
      measured_ms: their whole-network latencies (ms), finite and positive.
      skeleton: the network that was measured (default: NB201 CIFAR-10).
      models: candidates, from ``MODELS``; ties go to the earlier (simpler) one.
      folds: cross-validation folds over the measured cells.
      seed: seeds the fold assignment.
    """
    skeleton = skeleton or sk.Skeleton()
    idx = np.asarray(indices, np.int64)
    y = np.asarray(measured_ms, np.float64)
    if idx.shape != y.shape or idx.ndim != 1:
        raise ValueError(f"indices {idx.shape} and measurements {y.shape} must be equal-length vectors")
    if len(idx) < max(folds, 2):
        raise ValueError(f"calibration needs at least {max(folds, 2)} measured cells, got {len(idx)}")
    bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
    if len(bad):
        raise ValueError(f"measured latencies must be finite and positive; cell {idx[bad[0]]} has "
                         f"{float(y[bad[0]])}")
    matrices = space.all_matrices()[idx]
    fold = np.random.default_rng(seed).permutation(len(idx)) % folds
    scores = {}
    for model in models:
        X, _ = features(model, matrices)
        pred = np.empty_like(y)
        for k in range(folds):
            coef, const = _fit_nnls(X[fold != k], y[fold != k])
            pred[fold == k] = X[fold == k] @ coef + const
        scores[model] = {"cv_kendall_tau": kendall_tau(pred, y), "cv_median_ape": median_ape(pred, y)}
        logging.debug("calibration candidate %s: CV tau %.4f, median APE %.2f%%", model,
                     scores[model]["cv_kendall_tau"], scores[model]["cv_median_ape"])
    best = max(models, key=lambda m: (round(scores[m]["cv_kendall_tau"], 6), -models.index(m)))
    X, names = features(best, matrices)
    coef, const = _fit_nnls(X, y)
    fit_info = {"n_cells": len(idx), "folds": folds, "seed": seed, "candidates": scores,
                "cells": idx.tolist()}
    return CalibratedModel(best, names, tuple(coef.tolist()), const,
                           (skeleton.C, skeleton.N, skeleton.num_classes, skeleton.resolution),
                           fit_info)


def to_lut(model: CalibratedModel, device: Mapping[str, Any], base: lut_lib.LUT | None = None) -> lut_lib.LUT:
    """A LUT carrying the calibrated model (and, if given, a base LUT's per-operator entries)."""
    doc = {"format": lut_lib.FORMAT, "device": dict(device), "overhead_ms": model.overhead_ms,
           "entries": base.to_json()["entries"] if base else [], "calibration": model.to_json()}
    return lut_lib.parse_lut(doc)


def read_measurements(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(indices, ms) from a CSV with an ``arch`` column (cell string or index) and ``ms``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"measurement file not found: {path}") from None
    if not rows or not {"arch", "ms"} <= set(rows[0]):
        raise ValueError(f"{path}: needs columns 'arch' and 'ms', got {list(rows[0]) if rows else []}")
    indices, ms = [], []
    for line, row in enumerate(rows, start=2):
        try:
            indices.append(space.as_cell(row["arch"]).index)
            ms.append(float(row["ms"]))
        except (space.CellError, ValueError) as err:
            raise ValueError(f"{path} line {line}: {err}") from None
    return np.array(indices), np.array(ms)


def evaluate(model: CalibratedModel, indices: np.ndarray, measured_ms: np.ndarray) -> dict[str, float]:
    pred = model.latency(space.all_matrices()[np.asarray(indices)])
    return {"kendall_tau": kendall_tau(pred, measured_ms), "median_ape": median_ape(pred, measured_ms)}


def flops_baseline(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                   skeleton: sk.Skeleton | None = None) -> dict[str, float]:
    """A FLOPs-only linear model ``a * FLOPs + b`` fitted on the same cells, scored the same way."""
    from micronas_jax.hardware import flops

    f = flops.cost_table(skeleton or sk.Skeleton()).flops(space.all_matrices()).astype(np.float64)
    coef, const = _fit_nnls(f[train, None], y_train)
    pred = f[test] * coef[0] + const
    return {"kendall_tau": kendall_tau(pred, y_test), "median_ape": median_ape(pred, y_test)}


def validate_on_devices(measured: Mapping[str, np.ndarray], *, n_train: int = 100, draws: int = 3,
                        skeleton: sk.Skeleton | None = None) -> dict[str, dict[str, Any]]:
    """Fits on ``n_train`` random cells, predicts the rest, for each device and ``draws`` seeds.

    Args:
      measured: device name -> float[15625] latencies (ms) of every cell, by NB201 index.

    Returns:
      device -> mean Kendall tau and median APE on the held-out cells of the selected model, of
      the plain additive model (``additive-executed``) and of a FLOPs-only linear model, and the
      models chosen in each draw.
    """
    out = {}
    for device, y in measured.items():
        y = np.asarray(y, np.float64)
        if y.shape != (space.NUM_CELLS,):
            raise ValueError(f"device {device!r}: need {space.NUM_CELLS} latencies, got {y.shape}")
        rows: dict[str, list[dict[str, float]]] = {"selected": [], "additive": [], "flops": []}
        chosen = []
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            train = np.sort(rng.choice(space.NUM_CELLS, n_train, replace=False))
            test = np.setdiff1d(np.arange(space.NUM_CELLS), train)
            model = fit(train, y[train], skeleton, seed=draw)
            chosen.append(model.model)
            rows["selected"].append(evaluate(model, test, y[test]))
            plain = fit(train, y[train], skeleton, models=("additive-executed",), seed=draw)
            rows["additive"].append(evaluate(plain, test, y[test]))
            rows["flops"].append(flops_baseline(train, y[train], test, y[test], skeleton))
        out[device] = {
            name: {k: float(np.mean([r[k] for r in rs])) for k in ("kendall_tau", "median_ape")}
            for name, rs in rows.items()}
        out[device]["models"] = chosen
    return out
