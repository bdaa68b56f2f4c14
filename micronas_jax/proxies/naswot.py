"""NASWOT: how differently a network's ReLUs split a batch of inputs, at initialisation.

Mellor et al. 2021 ("Neural architecture search without training"): each input's code is the
sign of every ReLU in the network; ``K[i, j] = N_A - d_H(c_i, c_j)``, N_A the number of ReLU
units and d_H the Hamming distance, counts the units on which two inputs agree; the score is
``log |K|``, larger for a network whose codes tell the inputs apart. Not part of MicroNAS's
objective: it is measured beside it (see ``reproduction/LATENCY_TRADEOFF.md``).

The codes are the ReLUs the networks sow for linear-region counting
(``linear_regions.activation_patterns``); those of operators whose mask weight is 0 are left out
of the code and of N_A. K's entries are integers (exact in float32 up to 2**24 units); its
log-determinant is taken on the host in float64.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from micronas_jax.proxies import linear_regions


def hamming_kernel(codes: jax.Array, live: jax.Array | int) -> jax.Array:
    """float32[n, n]: ``live - d_H(c_i, c_j)`` of bool[n, m] codes, ``live`` the units that count
    (columns of masked-out units are all False, so they add nothing to d_H)."""
    c = codes.astype(jnp.float32)
    hamming = c @ (1.0 - c).T + (1.0 - c) @ c.T
    return jnp.asarray(live, jnp.float32) - hamming


def live_units(intermediates: Any, mask: jax.Array) -> jax.Array:
    """int32: the ReLU units of the sown intermediates that count under ``mask`` (N_A)."""
    ones = jax.tree_util.tree_map(jnp.ones_like, intermediates)  # every unit 'on' ...
    return linear_regions.activation_patterns(ones, mask)[0].sum(dtype=jnp.int32)  # ... but masked-out ones


def kernel(apply_fn: linear_regions.PatternApplyFn, variables: Any, inputs: jax.Array,
           mask: jax.Array) -> jax.Array:
    """float32[n, n]: NASWOT's K for float[n, H, W, C] ``inputs`` through one masked network
    (``apply_fn`` as for ``linear_regions.count_regions``: BatchNorm on the batch's statistics)."""
    _, state = apply_fn(variables, inputs, mask)
    codes = linear_regions.activation_patterns(state["intermediates"], mask)
    return hamming_kernel(codes, live_units(state["intermediates"], mask))


def log_det(k: np.ndarray) -> np.ndarray:
    """float64[...]: ``log |K|`` of float[..., n, n] kernels, in float64; -inf where K is singular
    or not positive definite in sign (two inputs with the same code make K singular)."""
    sign, value = np.linalg.slogdet(np.asarray(k, np.float64))
    return np.where(sign > 0, value, -np.inf)
