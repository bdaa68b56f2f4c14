"""The NB201 macro skeleton as plain data, with every tensor shape.

One description serves both the Flax builder (``cells.network``) and the cost models
(``micronas_jax.hardware``): FLOPs, latency and memory are computed from the same units and
layers as the network the proxies score, so they cannot drift apart.

The network (NB201 ``TinyNetwork``)::

    stem: conv3x3(in -> C) + BN                  (absent when ``stem=False``)
    stage 0: N cells at width C
    reduction: residual block C -> 2C, stride 2
    stage 1: N cells at width 2C
    reduction: residual block 2C -> 4C, stride 2
    stage 2: N cells at width 4C
    head: BN + ReLU, global average pool, linear classifier

Pure Python: no JAX import.
"""

from __future__ import annotations

import dataclasses
import functools

from cells import space

DATASETS: dict[str, tuple[int, int]] = {
    "cifar10": (10, 32),
    "cifar100": (100, 32),
    "ImageNet16-120": (120, 16),
}
"""dataset name -> (number of classes, input resolution), as in NB201."""

UNIT_KINDS = ("stem", "cell", "reduction", "head")
LAYER_KINDS = ("conv", "bn", "relu", "avgpool", "zero", "copy", "add", "gap", "fc")


@dataclasses.dataclass(frozen=True)
class Unit:
    """A block of the skeleton: a stem, a searched cell, a reduction block or the head.

    ``name`` is also the Flax module name, and ``index`` NB201's position in its cell list.
    """

    name: str
    kind: str
    cin: int
    cout: int
    hin: int
    hout: int
    stage: int
    index: int | None = None


