"""NB201's operators as Flax modules (NHWC), exactly as NB201 defines them.

* ``none``: zeros; ``skip_connect``: identity;
* ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU -> Conv (no bias, stride 1, 'same') -> BatchNorm;
* ``avg_pool_3x3``: 3x3 average pool, stride 1, padding 1, padding not counted.

BatchNorm follows PyTorch's defaults (epsilon 1e-5, momentum 0.1 i.e. Flax 0.9, affine).
``train=True`` normalises with the batch's statistics (biased variance), as PyTorch's training
mode does; ``train=False`` uses the running statistics; ``train=HELD_BATCH_STATS`` (under a
``vmap`` named ``SAMPLE_AXIS``) the statistics of the vmapped batch, held constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]

kaiming_normal: Initializer = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
"""PyTorch's ``kaiming_normal_(mode='fan_in', nonlinearity='relu')``: N(0, 2 / fan_in)."""

PRECISION = jax.lax.Precision.HIGHEST
"""Full float32 in convolutions and matrix products: on GPUs the default rounds operands to
TF32 (10-bit mantissa), which put the NTK Gram matrix 1% off its float64 reference on an H100."""

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

UNROLL_MAX_TERMS = 81
"""Where asked (``Conv(unroll=True)``: the stem, the cell operators of ``network.switched_apply``),
stride-1 convolutions on CPU with at most this many kernel entries (k * k * C_in * C_out: the 3x3
convolutions of TE-NAS's C = 3 stage, 1x1 up to 9 channels) run as unrolled multiply-adds of
shifted slices (``small_conv``), not XLA's convolution, whose CPU kernels are slow at a few
channels. Measured on the NTK of one cell (B = 32, one thread, seven cells, with ``_cpu_conv``'s
backward pass): exact 261 against 345 ms, per-sample 16 against 23 ms; larger kernels slower
unrolled, and the masked supernet (every operator live) 2x slower, so it keeps XLA's. 0 turns it
off; the results agree to float32 rounding."""


def _pad_same(x: jax.Array, k: int) -> jax.Array:
    """float[..., H, W, C] zero-padded by (k - 1) / 2 on both spatial sides."""
    pad = (k - 1) // 2
    return jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)])


