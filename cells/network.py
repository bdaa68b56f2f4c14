"""NB201 cells and networks as Flax modules, in two forms with one parameter layout.

* ``NB201Network(skeleton, cell=c)``: the standalone network of one cell; only its operators
  are built, so it computes only what is alive.
* ``NB201Network(skeleton)``: the masked supernet. Every edge carries every operator and a
  float[6, 5] edge x operator mask, passed at call time, weights each operator's output, so one
  compiled function serves any cell or partly pruned supernet and ``vmap``s over masks.

The two share parameter paths (``cells_3/edge_0_2_nor_conv_3x3/conv/kernel``...): a standalone
network's parameters are a subset of the supernet's (``select_params``), and under a cell's
one-hot mask the supernet computes the standalone network's function.

Shapes: inputs float[B, H, W, C_in] (NHWC); outputs float[B, num_classes] logits.
Modules hold no search logic: they take a mask and inputs, nothing else.

``init`` also returns a ``perturbations`` collection (zeros shaped like each convolution's output
for the init batch), which the structured NTK (``micronas_jax.proxies.ntk``) differentiates.
Drop it, or init with ``mutable=['params', 'batch_stats']``, when applying to other batch sizes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from cells import ops as ops_lib
from cells import skeleton as sk
from cells import space

default_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
"""PyTorch's default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""


