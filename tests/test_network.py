"""Flax cells and networks: NB201 semantics, supernet == standalone, parameter layout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cells import network as nw
from cells import ops as ops_lib
from cells import skeleton as sk
from cells import space
from tests import numpy_reference

SMALL = sk.Skeleton(C=3, N=1, num_classes=5, resolution=8)
BATCH = 4


def _perturb(variables, key):
    """Random values everywhere (BN scales and shifts too), so no parameter is trivial."""
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(key, len(leaves))
    leaves = [v + 0.3 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys, strict=True)]
    out = jax.tree_util.tree_unflatten(treedef, leaves)
    out["batch_stats"] = jax.tree_util.tree_map(lambda a: jnp.abs(a) + 0.5, out["batch_stats"])
    return out


@pytest.fixture(scope="module")
def supernet():
    model = nw.NB201Network(SMALL)
    x = jax.random.normal(jax.random.key(0), (BATCH, 8, 8, 3))
    init = jax.jit(functools.partial(model.init, train=False, mutable=["params", "batch_stats"]))
    variables = _perturb(init(jax.random.key(1), x, jnp.ones((6, 5))), jax.random.key(2))

    @functools.partial(jax.jit, static_argnames="train")
    def apply(variables, x, mask, train):
        return model.apply(variables, x, mask, train=train, mutable=["batch_stats"])[0]

    return model, variables, x, apply


def _random_cells(n, seed):
    rng = np.random.default_rng(seed)
    picks = [space.from_index(int(i)) for i in rng.choice(space.NUM_CELLS, n, replace=False)]
    return [*picks, space.Cell(("none",) * 6), space.Cell(("skip_connect",) * 6)]


@pytest.mark.parametrize("train", [True, False])
def test_supernet_under_one_hot_mask_equals_standalone(supernet, train):
    _, variables, x, apply = supernet
    for cell in _random_cells(6, seed=int(train)):
        standalone = nw.NB201Network(SMALL, cell=cell)
        want, _ = standalone.apply(nw.select_params(variables, cell), x, train=train,
                                   mutable=["batch_stats"])
        got = apply(variables, x, jnp.asarray(cell.matrix), train)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(cell))


def test_standalone_parameters_are_the_supernets_subset(supernet):
    _, variables, x, _ = supernet
    for cell in _random_cells(3, seed=5):
        own = jax.eval_shape(
            functools.partial(nw.NB201Network(SMALL, cell=cell).init, train=False,
                              mutable=["params", "batch_stats"]),
            jax.random.key(0), x)
        selected = nw.select_params(variables, cell)
        assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(selected)
        assert jax.tree_util.tree_map(jnp.shape, own) == jax.tree_util.tree_map(jnp.shape, selected)


def test_parameter_layout_equals_the_skeleton_layers(supernet):
    _, variables, _, _ = supernet
    for cell in _random_cells(4, seed=7):
        counts = nw.count_variables(nw.select_params(variables, cell)["params"])
        expected = {layer.path: layer.num_params for layer in SMALL.layers(cell) if layer.num_params}
        assert counts == expected


@pytest.mark.parametrize("dataset", ["cifar10", "ImageNet16-120"])
def test_full_size_parameter_count_equals_nb201(table, dataset):
    skeleton = sk.Skeleton.for_dataset(dataset)
    x = jax.ShapeDtypeStruct((1, skeleton.resolution, skeleton.resolution, 3), jnp.float32)
    for index in (0, 6111, 11472):
        cell = space.from_index(index)
        shapes = jax.eval_shape(
            functools.partial(nw.NB201Network(skeleton, cell=cell).init, train=False),
            jax.random.key(0), x)
        total = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes["params"]))
        assert total / 1e6 == pytest.approx(table.params_M[dataset][index], abs=1e-9)


@pytest.mark.parametrize("train", [True, False])
def test_standalone_equals_float64_numpy_reference(supernet, train):
    _, variables, x, _ = supernet
    for cell in _random_cells(3, seed=11 + int(train)):
        v = nw.select_params(variables, cell)
        got, _ = nw.NB201Network(SMALL, cell=cell).apply(v, x, train=train, mutable=["batch_stats"])
        want = numpy_reference.forward(v, np.asarray(x), cell.ops, SMALL.C, SMALL.N, train)
        scale = max(np.abs(want).max(), 1e-6)
        assert np.abs(np.asarray(got, np.float64) - want).max() / scale < 1e-5, str(cell)


def test_vmap_over_masks_equals_loop_and_compiles_once(supernet):
    model, variables, x, _ = supernet
    traces = []

    @jax.jit
    def logits(mask):
        traces.append(1)
        return model.apply(variables, x, mask, train=True, mutable=["batch_stats"])[0]

    cells = _random_cells(4, seed=3)
    masks = jnp.stack([jnp.asarray(c.matrix) for c in cells])
    loop = [logits(m) for m in masks]
    assert len(traces) == 1  # the mask is traced: one compile serves every cell
    batched = jax.vmap(logits)(masks)
    np.testing.assert_allclose(batched, jnp.stack(loop), rtol=1e-5, atol=1e-5)
    # A partly pruned supernet (several ops per edge) is just another mask.
    partial_mask = jnp.ones((6, 5)).at[:, 0].set(0.0)
    assert jnp.all(jnp.isfinite(logits(partial_mask)))
    assert len(traces) == 1  # vmap batches the cached trace; a new mask value never retraces


def test_input_validation(supernet):
    model, variables, x, _ = supernet
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, 8, 8, 3\)"):
        model.apply(variables, x[:, :4], jnp.ones((6, 5)), train=False)
    with pytest.raises(ValueError, match=r"needs a mask of shape \(6, 5\), got None"):
        model.apply(variables, x, train=False)
    with pytest.raises(ValueError, match=r"got \(5, 5\)"):
        model.apply(variables, x, jnp.ones((5, 5)), train=False)
    cell = space.from_index(0)
    with pytest.raises(ValueError, match="takes no mask"):
        nw.NB201Network(SMALL, cell=cell).apply(
            nw.select_params(variables, cell), x, jnp.ones((6, 5)), train=False)


def test_held_batch_norm_computes_the_training_mode_forward_pass_per_sample(supernet):
    # Vmapped one sample at a time, HeldBatchNorm takes its statistics over the vmapped axis:
    # the same logits as the batched training-mode pass, for the supernet and switched_apply.
    model, variables, x, apply = supernet
    mask = jnp.asarray(space.from_index(6111).matrix)
    want = apply(variables, x, mask, True)

    def one(xi):
        return model.apply(variables, xi[None], mask, train=ops_lib.HELD_BATCH_STATS, mutable=["batch_stats"])[0][0]

    held = jax.jit(jax.vmap(one, axis_name=ops_lib.SAMPLE_AXIS))(x)
    np.testing.assert_allclose(held, want, rtol=1e-5, atol=1e-5)
    idx = jnp.asarray(space.from_index(6111).op_indices)
    mode = ops_lib.HELD_BATCH_STATS
    switched = jax.vmap(lambda xi: nw.switched_apply(SMALL, variables, xi[None], idx, train=mode)[0][0],
                        axis_name=ops_lib.SAMPLE_AXIS)(x)
    np.testing.assert_allclose(switched, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="train must be a bool or 'held_batch_stats', got 'eval'"):
        model.apply(variables, x, mask, train="eval")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"C": 0}, "Skeleton.C must be a positive integer"),
        ({"resolution": 30}, "divisible by 4"),
        ({"stem": False}, "in_channels=3 must equal C=16"),
        ({"N": 2.5}, "Skeleton.N"),
    ],
)
def test_skeleton_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sk.Skeleton(**kwargs)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        sk.Skeleton.for_dataset("mnist")


def test_stemless_thin_network_runs():
    thin = sk.Skeleton(C=1, N=1, num_classes=1, resolution=4, in_channels=1, stem=False)
    assert thin.units[0].kind == "cell"
    x = jnp.ones((2, 4, 4, 1))
    model = nw.NB201Network(thin)
    variables = model.init(jax.random.key(0), x, jnp.ones((6, 5)), train=True)
    assert "stem" not in variables["params"]
    out, _ = model.apply(variables, x, jnp.ones((6, 5)), train=True, mutable=["batch_stats"])
    assert out.shape == (2, 1)


def _supernet_statistics(supernet, x, mask, train):
    """The masked supernet's updated running statistics; those of operators the mask leaves out
    (which it runs, at weight 0) as they were: switched_apply does not run them."""
    model, variables, _, _ = supernet
    _, state = model.apply(variables, x, jnp.asarray(mask), train=train, mutable=["batch_stats"])
    new = traverse_util.flatten_dict(state["batch_stats"])
    old = traverse_util.flatten_dict(variables["batch_stats"])
    for path in new:
        edge = next((p for p in path if p.startswith("edge_")), None)
        if edge is not None:
            _, src, dst, op = edge.split("_", 3)
            if mask[space.EDGES.index((int(src), int(dst))), space.OPS.index(op)] == 0:
                new[path] = old[path]
    return new


def _assert_same_statistics(got, want_flat):
    got = traverse_util.flatten_dict(got)
    assert sorted(got) == sorted(want_flat)
    for path, value in want_flat.items():  # float32 sums err with their largest terms
        atol = 1e-6 + 1e-5 * float(np.abs(value).max())
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=atol, err_msg=str(path))


@pytest.mark.parametrize("train", [True, False])
def test_switched_apply_equals_the_masked_supernet(supernet, train):
    _, variables, x, apply = supernet
    run = jax.jit(lambda v, x, idx: nw.switched_apply(SMALL, v, x, idx, train=train))
    for cell in _random_cells(5, seed=21):
        got, state = run(variables, x, jnp.asarray(cell.op_indices))
        want = apply(variables, x, jnp.asarray(cell.matrix), train)
        _assert_close_at_scale(got, want, err_msg=str(cell))
        _assert_same_statistics(state["batch_stats"], _supernet_statistics(supernet, x, cell.matrix, train))
        inter = state["intermediates"]
        # Every convolution's input is exposed, under the supernet's module paths.
        assert inter["stem"]["conv"]["conv_in"][0].shape == x.shape
        assert "conv_in" in inter["cells_0"]["edge_0_1_nor_conv_3x3"]["conv"]


def _assert_close_at_scale(got, want, **kw):
    """float32 logits summed in another order: an element's rounding error follows the size of the
    terms summed (the largest logits, thousands with running statistics), not the element's own."""
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), **kw)