def _unrolled(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'same' convolution of float[..., H, W, C_in] by float[k, k, C_in, C_out], as a sum
    over the k * k * C_in taps of a shifted input channel times the tap's C_out weights: one
    elementwise XLA fusion, with no per-channel concatenation (which XLA fuses as a select)."""
    k, _, c_in, _ = kernel.shape
    h, w = x.shape[-3:-1]
    # XLA may fuse the input's producer (a ReLU, a BatchNorm's backward) into the sum and
    # recompute it per tap; an optimization_barrier here does not stop it (XLA's CPU pipeline
    # drops barriers before fusion). switched_apply's conditionals bound the fusions instead.
    xp = _pad_same(x, k)
    acc = None
    for dy in range(k):
        for dx in range(k):
            for i in range(c_in):
                term = xp[..., dy:dy + h, dx:dx + w, i, None] * kernel[dy, dx, i]
                acc = term if acc is None else acc + term
    return acc


def _flipped(kernel: jax.Array) -> jax.Array:
    """The kernel whose stride-1 'same' convolution is the transpose of ``kernel``'s: spatially
    flipped, input and output channels swapped (the input gradient's kernel)."""
    return kernel[::-1, ::-1].transpose(0, 1, 3, 2)


@jax.custom_vjp
def small_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``_unrolled`` with a backward pass of the same form: the input's gradient is the
    convolution of the cotangent by the flipped, transposed kernel (autodiff of the unrolled form
    would scatter every tap separately, 10-20x slower); the kernel's is ``kernel_gradient``."""
    return _unrolled(x, kernel)


def _small_conv_fwd(x, kernel):
    return _unrolled(x, kernel), (x, kernel)


def _small_conv_bwd(res, g):
    x, kernel = res
    dx = _unrolled(g, _flipped(kernel))
    return dx, kernel_gradient(x, g, kernel.shape[0], 1).astype(kernel.dtype)


small_conv.defvjp(_small_conv_fwd, _small_conv_bwd)


def taps(x: jax.Array, k: int, stride: int, out_hw: tuple[int, int]) -> list[jax.Array]:
    """The k * k shifted views float[..., H', W', C] of float[..., H, W, C], zero-padded by
    (k - 1) / 2, that a k x k convolution at ``stride`` multiplies by its taps, in (dy, dx) order."""
    h, w = out_hw
    xp = _pad_same(x, k)
    return [xp[..., dy:dy + stride * (h - 1) + 1:stride, dx:dx + stride * (w - 1) + 1:stride, :]
            for dy in range(k) for dx in range(k)]


def patches(x: jax.Array, k: int, stride: int, out_hw: tuple[int, int]) -> jax.Array:
    """float[..., H', W', k * k * C]: each output position's input patch, ordered as a HWIO
    kernel flattens (dy, dx, channel). Slices, not ``lax.conv_general_dilated_patches``: that
    is an identity-kernel convolution, 3-10x slower on CPU at these sizes."""
    return jnp.concatenate(taps(x, k, stride, out_hw), axis=-1)


def kernel_gradient(x: jax.Array, g: jax.Array, k: int, stride: int) -> jax.Array:
    """float[k, k, C_in, C_out]: the gradient of a k x k 'same' convolution's kernel, for input
    float[..., H, W, C_in] and output cotangent float[..., H', W', C_out].

    One matrix product: the input's patches, built channel-major as float[C_in * k * k, N] (N =
    the cotangent's positions), times the cotangent as float[N, C_out] (a free reshape). Laid out
    so, the patches are slices with no transpose, and XLA runs one product, not one per tap. The
    taps stack after the channel axis so that under ``vmap`` (per-sample gradients) the batch
    axis stays in front (stacked first, XLA transposed each patch matrix again). Per sample, B =
    32, one thread, the 3x3 layers of TE-NAS's C = 3 network at 32 / 16 / 8 pixels: 0.69 / 0.33
    / 0.28 ms, against 1.44 / 0.61 / 0.43 ms for one contraction per tap of the NHWC input."""
    channel_major = jnp.moveaxis(x, -1, 0)[..., None]  # [C_in, ..., H, W, 1]
    cols = jnp.stack(taps(channel_major, k, stride, g.shape[-3:-1]), axis=1).reshape(x.shape[-1] * k * k, -1)
    grad = jnp.dot(cols, g.reshape(-1, g.shape[-1]), precision=PRECISION)
    return grad.reshape(x.shape[-1], k, k, g.shape[-1]).transpose(1, 2, 0, 3)


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=PRECISION)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """XLA's convolution with a backward pass that XLA's CPU runs faster at a few channels: the
    input's gradient at stride 1 as a forward convolution of the cotangent by the flipped,
    transposed kernel (XLA's backward-data form measured about 2x slower), the kernel's as one
    patch-matrix product (``kernel_gradient``; XLA's backward-filter convolution, and its
    per-sample form under ``vmap``, ran 3-5x slower than even one contraction per tap). Exact
    NTK of one cell, B = 32, one thread: 354 -> 261 ms (mean of seven cells); per-sample
    Jacobian 24.9 -> 16.3 ms (with per-tap contractions)."""
    return _lax_conv(x, kernel, stride)


def _cpu_conv_fwd(x, kernel, stride):
    return _lax_conv(x, kernel, stride), (x, kernel)


def _cpu_conv_bwd(stride, res, g):
    x, kernel = res
    if stride == 1:
        dx = _lax_conv(g, _flipped(kernel), 1)
    else:
        dx = jax.vjp(lambda x: _lax_conv(x, kernel, stride), x)[1](g)[0]
    return dx, kernel_gradient(x, g, kernel.shape[0], stride).astype(kernel.dtype)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    if jax.default_backend() == "cpu":
        return _cpu_conv(x, kernel, stride)
    return _lax_conv(x, kernel, stride)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, unroll: bool = False) -> jax.Array:
    """float[B, H, W, C_in] * float[k, k, C_in, C_out] -> float[B, H', W', C_out], no bias,
    padding (k - 1) / 2 (explicit: 'SAME' pads (0, 1) at stride 2). ``unroll``: use
    ``small_conv`` on CPU where the kernel is small enough (``UNROLL_MAX_TERMS``)."""
    if unroll and stride == 1 and kernel.size <= UNROLL_MAX_TERMS and jax.default_backend() == "cpu":
        return small_conv(x, kernel)
    return _xla_conv(x, kernel, stride)