class CellModule(nn.Module):
    """A 4-node NB201 cell: node j = sum over i < j of op_ij(node i); returns node 3.

    With ``ops`` set, builds those six operators; with ``ops=None`` it is the masked supernet
    cell and ``mask`` (float[6, 5]) weights every operator of every edge.
    """

    ops: tuple[str, ...] | None = None
    kernel_init: ops_lib.Initializer = ops_lib.kaiming_normal
    unroll: bool = False  # see ``NB201Network.unroll_cells``

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool | str) -> jax.Array:
        nodes = [x]
        for node in range(1, space.NUM_NODES):
            total = None
            for src in range(node):
                edge = space.EDGES.index((src, node))
                for o, op in enumerate(space.OPS):
                    if self.ops is not None and op != self.ops[edge]:
                        continue
                    if self.ops is None and op == "none":
                        continue  # zero whatever its weight
                    y = ops_lib.apply_op(
                        op, nodes[src], train=train, name=sk.edge_module_name(edge, op),
                        kernel_init=self.kernel_init, unroll=self.unroll,
                    )
                    if mask is not None:
                        y = mask[edge, o].astype(y.dtype) * y
                    total = y if total is None else total + y
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's ``ResNetBasicblock`` with stride 2: the block between stages.

    out = ReLUConvBN3x3_s1(ReLUConvBN3x3_s2(x)) + Conv1x1(AvgPool2x2_s2(x)).
    """

    features: int
    kernel_init: ops_lib.Initializer = ops_lib.kaiming_normal

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool | str) -> jax.Array:
        y = ops_lib.ReLUConvBN(self.features, 3, 2, self.kernel_init, name="conv_a")(x, train=train)
        y = ops_lib.ReLUConvBN(self.features, 3, 1, self.kernel_init, name="conv_b")(y, train=train)
        r = nn.avg_pool(x, (2, 2), strides=(2, 2))
        r = ops_lib.Conv(self.features, 1, kernel_init=self.kernel_init, name="downsample_conv")(r)
        return r + y


class Stem(nn.Module):
    features: int
    kernel_init: ops_lib.Initializer = ops_lib.kaiming_normal

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool | str) -> jax.Array:
        x = ops_lib.Conv(self.features, 3, kernel_init=self.kernel_init, unroll=True, name="conv")(x)
        return ops_lib.batch_norm(train, name="bn")(x)


class Head(nn.Module):
    """BN + ReLU, global average pool, linear classifier."""

    num_classes: int
    dense_init: ops_lib.Initializer = default_dense_init

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool | str) -> jax.Array:
        x = nn.relu(ops_lib.batch_norm(train, name="bn")(x))
        self.sow("intermediates", "relu", x)  # read by linear-region counting
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.dense_init, precision=ops_lib.PRECISION,
                        name="classifier")(x)


class NB201Network(nn.Module):
    """NB201's ``TinyNetwork`` built from a ``Skeleton``.

    Attributes:
      skeleton: widths, depth, classes, resolution.
      cell: the cell for a standalone network; ``None`` for the masked supernet.
      kernel_init: initialiser of every convolution (default Kaiming normal, fan-in).
      dense_init: initialiser of the classifier weight (bias starts at zero).
      unroll_cells: run the cells' small convolutions unrolled on CPU (``cells.ops.UNROLL_MAX_TERMS``;
        same function and variables): for the thin linear-region network, whose 1-channel
        convolutions XLA's CPU kernels run slowly (regions of one cell, B = 3 x 1,000, one
        thread: 9.7 -> 3.7 ms, the same counts on 89 masks x 3 seeds).
    """

    skeleton: sk.Skeleton
    cell: space.Cell | None = None
    kernel_init: ops_lib.Initializer = ops_lib.kaiming_normal
    dense_init: ops_lib.Initializer = default_dense_init
    unroll_cells: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool | str) -> jax.Array:
        """Logits float[B, num_classes] of inputs float[B, H, W, C_in].

        Args:
          x: input images, NHWC, H = W = ``skeleton.resolution``, C_in = ``skeleton.in_channels``.
          mask: float[6, 5] edge x operator weights; required for the supernet, refused for a
            standalone network.
          train: BatchNorm normalises with batch statistics (True), running ones (False), or
            the vmapped batch's, held constant (``cells.ops.HELD_BATCH_STATS``).
        """
        s = self.skeleton
        want = (s.resolution, s.resolution, s.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"inputs must have shape (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {tuple(x.shape)}")
        if self.cell is None:
            if mask is None or tuple(mask.shape) != (space.NUM_EDGES, space.NUM_OPS):
                got = None if mask is None else tuple(mask.shape)
                raise ValueError(f"the masked supernet needs a mask of shape (6, 5), got {got}")
        elif mask is not None:
            raise ValueError(f"a standalone network of {self.cell} takes no mask")
        ops = None if self.cell is None else self.cell.ops
        for unit in s.units:
            if unit.kind == "stem":
                x = Stem(unit.cout, self.kernel_init, name=unit.name)(x, train=train)
            elif unit.kind == "cell":
                x = CellModule(ops, self.kernel_init, self.unroll_cells, name=unit.name)(x, mask, train=train)
            elif unit.kind == "reduction":
                x = ResidualReduction(unit.cout, self.kernel_init, name=unit.name)(x, train=train)
            else:
                x = Head(unit.cout, self.dense_init, name=unit.name)(x, train=train)
        return x


def switched_apply(skeleton: sk.Skeleton, variables: Any, x: jax.Array, op_indices: jax.Array | None = None,
                   *, train: bool | str, mask: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """The network of a cell (``op_indices``) or of a partly pruned supernet (``mask``), run with
    the masked supernet's variables, computing only the operators that are alive.

    * ``op_indices`` (int[6], ``space.OPS`` indices): each edge is a ``lax.switch`` over its five
      operators, so one compiled function serves every cell and runs only its operators (XLA
      runs the taken branch). Equal to ``NB201Network(skeleton)`` under the cell's one-hot mask.
    * ``mask`` (float[6, 5], as the masked supernet takes it): every operator with a nonzero
      weight runs, times its weight; convolutions and pools sit in a ``lax.cond`` on their weight,
      so a pruned one costs nothing. The conditional's boundary also keeps XLA's CPU fusion from
      merging neighbouring convolutions' unrolled sums (``cells.ops.small_conv``) into one loop
      that it then recomputes for each consumer (measured 2x slower than XLA's convolutions).
      Equal to ``NB201Network(skeleton)`` under the same mask.

    BatchNorm's running statistics are not updated. Do not ``vmap`` over ``op_indices`` or
    ``mask``: a batched switch or cond computes every branch; use the masked supernet for that.

    Args:
      skeleton: the network's shape.
      variables: the masked supernet's variables (``params``, ``batch_stats``, and optionally
        ``perturbations``, added to each convolution's output).
      x: float[B, H, W, C_in] inputs.
      op_indices: int[6] operator index per edge; or None, with ``mask`` given.
      train: BatchNorm with batch statistics (True), running ones (False), or the vmapped
        batch's, held constant (``cells.ops.HELD_BATCH_STATS``).
      mask: float[6, 5] edge x operator weights, instead of ``op_indices``.

    Returns:
      (float[B, num_classes] logits, state), as a Flax ``apply`` with ``mutable=['batch_stats',
      'intermediates']`` returns them: ``state['batch_stats']`` the running statistics, updated
      in training mode for the BatchNorms that ran (the others as given), and
      ``state['intermediates']`` every convolution's input under the masked supernet's module
      paths (``.../conv/conv_in``), for the structured NTK, and for the cell's convolutions
      whether each runs (``.../conv/alive``, a bool scalar).
    """
    if (op_indices is None) == (mask is None):
        raise ValueError("switched_apply takes exactly one of op_indices and mask")
    inter: dict[str, Any] = {}
    stats = dict(variables.get("batch_stats", {}))

    def run(module, name, h):
        out, state = module.apply(_subtree(variables, name), h, train=train,
                                  mutable=["batch_stats", "intermediates"])
        inter[name] = state.get("intermediates", {})
        if "batch_stats" in state:
            stats[name] = state["batch_stats"]
        return out

    for unit in skeleton.units:
        if unit.kind == "stem":
            x = run(Stem(unit.cout), unit.name, x)
        elif unit.kind == "reduction":
            x = run(ResidualReduction(unit.cout), unit.name, x)
        elif unit.kind == "head":
            x = run(Head(unit.cout), unit.name, x)
        else:
            x, inter[unit.name], stats[unit.name] = _switched_cell(
                _subtree(variables, unit.name), x, op_indices, mask, train)
    return x, {"batch_stats": stats, "intermediates": inter}


def _subtree(variables: Any, name: str) -> dict[str, Any]:
    """Each collection's entry for submodule ``name``; absent collections stay absent (Flax
    rejects an empty ``perturbations``)."""
    return {c: tree[name] for c, tree in variables.items() if name in tree}


def _switched_cell(cell_vars, x, op_indices, mask, train):
    """(node 3, intermediates, batch_stats) of one cell; see ``switched_apply``. Every branch of
    an edge's conditional returns the edge's convolutions' statistics, updated by the one it ran."""
    inter = {}
    stats = dict(cell_vars["batch_stats"])

    def conv(edge_stats, name, k, h):
        out, state = ops_lib.ReLUConvBN(h.shape[-1], k, unroll=True).apply(
            _subtree(cell_vars, name), h, train=train, mutable=["batch_stats"])
        return out, {**edge_stats, name: state["batch_stats"]}

    def plain(edge_stats, f):
        return lambda h: (f(h), edge_stats)

    nodes = [x]
    for node in range(1, space.NUM_NODES):
        total = None
        for src in range(node):
            edge, h = space.EDGES.index((src, node)), nodes[src]
            names = {k: sk.edge_module_name(edge, f"nor_conv_{k}x{k}") for k in (1, 3)}
            edge_stats = {n: stats[n] for n in names.values()}
            branches = [plain(edge_stats, jnp.zeros_like), plain(edge_stats, lambda h: h),
                        functools.partial(conv, edge_stats, names[1], 1),
                        functools.partial(conv, edge_stats, names[3], 3),
                        plain(edge_stats, ops_lib.avg_pool_3x3)]  # space.OPS order
            for k in (1, 3):  # both conv operators read relu(node src), whichever runs
                o = space.OPS.index(f"nor_conv_{k}x{k}")
                inter[names[k]] = {"conv": {
                    "conv_in": (jax.nn.relu(h),),
                    # spares the NTK a scan for zeros
                    "alive": (op_indices[edge] == o if mask is None else mask[edge, o] != 0,)}}
            if mask is None:
                y, edge_stats = jax.lax.switch(op_indices[edge], branches, h)
            else:
                y = mask[edge, 1] * h  # skip_connect; 'none' adds nothing
                for o in (2, 3, 4):
                    w = mask[edge, o]

                    def live(h, f=branches[o], w=w):
                        out, new = f(h)
                        return w * out, new

                    out, new = jax.lax.cond(w != 0, live, plain(edge_stats, jnp.zeros_like), h)
                    y = y + out
                    if o in (2, 3):  # its own statistics (the branch holds the other's as it found them)
                        own = names[1 if o == 2 else 3]
                        edge_stats = {**edge_stats, own: new[own]}
            stats.update(edge_stats)
            total = y if total is None else total + y
        nodes.append(total)
    return nodes[-1], inter, stats


def select_params(supernet_variables: Any, cell: space.ArchLike) -> Any:
    """The standalone network's variables taken from a supernet's (same values, fewer ops).

    Works on any collection tree keyed by module path (``params``, ``batch_stats``, or the
    whole variables dict).
    """
    cell = space.as_cell(cell)
    alive = {sk.edge_module_name(e, op) for e, op in enumerate(cell.ops)}
    flat = traverse_util.flatten_dict(supernet_variables)
    kept = {
        path: value
        for path, value in flat.items()
        if not any(part.startswith("edge_") and part not in alive for part in path)
    }
    return traverse_util.unflatten_dict(kept)


def count_variables(tree: Any) -> dict[str, int]:
    """Number of scalars per module path ('a/b/c') in a variables tree (e.g. ``params``)."""
    counts: dict[str, int] = {}
    for path, value in traverse_util.flatten_dict(tree).items():
        key = "/".join(path[:-1])
        counts[key] = counts.get(key, 0) + int(jnp.size(value))
    return counts
