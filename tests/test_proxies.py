"""The proxy engine: NTK kernels against float64 references, exact linear-region counts,
batched == one at a time, determinism, degenerate cells, compile-once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cells import network as nw
from cells import skeleton as sk
from cells import space
from micronas_jax.proxies import engine as engine_lib
from micronas_jax.proxies import linear_regions, naswot, ntk
from tests import numpy_reference

SMALL = sk.Skeleton(C=2, N=1, num_classes=4, resolution=8)
B = 6
CELLS = [6111, 0, 11472, 3000]


@pytest.fixture(scope="module")
def setup():
    model = nw.NB201Network(SMALL)
    x = jax.random.normal(jax.random.key(0), (B, 8, 8, 3))
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x, jnp.ones((6, 5)))
    return model, variables, x


def _apply(model, mask):
    return lambda v, x, train: model.apply(v, x, mask, train=train, mutable=["batch_stats", "intermediates"])


def _without_perturbations(variables):
    return {k: v for k, v in variables.items() if k != "perturbations"}


def _reference_jacobian_f64(model, variables, x, mask):
    """Independent reference: jax.jacrev of the batched forward, everything in float64."""
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), _without_perturbations(variables))
        weights, rest = ntk.split_weights(v64["params"])

        def summed(w):
            p = ntk._merge(w, rest)
            out, _ = model.apply({"params": p, "batch_stats": v64["batch_stats"]},
                                 jnp.asarray(x, jnp.float64), jnp.asarray(mask, jnp.float64),
                                 train=True, mutable=["batch_stats"])
            return out.sum(axis=1)

        jac = jax.jacrev(summed)(weights)
        return np.concatenate([np.asarray(jac[k]).reshape(B, -1) for k in sorted(jac)], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("structured", ["one_pass", "grouped", "unstructured"])
@pytest.mark.parametrize("index", CELLS[1:3])
def test_exact_gram_equals_float64_reference(setup, index, structured, monkeypatch):
    # one_pass: all rows in one vmapped backward pass through conv-output perturbations; grouped:
    # the same in passes of two rows (as large batches run); unstructured: one pass per row.
    model, variables, x = setup
    if structured == "grouped":
        monkeypatch.setattr(ntk, "ROWS_X_BATCH", 2 * B)
        assert ntk.rows_per_pass(B) == 2
    if structured == "unstructured":
        variables = _without_perturbations(variables)
    mask = jnp.asarray(space.from_index(index).matrix)
    J = np.asarray(jax.jit(lambda v, x: ntk.jacobian(_apply(model, mask), v, x))(variables, x), np.float64)
    J_ref = _reference_jacobian_f64(model, _without_perturbations(variables), x, mask)
    G, G_ref = J @ J.T, J_ref @ J_ref.T
    assert np.linalg.norm(G - G_ref) / np.linalg.norm(G_ref) <= 1e-5
    # Samples interact through BatchNorm: the exact kernel is not the per-sample one.
    J_ps = np.asarray(ntk.jacobian(_apply(model, mask), variables, x, ntk.NTKMode.PER_SAMPLE_BATCH_STATS))
    assert np.linalg.norm(J_ps @ J_ps.T - G_ref) / np.linalg.norm(G_ref) > 1e-3


@pytest.mark.parametrize("structured,mode", [
    (True, "exact"), (False, "per_sample_running_stats"),
    *(pytest.param(s, m, marks=pytest.mark.slow) for s, m in [
        (False, "exact"), (True, "per_sample_running_stats"), (True, "per_sample_batch_stats"),
        (False, "per_sample_batch_stats")])])
def test_a_block_of_rows_is_that_block_of_the_jacobian(setup, mode, structured, monkeypatch):
    # What worker threads compute when they split one network's rows; grouped passes too.
    model, variables, x = setup
    monkeypatch.setattr(ntk, "ROWS_X_BATCH", 2 * B)
    if not structured:
        variables = _without_perturbations(variables)
    apply = _apply(model, jnp.asarray(space.from_index(6111).matrix))
    J = np.asarray(ntk.jacobian(apply, variables, x, mode))
    block = jax.jit(lambda v, x, r: ntk.jacobian(apply, v, x, mode, first_row=r, num_rows=B // 2))
    # Compiled and op-by-op runs round differently; float32 sums err with their largest terms.
    atol = 2e-6 * np.abs(J).max()
    for first in (0, B // 2):
        np.testing.assert_allclose(block(variables, x, jnp.int32(first)), J[first:first + B // 2], rtol=1e-5, atol=atol)
    with pytest.raises(ValueError, match=f"num_rows must be in 1..{B} \\(the batch\\), got {B + 1}"):
        ntk.jacobian(apply, variables, x, mode, num_rows=B + 1)


def test_rows_per_pass_divides_the_batch_and_bounds_memory():
    for batch in (2, 6, 32, 64, 72, 100, 128, 4096):
        step = ntk.rows_per_pass(batch)
        assert batch % step == 0 and 1 <= step <= batch
        assert step * batch <= max(ntk.ROWS_X_BATCH, batch)
    assert ntk.rows_per_pass(32) == 32 and ntk.rows_per_pass(128) == 16


def _per_sample_reference(model, variables, x, mask, stats):
    """Rows from jax.grad one sample at a time, BatchNorm in eval mode with ``stats``."""
    weights, rest = ntk.split_weights(variables["params"])
    rows = []
    for i in range(B):
        def one(w, i=i):
            out = model.apply({"params": ntk._merge(w, rest), "batch_stats": stats}, x[i:i + 1], mask, train=False)
            return out.sum()
        g = jax.grad(one)(weights)
        rows.append(np.concatenate([np.asarray(g[k]).ravel() for k in sorted(g)]))
    return np.stack(rows)


@pytest.mark.parametrize("structured", [True, False])
def test_per_sample_running_stats_equals_per_sample_gradients(setup, structured):
    model, variables, x = setup
    if not structured:
        variables = _without_perturbations(variables)
    mask = jnp.asarray(space.from_index(6111).matrix)
    J = np.asarray(ntk.jacobian(_apply(model, mask), variables, x, ntk.NTKMode.PER_SAMPLE_RUNNING_STATS))
    ref = _per_sample_reference(model, variables, x, mask, variables["batch_stats"])
    if not structured:  # same column order: row for row
        np.testing.assert_allclose(J, ref, rtol=1e-5, atol=1e-6)
    G, G_ref = J.astype(np.float64) @ J.T, ref.astype(np.float64) @ ref.T
    assert np.linalg.norm(G - G_ref) / np.linalg.norm(G_ref) <= 1e-5


def test_batch_statistics_are_the_batch_mean_and_variance(setup):
    model, variables, x = setup
    mask = jnp.asarray(space.from_index(6111).matrix)
    stats = ntk.batch_statistics(_apply(model, mask), variables, x)
    # The stem's BN sees the stem conv's output: its batch mean and biased variance.
    kernel = variables["params"]["stem"]["conv"]["kernel"]
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")
    np.testing.assert_allclose(stats["stem"]["bn"]["mean"], y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["stem"]["bn"]["var"], y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    # Per-sample rows with those statistics frozen: one sample at a time in eval mode.
    ref = _per_sample_reference(model, variables, x, mask, stats).astype(np.float64)
    # Structured and row-by-row variables; statistics from a pass of their own, or computed inside
    # the per-sample pass (HeldBatchNorm's means over the vmapped samples), whole or in a block.
    for v in (variables, _without_perturbations(variables)):
        for in_pass in (False, True):
            J = np.asarray(ntk.jacobian(_apply(model, mask), v, x, ntk.NTKMode.PER_SAMPLE_BATCH_STATS,
                                        stats_in_pass=in_pass), np.float64)
            assert np.linalg.norm(J @ J.T - ref @ ref.T) / np.linalg.norm(ref @ ref.T) <= 1e-4
    J = np.asarray(ntk.jacobian(_apply(model, mask), _without_perturbations(variables), x,
                                ntk.NTKMode.PER_SAMPLE_BATCH_STATS, stats_in_pass=True, first_row=2, num_rows=3))
    np.testing.assert_allclose(J, ref[2:5], rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_condition_numbers_flags():
    rng = np.random.default_rng(0)
    J = rng.normal(size=(4, 5, 40))
    J[1] = 0.0  # no gradient at all
    J[2, 4] = J[2, 3]  # two identical rows: singular
    J[3, 0, 0] = np.nan
    c = ntk.condition_numbers(J)
    eig = np.linalg.eigvalsh(J[0] @ J[0].T)
    assert c.condition[0] == pytest.approx(eig[-1] / eig[0], rel=1e-12) and c.flag[0] == ""
    assert c.flag.tolist() == ["", "zero", "singular", "non_finite"]
    assert np.isinf(c.condition[1:]).all() and not np.isnan(c.condition).any()


def _small_engine(conditional_masks=None, workers=None, **kwargs):
    config = engine_lib.ProxyConfig(**{"C": 2, "N": 1, "batch_size": 8, "lr_batch": 64, "lr_batches": 2, **kwargs})
    return engine_lib.ProxyEngine(config, conditional_masks=conditional_masks, workers=workers)


@pytest.fixture(scope="module")
def engine():
    return _small_engine()


def test_switched_cells_equal_one_hot_masks_and_compile_once(engine):
    keys = engine_lib.seed_keys(0, 2)
    by_cell = engine.ntk_cells(CELLS, keys)
    by_mask = engine.ntk_masks(np.stack([space.from_index(i).matrix for i in CELLS]), keys)
    np.testing.assert_allclose(by_cell.condition, by_mask.condition, rtol=1e-4)
    assert by_cell.condition.shape == (len(CELLS), 2)
    engine.ntk_cells([1, 2, 3], keys)
    assert engine.traces["ntk_cell"] == 1 and engine.traces["ntk_mask"] == 1 and engine.traces["draw"] == 1


def test_batched_regions_equal_one_at_a_time(engine):
    keys = engine_lib.seed_keys(1, 1)
    masks = np.stack([space.from_index(i).matrix for i in CELLS])
    partial = np.ones((6, 5), np.float32)
    partial[:, 0] = 0
    masks = np.concatenate([masks, partial[None]])
    batched = engine.regions_masks(masks, keys)
    single = np.concatenate([engine.regions_masks(m[None], keys) for m in masks])
    np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("unroll_cells", [False, True])  # True: as the engine runs it on CPU
def test_region_count_equals_bruteforce_numpy(unroll_cells):
    thin = linear_regions.thin_skeleton(C=1, input_size=3)
    model = nw.NB201Network(thin, unroll_cells=unroll_cells)
    x = jax.random.normal(jax.random.key(3), (200, 3, 3, 1))
    for index in CELLS:
        cell = space.from_index(index)
        mask = jnp.asarray(cell.matrix)
        v = model.init(jax.random.key(index), x, jnp.ones((6, 5)), train=False)
        apply = lambda v, x, m: model.apply(v, x, m, train=True, mutable=["batch_stats", "intermediates"])  # noqa: E731
        got = int(linear_regions.count_regions(apply, v, x[None], mask))
        patterns = numpy_reference.thin_patterns(v, np.asarray(x), cell.ops)
        assert got == len(np.unique(patterns, axis=0)), str(cell)
        # Bit for bit (the standalone network sows only its own ReLUs; the masked supernet's
        # masked-out ones are constant zero columns, which leave the count unchanged).
        standalone = nw.NB201Network(thin, cell=cell)
        _, state = standalone.apply(nw.select_params(v, cell), x, train=True,
                                    mutable=["batch_stats", "intermediates"])
        np.testing.assert_array_equal(linear_regions.activation_patterns(state["intermediates"], mask), patterns)


def test_naswot_kernel_equals_float64_numpy_reference():
    """NASWOT's K through the masked supernet (masked-out ReLUs left out of the code and of N_A)
    against K = N_A - Hamming built in NumPy from the float64 reference network's codes."""
    thin = linear_regions.thin_skeleton(C=1, input_size=3)
    model = nw.NB201Network(thin, unroll_cells=True)
    x = jax.random.normal(jax.random.key(5), (40, 3, 3, 1))
    apply = lambda v, x, m: model.apply(v, x, m, train=True, mutable=["batch_stats", "intermediates"])  # noqa: E731
    for index in CELLS:
        cell = space.from_index(index)
        v = model.init(jax.random.key(index), x, jnp.ones((6, 5)), train=False)
        codes = numpy_reference.thin_patterns(v, np.asarray(x), cell.ops).astype(np.float64)
        want = codes.shape[1] - (codes @ (1 - codes).T + (1 - codes) @ codes.T)
        got = np.asarray(naswot.kernel(apply, v, x, jnp.asarray(cell.matrix)))
        np.testing.assert_array_equal(got, want, err_msg=str(cell))
        sign, logdet = np.linalg.slogdet(want)
        assert naswot.log_det(got) == (logdet if sign > 0 else -np.inf)