class Conv(nn.Module):
    """``nn.Conv`` without bias, padding (k-1)/2, that also exposes what a structured NTK needs:
    it sows its input (``intermediates/conv_in``) and adds a zero ``perturbations/out`` to its
    output, whose gradient is the output's cotangent. Both are inert unless asked for."""

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Initializer = kaiming_normal
    unroll: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        self.sow("intermediates", "conv_in", x)
        return self.perturb("out", conv2d(x, kernel.astype(x.dtype), self.stride, self.unroll))


SAMPLE_AXIS = "samples"
"""The ``vmap`` axis name over which ``train=HELD_BATCH_STATS`` BatchNorms take their statistics."""

HELD_BATCH_STATS = "held_batch_stats"
"""A value of the modules' ``train`` argument: each BatchNorm normalises a sample with the
statistics of the batch it is vmapped in (axis ``SAMPLE_AXIS``), held constant (no gradient flows
through them). Under ``vmap(grad)`` its per-sample gradients are those of a network whose
BatchNorms run in evaluation mode with the batch's statistics, computed in the same pass."""

WIDE_ROW = 128
"""``HeldBatchNorm`` takes its statistics of its input reshaped to rows of (up to) this many
positions x C channels."""


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (at least 1)."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


class HeldBatchNorm(nn.Module):
    """BatchNorm for ``HELD_BATCH_STATS``: ``nn.BatchNorm``'s variables and statistics (E[x^2] -
    E[x]^2, biased), taken over the vmapped batch and held constant; running statistics unused.

    The statistics are means over the input reshaped to float[n, w * C] rows of w positions: at
    a few channels XLA's CPU reductions over all but the minor axis run at a fraction of memory
    speed (float[32, 32, 32, 3]: 153 us; over rows of 128 positions: 31 us)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        w = largest_divisor(x.size // c, WIDE_ROW)
        rows = x.reshape(-1, w * c)
        moments = jnp.stack([rows.mean(0), jnp.square(rows).mean(0)]).reshape(2, w, c).mean(1)
        moments = jax.lax.stop_gradient(jax.lax.pmean(moments, SAMPLE_AXIS))
        mean, var = moments[0], jnp.maximum(0.0, moments[1] - jnp.square(moments[0]))
        return (x - mean) * (jax.lax.rsqrt(var + BN_EPSILON) * scale) + bias


def batch_norm(train: bool | str, name: str | None = None) -> nn.Module:
    """``nn.BatchNorm`` with PyTorch's defaults, or ``HeldBatchNorm`` for ``HELD_BATCH_STATS``."""
    if isinstance(train, str):
        if train != HELD_BATCH_STATS:
            raise ValueError(f"train must be a bool or {HELD_BATCH_STATS!r}, got {train!r}")
        return HeldBatchNorm(name=name)
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k x k, no bias, padding (k-1)/2) -> BatchNorm."""

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Initializer = kaiming_normal
    unroll: bool = False  # see UNROLL_MAX_TERMS

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool | str) -> jax.Array:
        x = nn.relu(x)
        self.sow("intermediates", "relu", x)  # read by linear-region counting
        x = Conv(self.features, self.kernel_size, self.stride, self.kernel_init, self.unroll, name="conv")(x)
        return batch_norm(train, name="bn")(x)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def apply_op(
    op: str,
    x: jax.Array,
    *,
    train: bool | str,
    name: str,
    kernel_init: Initializer = kaiming_normal,
    unroll: bool = False,
) -> jax.Array:
    """Applies NB201 operator ``op`` at constant width; call inside a compact method.

    Convolutions become a ``ReLUConvBN`` submodule called ``name`` (``unroll``: see
    ``UNROLL_MAX_TERMS``); the other operators have no parameters.
    """
    if op == "none":
        return jnp.zeros_like(x)
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return avg_pool_3x3(x)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        k = 1 if op == "nor_conv_1x1" else 3
        return ReLUConvBN(x.shape[-1], k, kernel_init=kernel_init, unroll=unroll, name=name)(x, train=train)
    raise ValueError(f"unknown NB201 operator {op!r}")
