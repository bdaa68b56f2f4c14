"""MCU latency of an NB201 network: the LUT summed over the network's operators + overhead.

The network is walked from ``cells.skeleton`` (the same units and layers the Flax modules build),
each layer mapped to its LUT operator:

* stem: conv3x3 (BatchNorm folded);
* cell edge: conv = ``relu_q7`` + ``conv1x1``/``conv3x3``; ``avg_pool_3x3`` = ``avgpool3x3``;
  ``skip_connect`` = ``memcpy``; ``none`` = nothing; a node with n >= 2 live inputs costs n - 1
  ``add_s8``;
* reduction: ``relu_q7`` + ``res_conv3x3_s2`` + ``relu_q7`` + ``res_conv3x3_s1`` +
  ``res_avgpool2x2_s2`` + ``res_conv1x1`` + ``add_s8``;
* head: ``relu_q7`` + ``gap{H}x{H}`` + ``fc_s8``.

Whether dead cell edges (that cannot reach the cell output, or cannot be reached from its input)
cost anything is the device's ``dead_edges`` option: ``dropped`` (a graph converter removes them;
the default MCU device) or ``executed`` (an eager runtime runs every non-``none`` edge).

Pure Python + NumPy; ``latency_table`` scores all 15,625 cells at once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import lut as lut_lib

_NONE = space.OPS.index("none")
# Edges into each node, by edge index (space.EDGES order).
_INTO = {node: [e for e, (_, dst) in enumerate(space.EDGES) if dst == node] for node in (1, 2, 3)}


def live_edges(matrices: np.ndarray, dead_edges: str = "dropped") -> np.ndarray:
    """bool[..., 6]: which cell edges run, for one-hot cell matrices float[..., 6, 5].

    An edge runs if its operator is not ``none`` and, with ``dead_edges='dropped'``, its source is
    reachable from the cell input and its destination reaches the cell output.
    """
    if dead_edges not in lut_lib.DEAD_EDGE_MODES:
        raise ValueError(f"dead_edges must be one of {lut_lib.DEAD_EDGE_MODES}, got {dead_edges!r}")
    m = np.asarray(matrices)
    if m.shape[-2:] != (space.NUM_EDGES, space.NUM_OPS):
        raise ValueError(f"cell matrices must have shape (..., 6, 5), got {m.shape}")
    on = m[..., _NONE] == 0  # [..., 6]
    if dead_edges == "executed":
        return on
    # Forward reachability from node 0, backward reachability to node 3 (edges in EDGES order).
    e01, e02, e12, e03, e13, e23 = (on[..., e] for e in range(6))
    from0 = {0: np.ones_like(e01), 1: e01}
    from0[2] = e02 | (from0[1] & e12)
    to3 = {3: np.ones_like(e01), 2: e23}
    to3[1] = e13 | (e12 & to3[2])
    to3[0] = e03 | (e01 & to3[1]) | (e02 & to3[2])
    live = [on[..., e] & from0[src] & to3[dst] for e, (src, dst) in enumerate(space.EDGES)]
    return np.stack(live, axis=-1)


def node_additions(live: np.ndarray) -> np.ndarray:
    """int[...]: additions per cell, a node with n >= 2 live inputs costing n - 1."""
    live = np.asarray(live)
    return sum(np.maximum(live[..., idx].sum(-1) - 1, 0) for idx in _INTO.values())


def lut_key(unit: sk.Unit, layer: sk.Layer) -> lut_lib.OpKey | None:
    """The LUT operator of one skeleton layer (``None``: free, e.g. BatchNorm folded, zeros)."""
    c, h = layer.cout, layer.hout
    if layer.kind in ("bn", "zero"):
        return None
    if layer.kind in ("relu", "copy", "add"):
        op = {"relu": "relu_q7", "copy": "memcpy", "add": "add_s8"}[layer.kind]
        return lut_lib.OpKey(op, c, c, h, h, 0, 1)
    if layer.kind == "gap":
        return lut_lib.OpKey(f"gap{layer.hin}x{layer.hin}", layer.cin, c, layer.hin, 1, layer.hin, 1)
    if layer.kind == "fc":
        return lut_lib.OpKey("fc_s8", layer.cin, c, 1, 1, 1, 1)
    if layer.kind == "avgpool":
        op = "avgpool3x3" if unit.kind == "cell" else "res_avgpool2x2_s2"
        return lut_lib.OpKey(op, layer.cin, c, layer.hin, h, layer.k, layer.stride)
    if layer.kind == "conv":
        if unit.kind == "stem":
            op = "stem_conv3x3"
        elif unit.kind == "cell":
            op = f"conv{layer.k}x{layer.k}"
        elif layer.path.endswith("conv_a/conv"):
            op = "res_conv3x3_s2"
        elif layer.path.endswith("conv_b/conv"):
            op = "res_conv3x3_s1"
        else:
            op = "res_conv1x1"
        return lut_lib.OpKey(op, layer.cin, c, layer.hin, h, layer.k, layer.stride)
    raise ValueError(f"layer {layer.path} of kind {layer.kind!r} has no LUT operator")


def network_ops(skeleton: sk.Skeleton, cell: space.Cell,
                dead_edges: str = "dropped") -> list[tuple[str, lut_lib.OpKey]]:
    """(layer path, LUT key) of every operator the device runs, in execution order."""
    live = live_edges(cell.matrix, dead_edges)
    adds = [max(int(live[idx].sum()) - 1, 0) for idx in _INTO.values()]
    out = []
    for unit in skeleton.units:
        if unit.kind == "cell":
            layers = [layer for e, op in enumerate(cell.ops) if live[e]
                      for layer in sk.edge_layers(unit, e, op)]
            for node, n in zip(_INTO, adds, strict=True):
                layers += [sk.Layer(f"{unit.name}/node{node}_add{k}", "add", unit.cout, unit.cout,
                                    unit.hout, unit.hout, unit=unit.name) for k in range(n)]
        else:
            layers = sk.unit_layers(unit, cell)
        for layer in layers:
            key = lut_key(unit, layer)
            if key is not None:
                out.append((layer.path, key))
    return out


@dataclasses.dataclass(frozen=True)
class OpCost:
    path: str
    key: lut_lib.OpKey
    ms: float
    estimated: bool


@dataclasses.dataclass(frozen=True)
class LatencyEstimate:
    """A network's estimated latency.

    Attributes:
      cell: the cell string.
      total_ms: overhead + the sum of ``ops``.
      overhead_ms: the device's constant overhead.
      ops: per-operator costs in execution order (empty for a calibrated whole-network model).
      terms: named parts of the total (per LUT operator, or the calibrated model's terms).
      estimated: whether any cost came from the fitted estimator rather than a LUT entry.
      device: the device's name.
    """

    cell: str
    total_ms: float
    overhead_ms: float
    ops: tuple[OpCost, ...]
    terms: Mapping[str, float]
    estimated: bool
    device: str

    def by_unit(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.ops:
            unit = c.path.split("/")[0]
            out[unit] = out.get(unit, 0.0) + c.ms
        return out

    def to_json(self, with_ops: bool = False) -> dict[str, Any]:
        d = {"cell": self.cell, "total_ms": self.total_ms, "overhead_ms": self.overhead_ms,
             "terms_ms": dict(self.terms), "estimated": self.estimated, "device": self.device}
        if with_ops:
            d["ops"] = [{"path": c.path, "op": str(c.key), "ms": c.ms, "estimated": c.estimated}
                        for c in self.ops]
        return d


def estimate_latency(cell: space.ArchLike, lut: lut_lib.LUT | None = None,
                     skeleton: sk.Skeleton | None = None, *,
                     allow_estimate: bool = False) -> LatencyEstimate:
    """Estimated latency of the network of ``cell`` on the LUT's device.

    Args:
      cell: cell string, index or ``Cell``.
      lut: the device's LUT (default: STM32F746, CMSIS-NN).
      skeleton: the network (default: NB201's CIFAR-10 network, C=16, N=5).
      allow_estimate: price shapes missing from the LUT with the fitted per-operator model
        (flagged in the result) instead of raising ``MissingEntryError``.
    """
    cell = space.as_cell(cell)
    lut = lut or lut_lib.load_lut()
    skeleton = skeleton or sk.Skeleton()
    if lut.calibration is not None:
        return _calibrated_estimate(cell, lut, skeleton)
    ops, terms, estimated = [], {}, False
    for path, key in network_ops(skeleton, cell, lut.device.dead_edges):
        ms, est = lut.lookup(key, allow_estimate=allow_estimate)
        ops.append(OpCost(path, key, ms, est))
        terms[key.op] = terms.get(key.op, 0.0) + ms
        estimated |= est
    total = lut.overhead_ms + sum(c.ms for c in ops)
    return LatencyEstimate(cell.to_string(), total, lut.overhead_ms, tuple(ops), terms, estimated,
                           lut.device.name)


def _calibrated_estimate(cell, lut, skeleton) -> LatencyEstimate:
    from micronas_jax.hardware import calibrate  # calibrate builds on this module

    model = calibrate.CalibratedModel.from_json(lut.calibration, lut.overhead_ms, lut.source)
    model.check_skeleton(skeleton)
    terms = model.terms(cell.matrix)
    total = lut.overhead_ms + sum(terms.values())
    return LatencyEstimate(cell.to_string(), total, lut.overhead_ms, (), terms, False,
                           lut.device.name)


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """Vectorised latency: ``overhead + fixed + sum over live edges + additions``.

    Attributes:
      fixed_ms: stem, reductions and head.
      edge_op_ms: float64[6, 5]: an operator on an edge, summed over every cell of the network.
      add_ms: one node addition in every cell of the network.
      overhead_ms: the device's constant.
      dead_edges: the device's dead-edge mode.
    """

    fixed_ms: float
    edge_op_ms: np.ndarray
    add_ms: float
    overhead_ms: float
    dead_edges: str

    def latency(self, matrices: np.ndarray) -> np.ndarray:
        """float64[...]: latency (ms) of cells given as one-hot float[..., 6, 5] matrices."""
        m = np.asarray(matrices, np.float64)
        live = live_edges(m, self.dead_edges)
        edge = np.einsum("...eo,eo->...e", m, self.edge_op_ms)
        return (self.overhead_ms + self.fixed_ms + (edge * live).sum(-1)
                + self.add_ms * node_additions(live))


@functools.lru_cache(maxsize=32)
def latency_table(lut: lut_lib.LUT | None = None, skeleton: sk.Skeleton | None = None, *,
                  allow_estimate: bool = False) -> LatencyTable:
    """The ``LatencyTable`` of a LUT and skeleton, by walking each unit and edge operator once."""
    lut = lut or lut_lib.load_lut()
    skeleton = skeleton or sk.Skeleton()
    if lut.calibration is not None:
        raise ValueError(f"LUT {lut.source} holds a calibrated whole-network model; use "
                         "calibrate.CalibratedModel.latency for all cells")

    def cost(unit, layers):
        keys = [lut_key(unit, layer) for layer in layers]
        return sum(lut.lookup(k, allow_estimate=allow_estimate)[0] for k in keys if k is not None)

    empty = space.Cell(("none",) * space.NUM_EDGES)
    fixed, add, edge_op = 0.0, 0.0, np.zeros((space.NUM_EDGES, space.NUM_OPS))
    for unit in skeleton.units:
        if unit.kind != "cell":
            fixed += cost(unit, sk.unit_layers(unit, empty))
            continue
        add += cost(unit, [sk.Layer(f"{unit.name}/add", "add", unit.cout, unit.cout, unit.hout,
                                    unit.hout)])
        for e in range(space.NUM_EDGES):
            for o, op in enumerate(space.OPS):
                edge_op[e, o] += cost(unit, sk.edge_layers(unit, e, op))
    return LatencyTable(fixed, edge_op, add, lut.overhead_ms, lut.device.dead_edges)


def latency_all(lut: lut_lib.LUT | None = None, skeleton: sk.Skeleton | None = None, *,
                allow_estimate: bool = False) -> np.ndarray:
    """float64[15625]: every cell's latency (ms), by NB201 index, from a LUT or a calibration."""
    lut = lut or lut_lib.load_lut()
    skeleton = skeleton or sk.Skeleton()
    matrices = space.all_matrices()
    if lut.calibration is None:
        return latency_table(lut, skeleton, allow_estimate=allow_estimate).latency(matrices)
    from micronas_jax.hardware import calibrate

    model = calibrate.CalibratedModel.from_json(lut.calibration, lut.overhead_ms, lut.source)
    model.check_skeleton(skeleton)
    return model.latency(matrices)
