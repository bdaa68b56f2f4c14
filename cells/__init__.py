"""The NAS-Bench-201 space and its networks.

Pure Python (no JAX): ``cells.space`` (cell strings, indices, isomorphism) and
``cells.skeleton`` (the network's units, layers and shapes). The Flax modules live in
``cells.network`` and ``cells.ops``, imported explicitly, so that the hardware model can use
this package without JAX.
"""

from cells.skeleton import DATASETS, Layer, Skeleton, Unit
from cells.space import (
    EDGES,
    NUM_CELLS,
    OPS,
    ArchLike,
    Cell,
    CellError,
    all_cells,
    all_matrices,
    as_cell,
    from_index,
    from_matrix,
    isomorphism_classes,
    parse,
)

__all__ = [
    "DATASETS",
    "EDGES",
    "NUM_CELLS",
    "OPS",
    "ArchLike",
    "Cell",
    "CellError",
    "Layer",
    "Skeleton",
    "Unit",
    "all_cells",
    "all_matrices",
    "as_cell",
    "from_index",
    "from_matrix",
    "isomorphism_classes",
    "parse",
]