def _partial_masks(n, seed):
    """Partly pruned supernets: each edge keeps a random subset of operators, with random weights
    (the engine normalises them; switched_apply must take them as given)."""
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, 6, 5)) < 0.6) * rng.uniform(0.2, 1.5, (n, 6, 5))
    masks[0] = 1.0  # the full supernet, 'none' included
    masks[1, :, 2:4] = 0.0  # no convolution alive anywhere
    return masks.astype(np.float32)


@pytest.mark.parametrize("train", [True, False])
def test_switched_apply_with_a_mask_equals_the_masked_supernet(supernet, train):
    _, variables, x, apply = supernet
    run = jax.jit(lambda v, x, m: nw.switched_apply(SMALL, v, x, train=train, mask=m))
    for mask in _partial_masks(6, seed=5):
        got, state = run(variables, x, jnp.asarray(mask))
        _assert_close_at_scale(got, apply(variables, x, jnp.asarray(mask), train))
        _assert_same_statistics(state["batch_stats"], _supernet_statistics(supernet, x, mask, train))
        alive = state["intermediates"]["cells_2"]["edge_1_3_nor_conv_3x3"]["conv"]["alive"][0]
        assert bool(alive) == bool(mask[space.EDGES.index((1, 3)), space.OPS.index("nor_conv_3x3")])
    with pytest.raises(ValueError, match="exactly one of op_indices and mask"):
        nw.switched_apply(SMALL, variables, x, jnp.zeros(6, jnp.int32), train=train, mask=jnp.ones((6, 5)))


