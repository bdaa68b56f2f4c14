"""The batched proxy engine: NTK condition numbers and linear regions of K candidates x S seeds.

Functions are compiled once per configuration (shapes, mode, init), never per cell: a cell or a
mask is a traced argument.

* ``ntk_cells``: single cells through ``cells.network.switched_apply``: one compiled function,
  and each call runs only the cell's own operators. Candidates run in a Python loop (on CPU,
  ``vmap`` over cells would compute every operator of every edge).
* ``ntk_masks``: partly pruned supernets (several operators per edge), on CPU through
  ``switched_apply`` with the mask (pruned operators skipped), elsewhere through the masked
  supernet; in a pruning round the base supernet is scored once per seed and shared by every
  candidate (``score_round``).
* ``regions``: linear regions of the thin network, ``vmap``ped over masks (cheap and faster so).

Per seed, one PRNG key gives the NTK network's initialisation and input batch and the thin
network's initialisation and inputs; every candidate of that seed shares them, as TE-NAS copies
one initialisation into the base and candidate networks.

Masks follow TE-NAS: the live operators of an edge are weighted equally (softmax of equal
logits, i.e. 1/k each); ``normalise_mask=False`` uses the mask as given.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import linen as nn
from tqdm import tqdm

from cells import network as nw
from cells import ops as ops_lib
from cells import skeleton as sk
from cells import space
from micronas_jax import inputs as inputs_lib
from micronas_jax.proxies import linear_regions, naswot, ntk

_PYTORCH_UNIFORM = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
INITS = {
    # Kaiming normal (fan-in, gain sqrt(2)) for convolutions and the classifier: TE-NAS's intent.
    "kaiming_normal": (ops_lib.kaiming_normal, ops_lib.kaiming_normal),
    # PyTorch's defaults, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): what TE-NAS's code actually runs,
    # its init option ('kaiming_norm_fanin' + '_fanout') matching no branch of init_model.
    "pytorch_default": (_PYTORCH_UNIFORM, _PYTORCH_UNIFORM),
}


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """What the proxies measure; defaults follow TE-NAS and the MicroNAS paper.

    Attributes:
      dataset: input shape and classes (and normalisation of real images).
      C, N: the NTK network (TE-NAS: C=3, N=1, the full three-stage skeleton).
      batch_size: NTK mini-batch (the paper's choice: 32).
      ntk_mode: which NTK (``ntk.NTKMode``).
      init: 'kaiming_normal' or 'pytorch_default' (``INITS``).
      lr_C, lr_input_size, lr_batch, lr_batches: the thin linear-region network and its inputs
        (TE-NAS: C=1, 3x3 inputs, 3 batches of 1,000).
      normalise_mask: weight an edge's live operators 1/k each, as TE-NAS's softmax does.
    """

    dataset: str = "cifar10"
    C: int = 3
    N: int = 1
    batch_size: int = 32
    ntk_mode: ntk.NTKMode = ntk.NTKMode.EXACT
    init: str = "kaiming_normal"
    lr_C: int = 1
    lr_input_size: int = 3
    lr_batch: int = 1000
    lr_batches: int = 3
    normalise_mask: bool = True

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; known: {', '.join(INITS)}")
        object.__setattr__(self, "ntk_mode", ntk.NTKMode(self.ntk_mode))
        if self.dataset not in inputs_lib.RESOLUTION:
            raise ValueError(f"unknown dataset {self.dataset!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {self.batch_size}")

    @property
    def ntk_skeleton(self) -> sk.Skeleton:
        num_classes = sk.DATASETS[self.dataset][0]
        return sk.Skeleton(C=self.C, N=self.N, num_classes=num_classes,
                           resolution=inputs_lib.RESOLUTION[self.dataset])

    @property
    def lr_skeleton(self) -> sk.Skeleton:
        return linear_regions.thin_skeleton(self.lr_C, self.lr_input_size, sk.DATASETS[self.dataset][0])


@dataclasses.dataclass(frozen=True)
class Draw:
    """One seed's shared randomness: both networks' variables and their inputs (``None`` where
    ``ProxyEngine.draw`` was asked not to draw them)."""

    ntk_variables: Any
    ntk_inputs: jax.Array | None  # float32[B, H, W, 3]
    lr_variables: Any
    lr_inputs: jax.Array | None  # float32[lr_batches, lr_batch, s, s, lr_C]


def normalise(mask: jax.Array) -> jax.Array:
    """Each edge's live operators weighted 1/k (rows with no live operator stay zero)."""
    live = (mask > 0).astype(jnp.float32)
    return live / jnp.maximum(live.sum(-1, keepdims=True), 1.0)


class ProxyEngine:
    """Scores candidates; see the module docstring. Not thread-safe: call it from one thread (it
    runs its own worker threads)."""

    def __init__(self, config: ProxyConfig | None = None, source: inputs_lib.ImageSource | None = None,
                 *, conditional_masks: bool | None = None, workers: int | None = None):
        """``conditional_masks``: score masks with ``cells.network.switched_apply`` (operators in
        conditionals: pruned ones cost nothing, small convolutions unrolled) rather than the
        masked supernet's weighted sum of every operator. Default: on CPU, where a pruning
        round's candidate measured 14 % faster so; elsewhere the masked supernet (not measured
        on a GPU, which copies each conditional's predicate back to the host).

        ``workers``: NTK Jacobians computed at once, each call on its own Python thread (XLA runs
        them side by side); a lone network in exact mode has its rows split between them.
        Default: on CPU, 2 where two or more cores are available (a pruning round's candidate,
        NTK and regions, on 2 cores: 0.47 s against 0.57 s one at a time, XLA's own threading
        leaving a core idle much of the time); elsewhere 1."""
        self.config = config = config or ProxyConfig()
        cpu = jax.default_backend() == "cpu"
        self.conditional_masks = cpu if conditional_masks is None else conditional_masks
        self.workers = (min(2, usable_cores()) if cpu else 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        self.source = source or inputs_lib.ImageSource(config.dataset)
        if self.source.dataset != config.dataset:
            raise ValueError(f"inputs are {self.source.dataset}, the config says {config.dataset}")
        logging.info("Proxy engine: %s; NTK %s, B=%d, C=%d, N=%d, init %s", self.source.describe(),
                     config.ntk_mode.value, config.batch_size, config.C, config.N, config.init)
        kernel_init, dense_init = INITS[config.init]
        self.ntk_net = nw.NB201Network(config.ntk_skeleton, kernel_init=kernel_init, dense_init=dense_init)
        self.lr_net = nw.NB201Network(config.lr_skeleton, kernel_init=kernel_init, dense_init=dense_init,
                                      unroll_cells=True)
        self.traces: dict[str, int] = {}  # compilations per function, for tests and logs
        self._compile_seconds = 0.0
        self.seconds: dict[str, float] = {}  # wall time per compiled function (compiling calls included)
        self._compiled: set[tuple[str, int]] = set()  # (Jacobian function, rows per call) compiled
        self._build()

    # -- compiled functions ------------------------------------------------------------------
    def _traced(self, name):
        self.traces[name] = self.traces.get(name, 0) + 1

    def _build(self):
        c = self.config
        s_ntk = c.ntk_skeleton
        ones = jnp.ones((space.NUM_EDGES, space.NUM_OPS))
        x_ntk = jnp.zeros((c.batch_size, s_ntk.resolution, s_ntk.resolution, 3))
        x_lr = jnp.zeros((c.lr_batch, c.lr_input_size, c.lr_input_size, c.lr_C))
        prep = normalise if c.normalise_mask else (lambda m: m)

        # Initialisation compiles about 3x faster at LLVM's level 1 on CPU (12.9 s -> 4.1 s here;
        # a third of a cold search's compile time), with bit-identical variables (checked on
        # 120 keys, both datasets' resolutions, both inits). Synthetic inputs are drawn by
        # functions of their own at the default level, where the random bits run faster (a batch
        # of 32 images: 1.2 against 1.8 ms).
        level_1 = {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None

        # The four keys of a draw: NTK variables, NTK inputs, thin-network variables, its inputs.
        @functools.partial(jax.jit, compiler_options=level_1)
        def init_ntk(key):
            self._traced("draw")
            k1, k2, _, _ = jax.random.split(key, 4)
            return self.ntk_net.init(k1, x_ntk, ones, train=False, mutable=["params", "batch_stats"]), k2

        @functools.partial(jax.jit, compiler_options=level_1)
        def init_lr(key):
            self._traced("draw_regions")
            _, _, k3, k4 = jax.random.split(key, 4)
            return self.lr_net.init(k3, x_lr, ones, train=False, mutable=["params", "batch_stats"]), k4

        exact = c.ntk_mode == ntk.NTKMode.EXACT

        def perturbed(v):
            """The structured exact NTK differentiates zeros added to every convolution's output:
            made here, in the compiled function, not drawn with the variables (batch-shaped, 2.4 M
            floats at B = 32: they made each draw 0.6 ms slower and each call's arguments 10 MB)."""
            if not exact:
                return v
            shapes = jax.eval_shape(lambda: self.ntk_net.init(jax.random.key(0), x_ntk, ones, train=False))
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"])
            return {**v, "perturbations": zeros}

        def masked_apply(mask):
            return lambda v, x, train: self.ntk_net.apply(v, x, prep(mask), train=train,
                                                          mutable=["batch_stats", "intermediates"])

        def switched(idx=None, mask=None):
            def apply(v, x, train):
                return nw.switched_apply(s_ntk, v, x, idx, train=train, mask=None if mask is None else prep(mask))
            return apply

        # Both take the first row of J to compute (traced) and the number of rows (static), so
        # that threads can split one network's rows (see _map).
        @functools.partial(jax.jit, static_argnames="num_rows")
        def jac_mask(v, x, mask, first_row, num_rows):
            self._traced("ntk_mask")
            rows = {"first_row": first_row, "num_rows": num_rows, "stats_in_pass": True}
            v = perturbed(v)
            if self.conditional_masks:
                return ntk.jacobian(switched(mask=mask), v, x, c.ntk_mode, **rows)
            return ntk.jacobian(masked_apply(mask), v, x, c.ntk_mode, **rows)

        @functools.partial(jax.jit, static_argnames="num_rows")
        def jac_cell(v, x, idx, first_row, num_rows):
            self._traced("ntk_cell")
            return ntk.jacobian(switched(idx), perturbed(v), x, c.ntk_mode, first_row=first_row, num_rows=num_rows,
                                stats_in_pass=True)

        def lr_apply(v, x, mask):
            return self.lr_net.apply(v, x, mask, train=True, mutable=["batch_stats", "intermediates"])

        @jax.jit
        def regions(v, xs, masks):
            self._traced("regions")
            count = functools.partial(linear_regions.count_regions, lr_apply, v, xs)
            return jax.vmap(lambda m: count(prep(m)))(masks)

        def naswot_init(key, x):
            self._traced("naswot_init")
            return self.ntk_net.init(key, x, ones, train=False, mutable=["params", "batch_stats"])

        @jax.jit
        def naswot_kernels(v, x, masks):
            self._traced("naswot")
            def apply(v, x, m):  # the masked supernet, as the regions' network runs
                return self.ntk_net.apply(v, x, prep(m), train=True, mutable=["batch_stats", "intermediates"])
            return jax.vmap(lambda m: naswot.kernel(apply, v, x, m))(masks)

        self._naswot_init = functools.partial(jax.jit, compiler_options=level_1)(naswot_init)
        self._naswot_kernels = naswot_kernels

        if self.source.synthetic:
            self._ntk_inputs = jax.jit(lambda k: self.source.batch(k, c.batch_size))
            self._lr_inputs = jax.jit(self._crops)
        else:
            self._ntk_inputs = lambda k: self.source.batch(k, c.batch_size)
            self._lr_inputs = self._crops
        self._init_ntk, self._init_lr = init_ntk, init_lr
        self._jac_mask, self._jac_cell, self._regions = jac_mask, jac_cell, regions

    def _timed(self, fn, *args, **kwargs):
        before = sum(self.traces.values())
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        seconds = time.perf_counter() - start
        name = getattr(fn, "__name__", "fn")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if sum(self.traces.values()) > before:
            self._compile_seconds += seconds
            logging.info("compiled %s in %.1f s", name, seconds)
        return out

    @property
    def compile_seconds(self) -> float:
        """Wall time of the calls that compiled (compile + first run)."""
        return self._compile_seconds

    # -- randomness --------------------------------------------------------------------------
    def draw(self, key: jax.Array, *, ntk: bool = True, regions: bool = True) -> Draw:
        """The seed's variables and inputs (shared by every candidate scored with it): the NTK
        network's unless ``ntk=False``, the thin network's unless ``regions=False`` (fields not
        drawn are ``None``; what is drawn does not depend on what is not)."""
        v_ntk = x = v_lr = lr_inputs = None
        if ntk:
            v_ntk, k_x = self._timed(self._init_ntk, key)
            x = self._ntk_inputs(k_x)
        if regions:
            v_lr, k_lr = self._timed(self._init_lr, key)
            lr_inputs = self._lr_inputs(k_lr)
        return Draw(v_ntk, x, v_lr, lr_inputs)

    def _crops(self, key: jax.Array) -> jax.Array:
        """float32[lr_batches, lr_batch, s, s, lr_C]: the thin network's inputs."""
        c = self.config
        lr_inputs = self.source.crops(key, c.lr_batch * c.lr_batches, c.lr_input_size)
        lr_inputs = lr_inputs.reshape(c.lr_batches, c.lr_batch, *lr_inputs.shape[1:])
        if c.lr_C != 1:
            lr_inputs = jnp.repeat(lr_inputs, c.lr_C, axis=-1)
        return lr_inputs

    # -- scoring -----------------------------------------------------------------------------
    def _map(self, fn, draw: Draw, per_call: Sequence[jax.Array]) -> np.ndarray:
        """float32[K, B, P]: ``fn``'s Jacobian for each of the K ``per_call`` arguments, run
        ``self.workers`` at a time on threads. In exact mode with fewer networks than workers,
        each network's B rows are split between the workers instead: each recomputes the forward
        pass, little beside B backward passes (one cell on 2 cores: 256 against 282 ms; the
        per-sample modes, a single backward pass, were slower so). A variant's first call runs
        alone, so that it compiles once."""
        batch, k = self.config.batch_size, len(per_call)
        split = self.config.ntk_mode == ntk.NTKMode.EXACT and 0 < k < self.workers and batch % self.workers == 0
        parts = self.workers if split else 1
        rows = batch // parts
        todo = [(a, jnp.asarray(r * rows, jnp.int32)) for a in per_call for r in range(parts)]
        out = []
        if (fn.__name__, rows) not in self._compiled:
            out.append(np.asarray(self._timed(fn, draw.ntk_variables, draw.ntk_inputs, *todo.pop(0), num_rows=rows)))
            self._compiled.add((fn.__name__, rows))
        if todo:
            start = time.perf_counter()

            def call(args):
                return np.asarray(fn(draw.ntk_variables, draw.ntk_inputs, *args, num_rows=rows))

            if self.workers > 1 and len(todo) > 1:
                with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                    out += list(pool.map(call, todo))
            else:
                out += [call(args) for args in todo]
            self.seconds[fn.__name__] = self.seconds.get(fn.__name__, 0.0) + time.perf_counter() - start
        return np.stack(out).reshape(k, batch, -1)

    def ntk_jacobians_cells(self, cells: Sequence[space.ArchLike], draw: Draw) -> np.ndarray:
        """float32[K, B, P] for single cells (only their own operators run)."""
        idx = [jnp.asarray(space.as_cell(arch).op_indices, jnp.int32) for arch in cells]
        return self._map(self._jac_cell, draw, idx)

    def ntk_jacobians_masks(self, masks: np.ndarray, draw: Draw) -> np.ndarray:
        """float32[K, B, P] for float[K, 6, 5] masks (partly pruned supernets)."""
        return self._map(self._jac_mask, draw, [jnp.asarray(m) for m in _check_masks(masks)])

    def regions_draw(self, masks: np.ndarray, draw: Draw) -> np.ndarray:
        """int64[K] linear-region counts of float[K, 6, 5] masks under one draw (vmapped).

        K is padded to a power of two (repeating the last mask), so that a search's rounds of
        varying size share a few compiled functions."""
        masks = _check_masks(masks)
        k = len(masks)
        padded = np.concatenate([masks, np.repeat(masks[-1:], (1 << max(k - 1, 0).bit_length()) - k, axis=0)])
        out = self._timed(self._regions, draw.lr_variables, draw.lr_inputs, jnp.asarray(padded))
        return np.asarray(out)[:k].astype(np.int64)

    def naswot_cells(self, cells: Sequence[space.ArchLike], key: jax.Array, batch_size: int = 64,
                     chunk: int = 32, progress: bool = False) -> np.ndarray:
        """float64[K] NASWOT scores (``proxies.naswot``, larger = codes further apart) of K cells
        under one draw of its own: the NTK network's variables initialised from ``key`` itself and
        ``batch_size`` inputs from ``fold_in(key, 1)``, BatchNorm on the batch's statistics; the
        cells ``chunk`` at a time (vmapped), the last chunk padded so that one function serves all;
        a progress bar over the cells with ``progress``."""
        masks = np.stack([space.as_cell(c).matrix for c in cells]) if len(cells) else np.zeros((0, 6, 5))
        x = self.source.batch(jax.random.fold_in(key, 1), batch_size)
        v = self._timed(self._naswot_init, key, jnp.zeros_like(x))
        out = []
        for start in tqdm(range(0, len(masks), chunk), desc="NASWOT", unit=f"x{chunk} cells", disable=not progress):
            part = masks[start:start + chunk]
            padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)]).astype(np.float32)
            out.append(np.asarray(self._timed(self._naswot_kernels, v, x, jnp.asarray(padded)))[:len(part)])
        return naswot.log_det(np.concatenate(out)) if out else np.zeros(0)

    def ntk_cells(self, cells: Sequence[space.ArchLike], keys: Sequence[jax.Array]) -> ntk.Conditioning:
        """Condition numbers float64[K, S] of K cells under S seeds."""
        return _stack_seeds([ntk.condition_numbers(self.ntk_jacobians_cells(cells, self.draw(k, regions=False)))
                             for k in keys])

    def ntk_masks(self, masks: np.ndarray, keys: Sequence[jax.Array]) -> ntk.Conditioning:
        """Condition numbers float64[K, S] of K masks under S seeds."""
        return _stack_seeds([ntk.condition_numbers(self.ntk_jacobians_masks(masks, self.draw(k, regions=False)))
                             for k in keys])

    def regions_masks(self, masks: np.ndarray, keys: Sequence[jax.Array]) -> np.ndarray:
        """int64[K, S] linear-region counts of K masks (one-hot for cells) under S seeds."""
        return np.stack([self.regions_draw(masks, self.draw(k, ntk=False)) for k in keys], axis=1)

    def score_cells(self, cells: Sequence[space.ArchLike], keys: Sequence[jax.Array], *,
                    pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Both proxies of K cells under S seeds, one draw per seed: 'ntk' float64[K, S],
        'ntk_flag' str[K, S], 'regions' int64[K, S].

        ``pad_to`` pads the vmapped region count to a fixed number of cells (repeating the last),
        so that chunks of varying size share one compiled function.
        """
        cells = [space.as_cell(c) for c in cells]
        masks = np.stack([c.matrix for c in cells])
        if pad_to is not None and pad_to > len(cells):
            masks = np.concatenate([masks, np.repeat(masks[-1:], pad_to - len(cells), axis=0)])
        conds, regions = [], []
        for k in keys:
            d = self.draw(k)
            conds.append(ntk.condition_numbers(self.ntk_jacobians_cells(cells, d)))
            regions.append(self.regions_draw(masks, d)[: len(cells)])
        cond = _stack_seeds(conds)
        return {"ntk": cond.condition, "ntk_flag": cond.flag, "regions": np.stack(regions, axis=1)}

    def score_round(self, base_mask: np.ndarray, candidate_masks: np.ndarray,
                    keys: Sequence[jax.Array]) -> dict[str, np.ndarray]:
        """A pruning round: the base supernet once per seed, then every candidate with the same
        draw. Returns 'ntk' float64[1 + K, S] and 'regions' int64[1 + K, S], the base first."""
        masks = np.concatenate([np.asarray(base_mask)[None], _check_masks(candidate_masks)])
        conds, regions = [], []
        for k in keys:
            d = self.draw(k)
            jacobians = self.ntk_jacobians_masks(masks, d)
            start = time.perf_counter()
            conds.append(ntk.condition_numbers(jacobians))
            self.seconds["conditioning"] = self.seconds.get("conditioning", 0.0) + time.perf_counter() - start
            regions.append(self.regions_draw(masks, d))
        cond = _stack_seeds(conds)
        return {"ntk": cond.condition, "ntk_flag": cond.flag, "regions": np.stack(regions, axis=1)}


def _check_masks(masks) -> np.ndarray:
    m = np.asarray(masks, np.float32)
    if m.ndim != 3 or m.shape[1:] != (space.NUM_EDGES, space.NUM_OPS):
        raise ValueError(f"masks must have shape (K, 6, 5), got {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("masks must be finite and non-negative")
    return m


def _stack_seeds(per_seed: list[ntk.Conditioning]) -> ntk.Conditioning:
    return ntk.Conditioning(*(np.stack([getattr(c, f.name) for c in per_seed], axis=1)
                              for f in dataclasses.fields(ntk.Conditioning)))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one: ``taskset``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


UNRECORDED = "unrecorded"  # the timing host of records older than the 'timed_on' field


def timed_on() -> str:
    """Where timings are taken now, for the records that carry them: JAX's backend and device
    kind (a GPU's model), or the cores it may use on CPU, e.g. ``'gpu (NVIDIA H100 80GB HBM3)'``,
    ``'cpu (2 cores)'``."""
    device = jax.devices()[0]
    kind = f"{usable_cores()} cores" if device.platform == "cpu" else device.device_kind
    return f"{jax.default_backend()} ({kind})"


def seed_keys(seed: int, repeats: int) -> list[jax.Array]:
    """``repeats`` independent keys from one integer seed."""
    return list(jax.random.split(jax.random.key(seed), repeats))
