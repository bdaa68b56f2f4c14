"""The NAS-Bench-201 cell space: operators, edges, cell strings, indices, isomorphism.

A cell is a 4-node DAG; node ``j`` is the sum over ``i < j`` of ``op_ij(node i)``. Its six
edges are ordered as NB201 writes them, node by node::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     (0,1)  (0,2) (1,2)  (0,3) (1,3) (2,3)

Three interchangeable forms of a cell:

* the string above (``parse`` / ``Cell.to_string``);
* its official NB201 index 0..15624 (``Cell.index`` / ``from_index``), in the order of NB201's
  own meta-architecture list, shipped as ``nb201_order.npy`` (see ``DATA.md``);
* a 6 x 5 one-hot edge x operator matrix (``Cell.matrix`` / ``from_matrix``), rows in edge order,
  columns in ``OPS`` order.

This module is pure Python + NumPy: the hardware model imports it without JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
from collections.abc import Sequence

import numpy as np

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""NB201's operators, in NB201's own order (the matrix column order)."""

NUM_NODES = 4
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(from_node, to_node) of each edge, in string order (the matrix row order)."""

NUM_EDGES = len(EDGES)
NUM_OPS = len(OPS)
NUM_CELLS = NUM_OPS**NUM_EDGES  # 15,625

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
"""NB201's ResNet-like cell (#11472): the launchers' default reference ``--arch``."""

_OP_INDEX = {op: i for i, op in enumerate(OPS)}
_EDGE_INDEX = {edge: e for e, edge in enumerate(EDGES)}
_TOKEN = re.compile(r"^(?P<op>[^~|+]*)~(?P<src>[^~|+]*)$")


class CellError(ValueError):
    """A malformed cell: bad string, unknown operator, bad edge, node or index."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One NB201 cell: the operator on each of the six edges, in ``EDGES`` order."""

    ops: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.ops, tuple) or len(self.ops) != NUM_EDGES:
            raise CellError(f"a cell has {NUM_EDGES} edges, got ops={self.ops!r}")
        for e, op in enumerate(self.ops):
            if op not in _OP_INDEX:
                raise CellError(
                    f"unknown operator {op!r} on edge {EDGES[e][0]}->{EDGES[e][1]}; "
                    f"known operators: {', '.join(OPS)}"
                )

    def to_string(self) -> str:
        """The NB201 string, edges in canonical order."""
        groups = []
        for node in range(1, NUM_NODES):
            tokens = [f"{self.ops[_EDGE_INDEX[(i, node)]]}~{i}" for i in range(node)]
            groups.append("|" + "|".join(tokens) + "|")
        return "+".join(groups)

    __str__ = to_string

    @property
    def op_indices(self) -> tuple[int, ...]:
        return tuple(_OP_INDEX[op] for op in self.ops)

    @property
    def code(self) -> int:
        """Base-5 code of the operator indices, edge 0 most significant (0..15624)."""
        code = 0
        for k in self.op_indices:
            code = code * NUM_OPS + k
        return code

    @property
    def index(self) -> int:
        """The official NB201 index of this cell."""
        return int(_order().code_to_index[self.code])

    @property
    def matrix(self) -> np.ndarray:
        """float32[6, 5] one-hot edge x operator matrix."""
        m = np.zeros((NUM_EDGES, NUM_OPS), np.float32)
        m[np.arange(NUM_EDGES), self.op_indices] = 1.0
        return m

    def count(self, op: str) -> int:
        """How many edges carry ``op``."""
        if op not in _OP_INDEX:
            raise CellError(f"unknown operator {op!r}; known operators: {', '.join(OPS)}")
        return self.ops.count(op)

    def isomorphism_key(self) -> str:
        """NB201's ``unique_str`` (``to_unique_str(consider_zero=True)``).

        Equal for cells that compute the same function up to a relabelling of parallel
        paths: ``skip_connect`` is transparent, ``none`` (or a zero input) zeroes a path, and
        the inputs of a node are an unordered sum.
        """
        nodes = {0: "0"}
        for node in range(1, NUM_NODES):
            terms = []
            for i in range(node):
                op, src = self.ops[_EDGE_INDEX[(i, node)]], nodes[i]
                if op == "none" or src == "#":
                    terms.append("#")
                elif op == "skip_connect":
                    terms.append(src)
                else:
                    terms.append(f"({src})@{op}")
            nodes[node] = "+".join(sorted(terms))
        return nodes[NUM_NODES - 1]

    def canonical(self) -> Cell:
        """The representative of this cell's isomorphism class: its lowest-index member."""
        return from_index(_representatives()[self.isomorphism_key()])


