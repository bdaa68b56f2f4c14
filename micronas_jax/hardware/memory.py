"""Flash and peak SRAM of an int8 NB201 network on an MCU (CMSIS-NN style deployment).

**Flash** = every convolution's int8 kernel + int32 bias (BatchNorm folded into it) + per-channel
requantisation (int32 multiplier and shift, 8 bytes per output channel); the classifier's int8
weights + int32 bias + one multiplier/shift pair; the head's stand-alone BatchNorm as a
per-channel int32 scale and shift (8 bytes per channel); plus ``layer_overhead_bytes`` per layer
with parameters (operator descriptors in the model file; 0 by default). Dead edges dropped by
the device store nothing.

**Peak SRAM** = the largest total of int8 activation buffers alive at once, plus the running
kernel's scratch, under this execution order (as muNAS defines it: a buffer lives from the step
that writes it to the last step that reads it):

* stem: image + output + im2col scratch;
* cell: its live edges in string order (node by node). The first live edge into node j writes
  node j's buffer; each later one writes a temporary that is then added into node j. A conv edge
  applies ReLU into a scratch copy of its input (the input feeds other edges unchanged) and
  needs CMSIS-NN's im2col buffer (``4 * C_in * k * k`` bytes for k > 1); a pool needs
  ``4 * C`` bytes. Node i is freed after its last reader. A cell with no live edge writes zeros:
  input + output;
* reduction: relu(x) -> conv_a -> relu in place -> conv_b, then pool(x) -> conv1x1 -> add;
* head: ReLU in place, global pool, classifier.

Pure Python + NumPy; ``memory_table`` gives all 15,625 cells at once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import latency

_SRC = np.array([s for s, _ in space.EDGES])
_DST = np.array([d for _, d in space.EDGES])
_CONV = {space.OPS.index("nor_conv_1x1"): 1, space.OPS.index("nor_conv_3x3"): 3}
_POOL = space.OPS.index("avg_pool_3x3")


def im2col_bytes(cin: int, k: int) -> int:
    """CMSIS-NN ``arm_convolve_s8`` scratch: 2 * C_in * k * k int16 (none for 1x1)."""
    return 4 * cin * k * k if k > 1 else 0


def layer_flash_bytes(layer: sk.Layer, unit: sk.Unit, layer_overhead_bytes: int = 0) -> int:
    """Flash bytes of one layer's parameters, int8-deployed (0 for parameter-free layers)."""
    if layer.kind == "conv":
        folded_bn = not layer.path.endswith("downsample_conv")  # the shortcut conv has no BN
        return (layer.k * layer.k * layer.cin * layer.cout + 8 * layer.cout
                + (4 * layer.cout if folded_bn else 0) + layer_overhead_bytes)
    if layer.kind == "fc":
        return layer.cin * layer.cout + 4 * layer.cout + 8 + layer_overhead_bytes
    if layer.kind == "bn" and unit.kind == "head":  # the only BN with no conv to fold into
        return 8 * layer.cout + layer_overhead_bytes
    return 0


def cell_step_buffers(live: np.ndarray) -> np.ndarray:
    """int[..., 6]: feature-map buffers alive while each cell edge runs (0 for edges not run).

    Args:
      live: bool[..., 6], the edges that run (``latency.live_edges``).
    """
    live = np.asarray(live, bool)
    idx = np.arange(space.NUM_EDGES)
    last_use = [np.where(live & (_SRC == k), idx, -1).max(-1) for k in range(3)]
    first_into = {j: np.where(live & (_DST == j), idx, space.NUM_EDGES).min(-1) for j in (1, 2, 3)}
    steps = []
    for e, (_, j) in enumerate(space.EDGES):
        n = 1 + (first_into[j] != e).astype(int)  # node j (+ a temporary to add into it)
        for k in range(j):
            n = n + (last_use[k] >= e)  # earlier nodes still to be read, node i included
        steps.append(np.where(live[..., e], n, 0))
    return np.stack(steps, axis=-1)


def _edge_scratch(op_index: np.ndarray, channels: int, fm: int) -> np.ndarray:
    scratch = np.zeros(op_index.shape, np.int64)
    for o, k in _CONV.items():
        scratch = np.where(op_index == o, fm + im2col_bytes(channels, k), scratch)
    return np.where(op_index == _POOL, 4 * channels, scratch)


def cell_peak_bytes(matrices: np.ndarray, channels: int, resolution: int,
                    dead_edges: str = "dropped") -> np.ndarray:
    """int64[...]: peak SRAM (bytes) inside one cell of width ``channels`` at ``resolution``."""
    m = np.asarray(matrices)
    live = latency.live_edges(m, dead_edges)
    fm = channels * resolution * resolution
    steps = cell_step_buffers(live) * fm + np.where(live, _edge_scratch(m.argmax(-1), channels, fm), 0)
    return np.maximum(steps.max(-1), 2 * fm)


