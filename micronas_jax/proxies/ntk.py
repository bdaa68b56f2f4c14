"""Trainability: the condition number of the empirical NTK at initialisation.

For a batch X of B images, row i of the Jacobian J is the gradient of the sum of sample i's
logits with respect to the network's weights (convolution kernels, BatchNorm scales, the
classifier's weight; no biases, as TE-NAS), G = J J^T (B x B), and the score is
lambda_max(G) / lambda_min(G).

Every kernel is a transformation of a pure ``apply_fn(variables, x, train) -> (logits, state)``,
``state`` holding ``batch_stats`` and ``intermediates`` (a Flax ``apply`` with
``mutable=['batch_stats', 'intermediates']``). Three kernels (``NTKMode``), one signature:

* ``EXACT`` (default): BatchNorm in training mode, as TE-NAS runs it. Sample i's output then
  depends on the whole batch, so row i is a vector-Jacobian product of the *batched* forward pass
  with cotangent e_i; per-sample gradients would compute a different kernel. With the network's
  ``perturbations`` (``cells.ops.Conv``), the B rows come from vmapped backward passes through
  the data path (all at once up to B = 32, in groups beyond: ``rows_per_pass``), each kernel's
  rows from a patch contraction (``_exact_structured``); without, B backward passes run one
  after another.
* ``PER_SAMPLE_RUNNING_STATS``: BatchNorm normalises with its running statistics (at
  initialisation mean 0, variance 1), so samples do not interact; rows are per-sample
  gradients (one vmapped backward pass).
* ``PER_SAMPLE_BATCH_STATS``: BatchNorm normalises with the batch's statistics held constant
  (no gradient through them); rows are per-sample gradients. A different kernel from both. The
  statistics come from a forward pass of their own, or, for networks that take
  ``train=cells.ops.HELD_BATCH_STATS``, from within the per-sample pass (``stats_in_pass``).

J leaves the device in float32; G and its eigenvalues are formed on the host in float64 (float32
eigenvalues go wrong from a condition number of about 1e6). A singular, zero or non-finite G
gives an infinite condition number and a flag, never a NaN.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cells import ops as ops_lib

ApplyFn = Callable[[Any, jax.Array, bool], tuple[jax.Array, Any]]

SINGULAR_RTOL = 1e-12
"""lambda_min <= SINGULAR_RTOL * lambda_max counts as singular: J is float32, so smaller
eigenvalue ratios are below its resolution."""


class NTKMode(str, enum.Enum):
    EXACT = "exact"
    PER_SAMPLE_RUNNING_STATS = "per_sample_running_stats"
    PER_SAMPLE_BATCH_STATS = "per_sample_batch_stats"


def is_weight(path: tuple[str, ...]) -> bool:
    """Convolution and dense kernels and BatchNorm scales: TE-NAS's ``'weight' in name``."""
    return path[-1] in ("kernel", "scale")


def split_weights(params: Any) -> tuple[dict, dict]:
    """(weights, the rest) of a params tree, both as flat {path: array} dicts."""
    flat = traverse_util.flatten_dict(params)
    weights = {k: v for k, v in flat.items() if is_weight(k)}
    return weights, {k: v for k, v in flat.items() if not is_weight(k)}


def _merge(weights: dict, rest: dict) -> Any:
    return traverse_util.unflatten_dict({**weights, **rest})


def _rows_to_matrix(rows: dict) -> jax.Array:
    """{path: float[B, ...]} -> float[B, P], leaves in sorted path order."""
    leaves = [rows[k] for k in sorted(rows)]
    return jnp.concatenate([r.reshape(r.shape[0], -1) for r in leaves], axis=1)


def batch_statistics(apply_fn: ApplyFn, variables: Any, x: jax.Array) -> Any:
    """The batch's BatchNorm statistics (biased variance), in ``batch_stats`` layout.

    One training-mode pass from zeroed running statistics: the update ``m * 0 + (1 - m) * s``
    then holds ``(1 - m)`` times each statistic ``s``.
    """
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"])
    _, updated = apply_fn({**variables, "batch_stats": zeroed}, x, True)
    return jax.tree_util.tree_map(lambda s: s / (1.0 - ops_lib.BN_MOMENTUM), updated["batch_stats"])


ROWS_X_BATCH = 2048
"""The exact Jacobian's backward passes run ``ROWS_X_BATCH // B`` cotangents at a time (at least
one, at most B, a divisor of B): each pass's activations then stay the size of about 2,048
samples, whatever B. At B = 128 this ran about 20 % faster on CPU than all 128 at once, with an
eighth of the cotangents alive at a time; at B <= 32 it is one pass, as before."""


