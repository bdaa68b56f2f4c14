"""NB201's operators as Flax modules (NHWC), exactly as NB201 defines them.

* ``none``: zeros; ``skip_connect``: identity;
* ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU -> Conv (no bias, stride 1, 'same') -> BatchNorm;
* ``avg_pool_3x3``: 3x3 average pool, stride 1, padding 1, padding not counted.

BatchNorm follows PyTorch's defaults (epsilon 1e-5, momentum 0.1 i.e. Flax 0.9, affine).
``train=True`` normalises with the batch's statistics (biased variance), as PyTorch's training
mode does; ``train=False`` uses the running statistics.
"""

from __future__ import annotations

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


class Conv(nn.Module):
    """``nn.Conv`` without bias, padding (k-1)/2, that also exposes what a structured NTK needs:
    it sows its input (``intermediates/conv_in``) and adds a zero ``perturbations/out`` to its
    output, whose gradient is the output's cotangent. Both are inert unless asked for."""

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Initializer = kaiming_normal

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, pad = self.kernel_size, (self.kernel_size - 1) // 2
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        self.sow("intermediates", "conv_in", x)
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (self.stride, self.stride), ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),  # explicit padding: 'SAME' pads (0, 1) at stride 2
            precision=PRECISION)
        return self.perturb("out", y)


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k x k, no bias, padding (k-1)/2) -> BatchNorm."""

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Initializer = kaiming_normal

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nn.relu(x)
        self.sow("intermediates", "relu", x)  # read by linear-region counting
        x = Conv(self.features, self.kernel_size, self.stride, self.kernel_init, name="conv")(x)
        return batch_norm(train, name="bn")(x)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def apply_op(
    op: str,
    x: jax.Array,
    *,
    train: bool,
    name: str,
    kernel_init: Initializer = kaiming_normal,
) -> jax.Array:
    """Applies NB201 operator ``op`` at constant width; call inside a compact method.

    Convolutions become a ``ReLUConvBN`` submodule called ``name``; the other operators have
    no parameters.
    """
    if op == "none":
        return jnp.zeros_like(x)
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return avg_pool_3x3(x)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        k = 1 if op == "nor_conv_1x1" else 3
        return ReLUConvBN(x.shape[-1], k, kernel_init=kernel_init, name=name)(x, train=train)
    raise ValueError(f"unknown NB201 operator {op!r}")