def test_naswot_hamming_kernel_and_singular_kernels():
    rng = np.random.default_rng(0)
    codes = rng.random((12, 50)) < 0.5
    codes[:, 45:] = False  # masked-out units: no part of d_H, and not counted in N_A
    k = np.asarray(naswot.hamming_kernel(jnp.asarray(codes), 45))
    brute = np.array([[45 - np.sum(a != b) for b in codes] for a in codes])
    np.testing.assert_array_equal(k, brute)
    assert np.isfinite(naswot.log_det(k))
    codes[1] = codes[0]  # two inputs with one code: K singular
    assert naswot.log_det(np.asarray(naswot.hamming_kernel(jnp.asarray(codes), 45))) == -np.inf
    swapped = k[[1, 0, *range(2, 12)]]  # |K| with its sign flipped: not a kernel's
    np.testing.assert_array_equal(naswot.log_det(np.stack([k, swapped])), [naswot.log_det(k), -np.inf])


def test_naswot_cells_batched_deterministic_and_compiled_once():
    eng = _small_engine()
    key = jax.random.key(3)
    cells = [*CELLS, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    a = eng.naswot_cells(cells, key, batch_size=8)
    assert a.shape == (len(cells),) and a.dtype == np.float64 and not np.isnan(a).any()
    np.testing.assert_array_equal(eng.naswot_cells(cells, key, batch_size=8), a)
    np.testing.assert_allclose(eng.naswot_cells(cells, key, batch_size=8, chunk=2), a, rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([eng.naswot_cells([c], key, batch_size=8) for c in cells]), a,
                               rtol=1e-6)
    assert eng.traces["naswot"] == 2  # chunk 32 and chunk 2
    assert not np.array_equal(eng.naswot_cells(cells, jax.random.key(4), batch_size=8), a)
    assert eng.naswot_cells([], key).shape == (0,)


def test_unique_row_counting():
    rng = np.random.default_rng(0)
    bits = rng.random((500, 70)) < 0.5
    bits[250:] = bits[:250]  # every row twice
    words = linear_regions.pack_bits(jnp.asarray(bits))
    assert words.shape == (500, 3) and words.dtype == jnp.uint32
    assert int(linear_regions.count_unique_rows(words)) == len(np.unique(bits, axis=0))


def test_same_seed_same_score_other_seed_other_score(engine):
    a = engine.score_cells([6111, 0], engine_lib.seed_keys(7, 1))
    b = engine.score_cells([6111, 0], engine_lib.seed_keys(7, 1))
    c = engine.score_cells([6111, 0], engine_lib.seed_keys(8, 1))
    np.testing.assert_array_equal(a["ntk"], b["ntk"])
    np.testing.assert_array_equal(a["regions"], b["regions"])
    assert not np.array_equal(a["ntk"], c["ntk"])


def test_degenerate_cells_are_flagged_not_nan(engine):
    no_path = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"  # node 2 gets nothing
    empty = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    scores = engine.score_cells([no_path, empty], engine_lib.seed_keys(0, 2))
    assert (scores["ntk_flag"] == "zero").all() and np.isinf(scores["ntk"]).all()
    assert not np.isnan(scores["ntk"]).any()
    assert (scores["regions"] >= 1).all()


def test_score_round_shares_the_base(engine):
    base = np.ones((6, 5), np.float32)
    base[:, 0] = 0
    candidates = []
    for e, o in [(0, 1), (2, 3), (5, 4)]:
        c = base.copy()
        c[e, o] = 0
        candidates.append(c)
    keys = engine_lib.seed_keys(0, 2)
    r = engine.score_round(base, np.stack(candidates), keys)
    assert r["ntk"].shape == (4, 2) and r["regions"].shape == (4, 2)
    alone = engine.ntk_masks(np.stack([base, *candidates]), keys)
    np.testing.assert_allclose(r["ntk"], alone.condition, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["per_sample_running_stats", "per_sample_batch_stats"])
def test_per_sample_modes_cells_equal_masks_and_differ_from_exact(mode, engine):
    other = _small_engine(ntk_mode=mode)
    keys, cells = engine_lib.seed_keys(0, 1), [6111, 11472, 1498]
    by_cell = other.ntk_cells(cells, keys)
    by_mask = other.ntk_masks(np.stack([space.from_index(i).matrix for i in cells]), keys)
    np.testing.assert_allclose(by_cell.condition, by_mask.condition, rtol=1e-4)
    assert np.isfinite(by_cell.condition).all() and (by_cell.flag == "").all()
    exact = engine.ntk_cells(cells, keys).condition
    assert (np.abs(by_cell.condition / exact - 1) > 1e-2).all()


@pytest.mark.parametrize("mode", ["exact", *(pytest.param(m, marks=pytest.mark.slow)
                                              for m in ("per_sample_running_stats", "per_sample_batch_stats"))])
def test_conditional_masks_equal_the_masked_supernet(mode):
    # The CPU path for partly pruned supernets (operators in conditionals, small convolutions
    # unrolled) against the masked supernet's weighted sum, which other backends run.
    # C = 3: the first stage's 3x3 convolutions unroll.
    cond, product = (_small_engine(flag, ntk_mode=mode, C=3) for flag in (True, False))
    rng = np.random.default_rng(3)
    masks = (rng.random((4, 6, 5)) < 0.6).astype(np.float32)
    masks[0, :, 1:] = 1.0  # a first pruning round's base
    d = cond.draw(engine_lib.seed_keys(2, 1)[0])
    J_c, J_p = cond.ntk_jacobians_masks(masks, d), product.ntk_jacobians_masks(masks, d)
    G_c, G_p = (np.einsum("kbp,kcp->kbc", J.astype(np.float64), J) for J in (J_c, J_p))
    for g_c, g_p in zip(G_c, G_p, strict=True):
        assert np.linalg.norm(g_c - g_p) <= 1e-5 * np.linalg.norm(g_p)
    assert cond.conditional_masks and not product.conditional_masks


def test_worker_threads_return_the_same_jacobians_in_order():
    # Candidates computed on 2 threads at once come back in order and bit-identical; a lone
    # network has its rows split between the threads (a compiled variant of its own).
    one, two = (_small_engine(workers=w) for w in (1, 2))
    rng = np.random.default_rng(5)
    masks = (rng.random((5, 6, 5)) < 0.6).astype(np.float32)
    d = one.draw(engine_lib.seed_keys(4, 1)[0])
    np.testing.assert_array_equal(one.ntk_jacobians_masks(masks, d), two.ntk_jacobians_masks(masks, d))
    for i in CELLS[:2]:
        alone, split = one.ntk_jacobians_cells([i], d), two.ntk_jacobians_cells([i], d)
        assert split.shape == alone.shape == (1, 8, alone.shape[-1])
        np.testing.assert_allclose(split, alone, rtol=1e-5, atol=1e-6)
    assert one.traces["ntk_cell"] == two.traces["ntk_cell"] == two.traces["ntk_mask"] == 1
    assert ("jac_cell", 4) in two._compiled and ("jac_cell", 8) in one._compiled  # 4 rows a call: split
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        _small_engine(workers=0)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        engine_lib.ProxyConfig(init="xavier")
    with pytest.raises(ValueError, match="'exactish' is not a valid NTKMode"):
        engine_lib.ProxyConfig(ntk_mode="exactish")
    with pytest.raises(ValueError, match=r"masks must have shape \(K, 6, 5\)"):
        engine_lib._check_masks(np.ones((6, 5)))