def _assert_gradients_match_xla_in_float64(conv, x, w, g, stride):
    """``conv``'s input, kernel and per-sample kernel gradients against XLA's own convolution,
    differentiated by JAX in float64."""
    def xla(x, w):
        return ops_lib._lax_conv(x, w, stride)

    with jax.enable_x64(True):
        x64, w64, g64 = (jnp.asarray(a, jnp.float64) for a in (x, w, g))
        ref_dx, ref_dw = jax.vjp(xla, x64, w64)[1](g64)
        ref_per_sample = jax.vmap(jax.grad(lambda w, xi, gi: (xla(xi[None], w) * gi).sum()),
                                  (None, 0, 0))(w64, x64, g64)
    dx, dw = jax.vjp(conv, x, w)[1](g)
    per_sample = jax.vmap(jax.grad(lambda w, xi, gi: (conv(xi[None], w) * gi).sum()), (None, 0, 0))(w, x, g)
    for got, ref in ((dx, ref_dx), (dw, ref_dw), (per_sample, ref_per_sample)):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(ref), rtol=1e-5, atol=1e-5)


def _conv_case(c_in, c_out, k, stride, hw=(6, 5)):
    kx, kw, kg = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (BATCH, *hw, c_in))
    w = jax.random.normal(kw, (k, k, c_in, c_out))
    out_hw = tuple((n - 1) // stride + 1 for n in hw)  # padding (k - 1) / 2
    return x, w, jax.random.normal(kg, (BATCH, *out_hw, c_out))


@pytest.mark.parametrize("shape", [(3, 3, 3), (1, 1, 3), (3, 3, 1), (2, 4, 1), (1, 2, 3)])  # C_in, C_out, k
def test_unrolled_small_conv_equals_xla_convolution_and_its_gradients(shape):
    # The CPU path for small kernels (ops.small_conv, a custom VJP) against float64 NumPy for the
    # forward pass and XLA's own convolution, differentiated by JAX in float64, for the backward.
    c_in, c_out, k = shape
    x, w, g = _conv_case(c_in, c_out, k, 1)
    assert w.size <= ops_lib.UNROLL_MAX_TERMS
    want = numpy_reference.conv(np.asarray(x, np.float64), np.asarray(w, np.float64), pad=(k - 1) // 2)
    np.testing.assert_allclose(ops_lib.small_conv(x, w), want, rtol=1e-5, atol=1e-5)
    _assert_gradients_match_xla_in_float64(ops_lib.small_conv, x, w, g, 1)


@pytest.mark.parametrize("shape", [(6, 6, 3, 1), (3, 6, 3, 2), (6, 12, 1, 1), (3, 6, 1, 2), (4, 3, 3, 2)])
def test_cpu_convolution_backward_pass_equals_xla_gradients(shape):
    # ops._cpu_conv's own backward pass (a forward convolution for the input's gradient at stride
    # 1, one contraction per tap for the kernel's), odd sizes at stride 2 included.
    c_in, c_out, k, stride = shape
    x, w, g = _conv_case(c_in, c_out, k, stride, hw=(7, 6))
    want = numpy_reference.conv(np.asarray(x, np.float64), np.asarray(w, np.float64), stride, (k - 1) // 2)
    np.testing.assert_allclose(ops_lib._cpu_conv(x, w, stride), want, rtol=1e-5, atol=1e-5)
    _assert_gradients_match_xla_in_float64(lambda x, w: ops_lib._cpu_conv(x, w, stride), x, w, g, stride)
    # patches, in a HWIO kernel's order, times the flattened kernel is the convolution
    p = ops_lib.patches(x, k, stride, g.shape[1:3])
    np.testing.assert_allclose(p @ w.reshape(-1, c_out), want, rtol=1e-5, atol=1e-5)


def test_conv2d_unrolls_only_small_stride_one_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(ops_lib, "small_conv", lambda x, w: calls.append(w.shape) or ops_lib._unrolled(x, w))
    x = jnp.ones((1, 4, 4, 3))
    ops_lib.conv2d(x, jnp.ones((3, 3, 3, 3)), 1, unroll=True)  # 81 entries: unrolled on CPU
    ops_lib.conv2d(x, jnp.ones((3, 3, 3, 3)), 1)  # not asked for
    ops_lib.conv2d(x, jnp.ones((3, 3, 3, 6)), 1, unroll=True)  # 162: XLA
    ops_lib.conv2d(x, jnp.ones((3, 3, 3, 3)), 2, unroll=True)  # stride 2: XLA
    assert calls == ([(3, 3, 3, 3)] if jax.default_backend() == "cpu" else [])