def rows_per_pass(batch: int) -> int:
    """The divisor of ``batch`` closest to ``ROWS_X_BATCH // batch`` from below (at least 1)."""
    return ops_lib.largest_divisor(batch, max(1, ROWS_X_BATCH // batch))


def jacobian(apply_fn: ApplyFn, variables: Any, x: jax.Array,
             mode: NTKMode = NTKMode.EXACT, *, stats_in_pass: bool = False,
             first_row: jax.Array | int = 0, num_rows: int | None = None) -> jax.Array:
    """float32[B, P]: the NTK Jacobian rows (weights only) of ``apply_fn`` at ``variables``.

    Args:
      apply_fn: ``(variables, x, train) -> (logits float[B, K], {'batch_stats': ..., 'intermediates': ...})``.
      variables: ``{'params': ..., 'batch_stats': ...}``.
      x: float[B, H, W, C] inputs.
      mode: which kernel (see ``NTKMode``).
      stats_in_pass: in ``PER_SAMPLE_BATCH_STATS`` mode, ``apply_fn`` takes
        ``train=cells.ops.HELD_BATCH_STATS`` (the cells' networks do): the batch's statistics are
        then computed inside the per-sample pass, as means over its vmapped samples, rather than
        by a forward pass before it (a cell scored, B = 32, one thread: 31 -> 25 ms). Applies when
        all B rows are computed; a block of rows takes the separate pass.
      first_row, num_rows: compute only rows ``first_row .. first_row + num_rows - 1`` of J
        (float32[num_rows, P]; default all B), the batch still the whole of ``x``: so that
        threads can share one network's rows. ``first_row`` may be traced.

    Columns are grouped per parameter, each flattened as stored; the structured exact path puts
    the convolution kernels after the other weights. G = J J^T does not depend on the order.
    """
    mode = NTKMode(mode)
    batch = x.shape[0]
    num_rows = batch if num_rows is None else num_rows
    if not 1 <= num_rows <= batch:
        raise ValueError(f"num_rows must be in 1..{batch} (the batch), got {num_rows}")
    eye = jax.lax.dynamic_slice_in_dim(jnp.eye(batch, dtype=x.dtype), first_row, num_rows)  # cotangents
    if mode == NTKMode.EXACT and "perturbations" in variables:
        return _exact_structured(apply_fn, variables, x, eye)
    # Per-sample rows: vmap(grad) measured faster than the structured form here (no B x B coupling).
    variables = {k: v for k, v in variables.items() if k != "perturbations"}  # batch-shaped zeros
    weights, rest = split_weights(variables["params"])
    if mode == NTKMode.EXACT:
        def summed(w):
            logits, _ = apply_fn({**variables, "params": _merge(w, rest)}, x, True)
            return logits.sum(axis=1)

        _, vjp = jax.vjp(summed, weights)
        rows = jax.lax.map(lambda e: vjp(e)[0], eye)
        return _rows_to_matrix(rows)
    train: bool | str = False
    if mode == NTKMode.PER_SAMPLE_RUNNING_STATS:
        stats = variables["batch_stats"]
    elif stats_in_pass and num_rows == batch:
        stats, train = variables["batch_stats"], ops_lib.HELD_BATCH_STATS
    else:
        stats = jax.lax.stop_gradient(batch_statistics(apply_fn, variables, x))

    def one(w, xi):
        logits, _ = apply_fn({"params": _merge(w, rest), "batch_stats": stats}, xi[None], train)
        return logits.sum()

    xs = jax.lax.dynamic_slice_in_dim(x, first_row, num_rows)
    rows = jax.vmap(jax.grad(one), in_axes=(None, 0), axis_name=ops_lib.SAMPLE_AXIS)(weights, xs)
    return _rows_to_matrix(rows)


def _exact_structured(apply_fn: ApplyFn, variables: Any, x: jax.Array, eye: jax.Array) -> jax.Array:
    """The exact (batch-coupled) Jacobian's rows for float[R, B] cotangents ``eye`` (rows of the
    identity), in one vmapped backward pass.

    Vmapping a backward pass over B cotangents makes every convolution's weight gradient a
    grouped convolution, slow on CPU. So the batched backward pass runs the data path only, with
    respect to a zero perturbation on each convolution's output (its gradient is the output
    cotangent delta), the BatchNorm scales and the classifier; each kernel's rows are then one
    contraction of the convolution's input patches with delta. Needs ``variables['perturbations']``
    and ``apply_fn`` returning ``intermediates`` with each convolution's ``conv_in``; padding
    (k - 1) / 2 as ``cells.ops.Conv``.
    """
    kernels, others, rest = _split_kernels(variables["params"])
    batch = x.shape[0]

    def summed(others, perts):
        params = traverse_util.unflatten_dict({**kernels, **others, **rest})
        logits, state = apply_fn({**variables, "params": params, "perturbations": perts}, x, True)
        return logits.sum(axis=1), state["intermediates"]

    _, vjp, inter = jax.vjp(summed, others, variables["perturbations"], has_aux=True)
    inter = traverse_util.flatten_dict(inter)

    def rows(eye):  # float[rows, B] cotangents -> float[rows, P]
        g_others, g_perts = jax.vmap(vjp)(eye)  # deltas: [rows, B, H', W', C]
        cols = [g_others[k].reshape(eye.shape[0], -1) for k in sorted(g_others)]
        cols += _kernel_rows(kernels, inter, traverse_util.flatten_dict(g_perts))
        return jnp.concatenate(cols, axis=1)

    num_rows = eye.shape[0]
    step = ops_lib.largest_divisor(num_rows, rows_per_pass(batch))
    if step == num_rows:
        return rows(eye)
    return jax.lax.map(rows, eye.reshape(num_rows // step, step, batch)).reshape(num_rows, -1)


def _split_kernels(params: Any) -> tuple[dict, dict, dict]:
    """(conv kernels, other weights, the rest) of a params tree, as flat dicts."""
    flat = traverse_util.flatten_dict(params)
    kernels = {k: v for k, v in flat.items() if k[-1] == "kernel" and v.ndim == 4}
    others = {k: v for k, v in flat.items() if is_weight(k) and k not in kernels}
    return kernels, others, {k: v for k, v in flat.items() if not is_weight(k)}


def _kernel_rows(kernels: dict, inputs: dict, deltas: dict) -> list[jax.Array]:
    """Each conv kernel's Jacobian rows float[rows, P_k]: its input patches contracted with its
    output cotangents delta float[rows, B, H', W', C_out]. A kernel whose operator did not run (a
    switch branch not taken, as the intermediate ``alive`` says where given; else one whose delta
    is all zero: masked out) is skipped at run time."""
    cols = []
    for path in sorted(kernels):
        (x_in,) = inputs[(*path[:-1], "conv_in")]
        delta = deltas[(*path[:-1], "out")]
        k = kernels[path].shape[0]
        stride = x_in.shape[1] // delta.shape[-3]

        def rows(x_in=x_in, delta=delta, k=k, stride=stride):
            patches = ops_lib.patches(x_in, k, stride, delta.shape[-3:-1])
            rows = jnp.einsum("bhwp,rbhwc->rpc", patches, delta, precision=ops_lib.PRECISION)
            return rows.reshape(delta.shape[0], -1)

        size = k * k * x_in.shape[-1] * delta.shape[-1]
        alive = inputs.get((*path[:-1], "alive"), (None,))[0]
        cols.append(jax.lax.cond(jnp.any(delta != 0) if alive is None else alive, rows,
                                 lambda delta=delta, size=size: jnp.zeros((delta.shape[0], size), delta.dtype)))
    return cols


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """Condition numbers of a stack of Gram matrices.

    Attributes:
      condition: float64[...]: lambda_max / lambda_min, ``inf`` where flagged.
      eig_min, eig_max: float64[...]: the extreme eigenvalues of G (float64).
      flag: str[...]: '' (fine), 'singular', 'zero' (G = 0: no weight reaches the logits) or
        'non_finite' (NaN or inf in J).
    """

    condition: np.ndarray
    eig_min: np.ndarray
    eig_max: np.ndarray
    flag: np.ndarray


def condition_numbers(jacobians: np.ndarray | jax.Array) -> Conditioning:
    """Condition numbers of G = J J^T for J float[..., B, P], computed in float64 on the host."""
    J = np.asarray(jacobians)
    finite = np.isfinite(J).all(axis=(-2, -1))
    J = J.astype(np.float64)
    if not finite.all():
        J[~finite] = 0.0
    gram = J @ np.swapaxes(J, -1, -2)
    eig = np.linalg.eigvalsh(gram)
    lo, hi = eig[..., 0], eig[..., -1]
    flag = np.full(lo.shape, "", dtype=object)
    flag[lo <= SINGULAR_RTOL * hi] = "singular"
    flag[hi <= 0] = "zero"
    flag[~finite] = "non_finite"
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(flag == "", hi / np.where(lo > 0, lo, 1.0), np.inf)
    lo = np.where(finite, lo, np.nan)
    hi = np.where(finite, hi, np.nan)
    return Conditioning(cond, lo, hi, flag.astype(str))
