"""Expressivity: the number of linear regions, counted exactly.

Following TE-NAS: a thin network (C = 1, N = 1, no stem, only the first cell, then the head) is
fed ``batches`` x ``batch`` inputs (default 3 x 1,000 single-channel 3 x 3 patches), BatchNorm in
training mode per batch; each input's activation pattern is the sign of every ReLU output in the
network (the ReLU of every live convolution's input, and the head's); the count is the number
of distinct patterns. Counted exactly: patterns are packed into uint32 words and the rows sorted
lexicographically under ``jit``; TE-NAS's fp16 Hamming-distance product is not used.

ReLUs of operators whose mask weight is 0 are left out, as TE-NAS never runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from cells import skeleton as sk
from cells import space

# (variables, x, mask) -> (logits, {'intermediates': ..., 'batch_stats': ...})
PatternApplyFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


def thin_skeleton(C: int = 1, input_size: int = 3, num_classes: int = 10) -> sk.Skeleton:
    """TE-NAS's thin network: no stem, the first cell only, then the head."""
    return sk.Skeleton(C=C, N=1, num_classes=num_classes, resolution=input_size, in_channels=C,
                       stem=False, depth=1)


def _edge_of(path: tuple[str, ...]) -> tuple[int, int] | None:
    """(edge, op) of an edge module path component, e.g. 'edge_0_2_nor_conv_3x3' -> (1, 3)."""
    for part in path:
        if part.startswith("edge_"):
            _, src, dst, op = part.split("_", 3)
            return space.EDGES.index((int(src), int(dst))), space.OPS.index(op)
    return None


def activation_patterns(intermediates: Any, mask: jax.Array) -> jax.Array:
    """bool[n, bits]: the sign of every sown ReLU output, ReLUs of masked-out ops zeroed."""
    flat = traverse_util.flatten_dict(intermediates)
    columns = []
    for path in sorted(p for p in flat if p[-1] == "relu"):  # not the convolutions' inputs
        (value,) = flat[path]
        bits = value.reshape(value.shape[0], -1) > 0
        edge_op = _edge_of(path)
        if edge_op is not None:
            bits = bits & (mask[edge_op] > 0)
        columns.append(bits)
    return jnp.concatenate(columns, axis=1)


def pack_bits(bits: jax.Array) -> jax.Array:
    """bool[n, m] -> uint32[n, ceil(m / 32)]."""
    n, m = bits.shape
    words = -(-m // 32)
    padded = jnp.zeros((n, words * 32), jnp.uint32).at[:, :m].set(bits.astype(jnp.uint32))
    shifts = jnp.arange(32, dtype=jnp.uint32)
    return (padded.reshape(n, words, 32) << shifts).sum(axis=-1, dtype=jnp.uint32)


def count_unique_rows(words: jax.Array) -> jax.Array:
    """int32: number of distinct rows of uint32[n, w] (lexicographic sort, then adjacent compare)."""
    order = jnp.lexsort(tuple(words[:, k] for k in range(words.shape[1] - 1, -1, -1)))
    rows = words[order]
    new = jnp.any(rows[1:] != rows[:-1], axis=1)
    return 1 + new.sum(dtype=jnp.int32)


def count_regions(apply_fn: PatternApplyFn, variables: Any, inputs: jax.Array, mask: jax.Array) -> jax.Array:
    """int32: distinct activation patterns over ``inputs`` float[batches, batch, H, W, C].

    Each of the ``batches`` is one forward pass (BatchNorm statistics per batch, as TE-NAS's
    separate forward passes).
    """
    def patterns(x):
        _, state = apply_fn(variables, x, mask)
        return activation_patterns(state["intermediates"], mask)

    bits = jax.vmap(patterns)(inputs)
    bits = bits.reshape(-1, bits.shape[-1])
    return count_unique_rows(pack_bits(bits))