@dataclasses.dataclass(frozen=True)
class Layer:
    """One primitive operation of the network as built; shapes are per sample (NHWC, H = W).

    ``path`` is the Flax module path of the layer's parameters, ``/``-separated.
    """

    path: str
    kind: str
    cin: int
    cout: int
    hin: int
    hout: int
    k: int = 1
    stride: int = 1
    bias: bool = False
    unit: str = ""
    edge: int | None = None
    op: str | None = None

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a conv or fc layer (0 for every other kind)."""
        if self.kind == "conv":
            return self.k * self.k * self.cin * self.cout * self.hout * self.hout
        if self.kind == "fc":
            return self.cin * self.cout
        return 0

    @property
    def num_params(self) -> int:
        """Trainable parameters: conv kernels (+bias), BN scale and shift, fc weight and bias."""
        if self.kind == "conv":
            return self.k * self.k * self.cin * self.cout + (self.cout if self.bias else 0)
        if self.kind == "bn":
            return 2 * self.cout
        if self.kind == "fc":
            return self.cin * self.cout + self.cout
        return 0

    @property
    def out_elements(self) -> int:
        return self.cout * self.hout * self.hout


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """Shape parameters of an NB201 network.

    Attributes:
      C: width of the first stage (stages are C, 2C, 4C). NB201: 16.
      N: cells per stage. NB201: 5.
      num_classes: classifier outputs.
      resolution: input height = width; must be divisible by 4.
      in_channels: input channels (3 for images).
      stem: whether the network starts with conv3x3 + BN; without it the input feeds the first
        cell directly, so ``in_channels`` must equal ``C`` (TE-NAS's thin linear-region net).
      depth: keep only the first ``depth`` blocks of the body (cells and reductions, in order),
        then the head, as TE-NAS's ``depth`` does; ``None`` keeps all.
    """

    C: int = 16
    N: int = 5
    num_classes: int = 10
    resolution: int = 32
    in_channels: int = 3
    stem: bool = True
    depth: int | None = None

    def __post_init__(self):
        for name in ("C", "N", "num_classes", "resolution", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Skeleton.{name} must be a positive integer, got {value!r}")
        if self.depth is not None and (
                isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1):
            raise ValueError(f"Skeleton.depth must be None or a positive integer, got {self.depth!r}")
        body = 3 * self.N + 2 if self.depth is None else min(self.depth, 3 * self.N + 2)
        reductions = sum(body > k * (self.N + 1) - 1 for k in (1, 2))  # blocks N and 2N+1
        if self.resolution % 2**reductions:
            raise ValueError(
                f"Skeleton.resolution={self.resolution} must be divisible by {2**reductions} "
                f"({reductions} stride-2 reduction(s))"
            )
        if not self.stem and self.in_channels != self.C:
            raise ValueError(
                f"without a stem the input feeds the first cell: in_channels={self.in_channels} "
                f"must equal C={self.C}"
            )

    @classmethod
    def for_dataset(cls, dataset: str, C: int = 16, N: int = 5) -> Skeleton:
        """NB201's network for ``dataset`` ('cifar10', 'cifar100' or 'ImageNet16-120')."""
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
        num_classes, resolution = DATASETS[dataset]
        return cls(C=C, N=N, num_classes=num_classes, resolution=resolution)

    @property
    def widths(self) -> tuple[int, int, int]:
        return (self.C, 2 * self.C, 4 * self.C)

    @functools.cached_property
    def units(self) -> tuple[Unit, ...]:
        """Stem, cells and reductions (named ``cells_{i}`` as NB201 numbers them), head."""
        units = []
        h, c = self.resolution, self.in_channels
        if self.stem:
            units.append(Unit("stem", "stem", c, self.C, h, h, stage=0))
            c = self.C
        body = []
        for stage, width in enumerate(self.widths):
            if stage > 0:
                body.append(Unit(f"cells_{len(body)}", "reduction", c, width, h, h // 2, stage, len(body)))
                h, c = h // 2, width
            for _ in range(self.N):
                body.append(Unit(f"cells_{len(body)}", "cell", c, width, h, h, stage, len(body)))
        body = body[: self.depth]
        units += body
        last = body[-1]
        units.append(Unit("head", "head", last.cout, self.num_classes, last.hout, 1, stage=last.stage))
        return tuple(units)

    def layers(self, cell: space.Cell) -> tuple[Layer, ...]:
        """Every primitive layer of the standalone network for ``cell``, in execution order."""
        return tuple(layer for unit in self.units for layer in unit_layers(unit, cell))


def _relu_conv_bn(prefix, cin, cout, h, hout, k, stride, **tags) -> list[Layer]:
    return [
        Layer(f"{prefix}/relu", "relu", cin, cin, h, h, **tags),
        Layer(f"{prefix}/conv", "conv", cin, cout, h, hout, k=k, stride=stride, **tags),
        Layer(f"{prefix}/bn", "bn", cout, cout, hout, hout, **tags),
    ]


def edge_module_name(edge: int, op: str) -> str:
    """Flax module name of operator ``op`` on ``edge`` (shared by standalone and supernet)."""
    src, dst = space.EDGES[edge]
    return f"edge_{src}_{dst}_{op}"


def edge_layers(unit: Unit, edge: int, op: str) -> list[Layer]:
    """The layers of operator ``op`` on ``edge`` of a cell unit."""
    if op not in space.OPS:
        raise space.CellError(f"unknown operator {op!r}; known operators: {', '.join(space.OPS)}")
    c, h = unit.cout, unit.hout
    prefix = f"{unit.name}/{edge_module_name(edge, op)}"
    tags = {"unit": unit.name, "edge": edge, "op": op}
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        return _relu_conv_bn(prefix, c, c, h, h, 1 if op == "nor_conv_1x1" else 3, 1, **tags)
    kind = {"none": "zero", "skip_connect": "copy", "avg_pool_3x3": "avgpool"}[op]
    return [Layer(prefix, kind, c, c, h, h, k=3 if kind == "avgpool" else 1, **tags)]


def unit_layers(unit: Unit, cell: space.Cell) -> list[Layer]:
    """The layers of one unit; ``cell`` matters only for ``kind == 'cell'``."""
    n, tags = unit.name, {"unit": unit.name}
    if unit.kind == "stem":
        return [
            Layer(f"{n}/conv", "conv", unit.cin, unit.cout, unit.hin, unit.hout, k=3, **tags),
            Layer(f"{n}/bn", "bn", unit.cout, unit.cout, unit.hout, unit.hout, **tags),
        ]
    if unit.kind == "reduction":
        cin, cout, h, h2 = unit.cin, unit.cout, unit.hin, unit.hout
        return [
            *_relu_conv_bn(f"{n}/conv_a", cin, cout, h, h2, 3, 2, **tags),
            *_relu_conv_bn(f"{n}/conv_b", cout, cout, h2, h2, 3, 1, **tags),
            Layer(f"{n}/downsample_pool", "avgpool", cin, cin, h, h2, k=2, stride=2, **tags),
            Layer(f"{n}/downsample_conv", "conv", cin, cout, h2, h2, k=1, **tags),
            Layer(f"{n}/add", "add", cout, cout, h2, h2, **tags),
        ]
    if unit.kind == "head":
        c, h = unit.cin, unit.hin
        return [
            Layer(f"{n}/bn", "bn", c, c, h, h, **tags),
            Layer(f"{n}/relu", "relu", c, c, h, h, **tags),
            Layer(f"{n}/gap", "gap", c, c, h, 1, k=h, **tags),
            Layer(f"{n}/classifier", "fc", c, unit.cout, 1, 1, bias=True, **tags),
        ]
    layers = []
    for node in range(1, space.NUM_NODES):
        for src in range(node):
            edge = space.EDGES.index((src, node))
            layers += edge_layers(unit, edge, cell.ops[edge])
        for k in range(node - 1):  # summing `node` inputs takes node - 1 additions
            layers.append(
                Layer(f"{n}/node{node}_add{k}", "add", unit.cout, unit.cout, unit.hout, unit.hout,
                      **tags)
            )
    return layers