def parse(text: str) -> Cell:
    """Parses an NB201 cell string; the edges of a node may be listed in any order.

    Raises:
      CellError: naming the offending part (node group, token, operator or node index).
    """
    if not isinstance(text, str):
        raise CellError(f"a cell string must be a str, got {type(text).__name__}: {text!r}")
    s = text.strip()
    if not s:
        raise CellError("empty cell string")
    groups = s.split("+")
    if len(groups) != NUM_NODES - 1:
        raise CellError(
            f"cell string {text!r} has {len(groups)} node group(s) separated by '+'; "
            f"NB201 cells have {NUM_NODES - 1}"
        )
    ops: list[str | None] = [None] * NUM_EDGES
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise CellError(f"node {node} group {group!r} in {text!r} must be enclosed in '|'")
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise CellError(
                f"node {node} group {group!r} in {text!r} has {len(tokens)} edge(s); "
                f"node {node} takes exactly {node} (one from each earlier node)"
            )
        for token in tokens:
            m = _TOKEN.match(token)
            if m is None:
                raise CellError(f"edge token {token!r} in {text!r} is not of the form 'op~i'")
            op, src_text = m.group("op"), m.group("src")
            if op not in _OP_INDEX:
                raise CellError(
                    f"unknown operator {op!r} in {text!r}; known operators: {', '.join(OPS)}"
                )
            if not src_text.isdigit():
                raise CellError(f"input node {src_text!r} of token {token!r} is not an integer")
            src = int(src_text)
            if src >= node:
                raise CellError(
                    f"token {token!r} in {text!r}: node {node} can only take inputs from nodes "
                    f"0..{node - 1}, not node {src}"
                )
            e = _EDGE_INDEX[(src, node)]
            if ops[e] is not None:
                raise CellError(f"edge {src}->{node} appears twice in {text!r}")
            ops[e] = op
    return Cell(tuple(ops))  # every slot is filled: counts and uniqueness were checked.


def from_index(index: int) -> Cell:
    """The cell with official NB201 index ``index`` (0..15624)."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise CellError(f"a cell index must be an integer, got {type(index).__name__}: {index!r}")
    if not 0 <= index < NUM_CELLS:
        raise CellError(f"cell index {index} is out of range 0..{NUM_CELLS - 1}")
    return _from_code(int(_order().codes[index]))


def from_matrix(matrix: np.ndarray | Sequence[Sequence[float]]) -> Cell:
    """The cell of a one-hot 6 x 5 edge x operator matrix."""
    m = np.asarray(matrix)
    if m.shape != (NUM_EDGES, NUM_OPS):
        raise CellError(f"a cell matrix has shape ({NUM_EDGES}, {NUM_OPS}), got {m.shape}")
    is_binary = np.isin(m, (0, 1)).all()
    bad = [e for e in range(NUM_EDGES) if not is_binary or m[e].sum() != 1]
    if bad:
        raise CellError(
            f"cell matrix rows must be one-hot; rows (edges) {bad} are not: {m[bad].tolist()}"
        )
    return Cell(tuple(OPS[int(k)] for k in m.argmax(axis=1)))


ArchLike = Cell | str | int | np.integer


def as_cell(arch: ArchLike) -> Cell:
    """A ``Cell`` from a Cell, a cell string, an index, or a string holding an index."""
    if isinstance(arch, Cell):
        return arch
    if isinstance(arch, str) and arch.strip().isdigit():
        return from_index(int(arch.strip()))
    if isinstance(arch, str):
        return parse(arch)
    return from_index(arch)


def all_cells() -> list[Cell]:
    """All 15,625 cells, in official index order."""
    return [_from_code(int(c)) for c in _order().codes]


def all_matrices() -> np.ndarray:
    """float32[15625, 6, 5]: every cell's one-hot matrix, in official index order."""
    codes = _order().codes.astype(np.int64)
    digits = (codes[:, None] // NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)) % NUM_OPS
    return np.eye(NUM_OPS, dtype=np.float32)[digits]


def _from_code(code: int) -> Cell:
    ops = []
    for _ in range(NUM_EDGES):
        code, k = divmod(code, NUM_OPS)
        ops.append(OPS[k])
    return Cell(tuple(reversed(ops)))


@dataclasses.dataclass(frozen=True)
class _Order:
    codes: np.ndarray  # uint16[15625]: index -> code
    code_to_index: np.ndarray  # int32[15625]: code -> index


ORDER_FILE = "nb201_order.npy"


def load_order(path=None) -> _Order:
    """Loads and validates the index -> code table (default: the one shipped in ``cells``)."""
    source = path if path is not None else importlib.resources.files("cells") / ORDER_FILE
    try:
        with open(source, "rb") as f:
            codes = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"NB201 index order file missing: {source}") from None
    except ValueError as err:
        raise CellError(f"NB201 index order file {source} is corrupt: {err}") from None
    if codes.shape != (NUM_CELLS,) or not np.issubdtype(codes.dtype, np.integer):
        raise CellError(
            f"NB201 index order file {source} is corrupt: expected {NUM_CELLS} integer codes, "
            f"got shape {codes.shape} dtype {codes.dtype}"
        )
    if not np.array_equal(np.sort(codes), np.arange(NUM_CELLS)):
        raise CellError(f"NB201 index order file {source} is corrupt: not a permutation of 0..15624")
    inverse = np.empty(NUM_CELLS, np.int32)
    inverse[codes] = np.arange(NUM_CELLS, dtype=np.int32)
    return _Order(codes=codes, code_to_index=inverse)


@functools.cache
def _order() -> _Order:
    return load_order()


@functools.cache
def _keys() -> tuple[str, ...]:
    """Every cell's isomorphism key, by official index."""
    return tuple(cell.isomorphism_key() for cell in all_cells())


@functools.cache
def _representatives() -> dict[str, int]:
    """isomorphism key -> lowest official index in its class."""
    reps: dict[str, int] = {}
    for index, key in enumerate(_keys()):
        reps.setdefault(key, index)
    return reps


def isomorphism_classes() -> np.ndarray:
    """int32[15625]: for each index, the index of its class representative."""
    reps = _representatives()
    return np.array([reps[k] for k in _keys()], np.int32)