def _fixed_unit_peak(unit: sk.Unit) -> tuple[int, str]:
    """(peak bytes, step) of a stem, reduction or head."""
    if unit.kind == "stem":
        return (unit.cin * unit.hin**2 + unit.cout * unit.hout**2 + im2col_bytes(unit.cin, 3),
                "stem conv: image + output + im2col")
    if unit.kind == "head":
        fm = unit.cin * unit.hin**2
        return max(fm + unit.cin, unit.cin + unit.cout), "head global pool: input + pooled"
    fin, fout, quarter = unit.cin * unit.hin**2, unit.cout * unit.hout**2, unit.cin * unit.hout**2
    steps = {
        "relu(x)": 2 * fin,
        "conv_a": 2 * fin + fout + im2col_bytes(unit.cin, 3),
        "conv_b": fin + 2 * fout + im2col_bytes(unit.cout, 3),
        "pool(x)": fin + fout + quarter + 4 * unit.cin,
        "conv1x1": 2 * fout + quarter,
        "add": 2 * fout,
    }
    step = max(steps, key=steps.get)
    return steps[step], f"reduction {step}"


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Flash and peak SRAM of one network (bytes), with where the SRAM peak occurs."""

    cell: str
    flash_bytes: int
    sram_bytes: int
    peak_unit: str
    peak_step: str
    unit_peaks: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def estimate_memory(cell: space.ArchLike, skeleton: sk.Skeleton | None = None, *,
                    dead_edges: str = "dropped", layer_overhead_bytes: int = 0) -> MemoryEstimate:
    """Flash and peak SRAM of the int8 network of ``cell`` (default skeleton: NB201 CIFAR-10)."""
    cell = space.as_cell(cell)
    skeleton = skeleton or sk.Skeleton()
    live = latency.live_edges(cell.matrix, dead_edges)
    flash, peaks, steps = 0, {}, {}
    for unit in skeleton.units:
        if unit.kind == "cell":
            layers = [layer for e, op in enumerate(cell.ops) if live[e]
                      for layer in sk.edge_layers(unit, e, op)]
            fm = unit.cout * unit.hout**2
            step_bytes = (cell_step_buffers(live) * fm
                          + np.where(live, _edge_scratch(cell.matrix.argmax(-1), unit.cout, fm), 0))
            e = int(step_bytes.argmax())
            if step_bytes[e] >= 2 * fm:
                src, dst = space.EDGES[e]
                peaks[unit.name], steps[unit.name] = int(step_bytes[e]), f"edge {src}->{dst} {cell.ops[e]}"
            else:
                peaks[unit.name], steps[unit.name] = 2 * fm, "cell input + output"
        else:
            layers = sk.unit_layers(unit, cell)
            peaks[unit.name], steps[unit.name] = _fixed_unit_peak(unit)
        flash += sum(layer_flash_bytes(layer, unit, layer_overhead_bytes) for layer in layers)
    peak_unit = max(peaks, key=peaks.get)
    return MemoryEstimate(cell.to_string(), flash, peaks[peak_unit], peak_unit, steps[peak_unit], peaks)


@dataclasses.dataclass(frozen=True)
class MemoryTable:
    """Vectorised flash and peak SRAM for cells given as one-hot float[..., 6, 5] matrices."""

    fixed_flash: int
    edge_op_flash: np.ndarray  # int64[6, 5], summed over every cell of the network
    fixed_peak: int  # the largest stem / reduction / head peak
    stage_shapes: tuple[tuple[int, int], ...]  # (channels, resolution) of each stage's cells
    dead_edges: str

    def flash(self, matrices: np.ndarray) -> np.ndarray:
        m = np.asarray(matrices, np.float64)
        live = latency.live_edges(m, self.dead_edges)
        per_edge = np.einsum("...eo,eo->...e", m, self.edge_op_flash)
        return self.fixed_flash + np.rint((per_edge * live).sum(-1)).astype(np.int64)

    def sram(self, matrices: np.ndarray) -> np.ndarray:
        peaks = [cell_peak_bytes(matrices, c, h, self.dead_edges) for c, h in self.stage_shapes]
        return np.maximum(np.max(peaks, axis=0), self.fixed_peak)


@functools.lru_cache(maxsize=32)
def memory_table(skeleton: sk.Skeleton | None = None, *, dead_edges: str = "dropped",
                 layer_overhead_bytes: int = 0) -> MemoryTable:
    skeleton = skeleton or sk.Skeleton()
    empty = space.Cell(("none",) * space.NUM_EDGES)
    fixed_flash, fixed_peak, shapes = 0, 0, []
    edge_flash = np.zeros((space.NUM_EDGES, space.NUM_OPS), np.int64)
    for unit in skeleton.units:
        if unit.kind == "cell":
            shapes.append((unit.cout, unit.hout))
            for e in range(space.NUM_EDGES):
                for o, op in enumerate(space.OPS):
                    edge_flash[e, o] += sum(layer_flash_bytes(layer, unit, layer_overhead_bytes)
                                            for layer in sk.edge_layers(unit, e, op))
        else:
            fixed_flash += sum(layer_flash_bytes(layer, unit, layer_overhead_bytes)
                               for layer in sk.unit_layers(unit, empty))
            fixed_peak = max(fixed_peak, _fixed_unit_peak(unit)[0])
    return MemoryTable(fixed_flash, edge_flash, fixed_peak, tuple(sorted(set(shapes))), dead_edges)
