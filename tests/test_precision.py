"""Every matrix product and convolution on the proxies' path asks for full float32 precision.

On GPUs JAX's default rounds their operands to TF32 (10-bit mantissa). One product left at the
default (the natural inputs' channel mix) moved an H100's NTK condition numbers by 0.9 % (median
over a search's 729 cells, up to 34 %) against the CPU's, and changed the cells it picked. The
jaxprs are traced, not run, so the GPU's code path is checked on any machine.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from cells import network as nw
from cells import skeleton as sk
from cells import space
from micronas_jax import inputs
from micronas_jax.proxies import ntk

PRODUCTS = ("dot_general", "conv_general_dilated")


def _sub_jaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _products(jaxpr):
    """(primitive, precision) of every product in ``jaxpr`` and the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in PRODUCTS:
            yield eqn.primitive.name, eqn.params["precision"]
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                yield from _products(sub)


def _low_precision(fn, *args) -> list:
    found = list(_products(jax.make_jaxpr(fn)(*args).jaxpr))
    assert found, "no product traced: the check would pass vacuously"
    highest = jax.lax.Precision.HIGHEST
    return [(name, p) for name, p in found
            if p is None or not all(q == highest for q in (p if isinstance(p, tuple) else (p,)))]


def test_natural_inputs_mix_channels_at_full_precision():
    assert _low_precision(lambda k: inputs.natural_noise(k, (2, 8, 8, 3)), jax.random.key(0)) == []


@pytest.fixture(scope="module")
def network():
    skeleton = sk.Skeleton(C=2, N=1, num_classes=4, resolution=8)
    model = nw.NB201Network(skeleton)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x, jnp.ones((6, 5)))
    cell = space.from_index(11472)

    def supernet(v, x, train):  # a pruning round's networks, off CPU
        return model.apply(v, x, jnp.asarray(cell.matrix), train=train, mutable=["batch_stats", "intermediates"])

    def switched(v, x, train):  # single cells (the endgame's)
        return nw.switched_apply(skeleton, v, x, jnp.asarray(cell.op_indices), train=train)

    return {"supernet": supernet, "switched": switched}, variables, x


@pytest.mark.parametrize("backend", ["cpu", "gpu"])  # the convolutions take another path off CPU
@pytest.mark.parametrize("net", ["supernet", "switched"])
@pytest.mark.parametrize("mode,structured", [("exact", True), ("exact", False), ("per_sample_batch_stats", False)])
def test_ntk_jacobian_runs_at_full_precision(network, backend, net, mode, structured, monkeypatch):
    applies, variables, x = network
    apply = applies[net]
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    if not structured:
        variables = {k: v for k, v in variables.items() if k != "perturbations"}
    assert _low_precision(lambda v, x: ntk.jacobian(apply, v, x, mode), variables, x) == []
