"""FLOPs and parameter counts, walked from the network as built (``cells.skeleton``).

NB201's convention (its ``get_model_infos`` hooks): a convolution costs
``k*k*cin*cout*H_out*W_out`` (+ ``cout*H_out*W_out`` with a bias), a linear layer
``cin*cout + cout``; pooling, BatchNorm, ReLU and additions cost nothing. Parameters are conv
kernels, BatchNorm scales and shifts, and the classifier. The counts include every operator
of the network as built, dead edges too, as NB201 reports them.

Pure Python + NumPy.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from cells import skeleton as sk
from cells import space


def layer_flops(layer: sk.Layer) -> int:
    """FLOPs of one layer under NB201's convention."""
    if layer.kind == "conv":
        return layer.macs + (layer.out_elements if layer.bias else 0)
    if layer.kind == "fc":
        return layer.macs + layer.cout
    return 0


def count_flops(skeleton: sk.Skeleton, cell: space.ArchLike) -> int:
    """FLOPs of one forward pass of one sample (NB201's ``flops`` is this / 1e6)."""
    return sum(layer_flops(layer) for layer in skeleton.layers(space.as_cell(cell)))


def count_params(skeleton: sk.Skeleton, cell: space.ArchLike) -> int:
    """Trainable parameters (NB201's ``params`` is this / 1e6)."""
    return sum(layer.num_params for layer in skeleton.layers(space.as_cell(cell)))


@dataclasses.dataclass(frozen=True)
class CostTable:
    """Costs split into a cell-independent part and a per-(edge, operator) part.

    ``total = fixed + sum over edges of per_edge_op[edge, op_on_edge]``, each entry summed over
    all cell units; both parts come from walking the layers.

    Attributes:
      fixed_flops, fixed_params: stem, reductions, head and the cells' node additions.
      edge_op_flops, edge_op_params: int64[6, 5].
    """

    fixed_flops: int
    fixed_params: int
    edge_op_flops: np.ndarray
    edge_op_params: np.ndarray

    def flops(self, matrices: np.ndarray) -> np.ndarray:
        """int64[...]: FLOPs of cells given as one-hot float[..., 6, 5] matrices."""
        return self.fixed_flops + _contract(matrices, self.edge_op_flops)

    def params(self, matrices: np.ndarray) -> np.ndarray:
        """int64[...]: parameter counts of cells given as one-hot float[..., 6, 5] matrices."""
        return self.fixed_params + _contract(matrices, self.edge_op_params)


def _contract(matrices: np.ndarray, table: np.ndarray) -> np.ndarray:
    m = np.asarray(matrices)
    if m.shape[-2:] != (space.NUM_EDGES, space.NUM_OPS):
        raise ValueError(f"cell matrices must have shape (..., 6, 5), got {m.shape}")
    return np.rint(np.einsum("...eo,eo->...", m.astype(np.float64), table)).astype(np.int64)


@functools.cache
def cost_table(skeleton: sk.Skeleton) -> CostTable:
    """The ``CostTable`` of ``skeleton`` (cached per skeleton)."""
    flops = np.zeros((space.NUM_EDGES, space.NUM_OPS), np.int64)
    params = np.zeros_like(flops)
    fixed_flops = fixed_params = 0
    empty = space.Cell(("none",) * space.NUM_EDGES)
    for unit in skeleton.units:
        for layer in sk.unit_layers(unit, empty):
            if layer.edge is None:  # everything but the edges' own operators
                fixed_flops += layer_flops(layer)
                fixed_params += layer.num_params
        if unit.kind != "cell":
            continue
        for e in range(space.NUM_EDGES):
            for o, op in enumerate(space.OPS):
                for layer in sk.edge_layers(unit, e, op):
                    flops[e, o] += layer_flops(layer)
                    params[e, o] += layer.num_params
    return CostTable(fixed_flops, fixed_params, flops, params)
