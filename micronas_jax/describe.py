"""A cell's identity, exact costs and NB201 accuracies, as one JSON-ready dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from cells import skeleton as sk
from cells import space
from micronas_jax import benchmark as benchmark_lib
from micronas_jax.hardware import flops


def describe(
    arch: space.ArchLike,
    benchmark: benchmark_lib.Benchmark | None = None,
    *,
    C: int = 16,
    N: int = 5,
) -> dict[str, Any]:
    """Describes a cell.

    Args:
      arch: a cell string, an NB201 index (int or digit string) or a ``Cell``.
      benchmark: where accuracies come from (default: the built-in table).
      C, N: skeleton width and depth for the computed costs (NB201: 16, 5).

    Returns:
      A dict: ``cell`` (string), ``index``, ``isomorphism`` (key, representative, class size),
      ``op_counts``, ``computed`` (dataset -> FLOPs and params in millions, from the network
      as built) and ``nb201`` (the benchmark's record).
    """
    cell = space.as_cell(arch)
    benchmark = benchmark or benchmark_lib.BuiltinBenchmark()
    rep = cell.canonical()
    classes = space.isomorphism_classes()
    computed = {}
    for dataset in sk.DATASETS:
        skeleton = sk.Skeleton.for_dataset(dataset, C=C, N=N)
        computed[dataset] = {
            "flops_M": flops.count_flops(skeleton, cell) / 1e6,
            "params_M": flops.count_params(skeleton, cell) / 1e6,
        }
    return {
        "cell": cell.to_string(),
        "index": cell.index,
        "isomorphism": {
            "key": cell.isomorphism_key(),
            "representative": rep.to_string(),
            "representative_index": rep.index,
            "class_size": int(np.sum(classes == rep.index)),
        },
        "op_counts": {op: cell.count(op) for op in space.OPS},
        "skeleton": {"C": C, "N": N},
        "computed": computed,
        "nb201": benchmark.query(cell).to_json(),
    }


def format_description(d: dict[str, Any]) -> str:
    """A human-readable table of ``describe``'s output."""
    iso = d["isomorphism"]
    lines = [
        f"cell      {d['cell']}",
        f"index     {d['index']}",
        f"class     {iso['class_size']} isomorphic cell(s); representative #{iso['representative_index']}"
        f" {iso['representative']}",
        "ops       " + ", ".join(f"{op} x{n}" for op, n in d["op_counts"].items() if n),
        f"network   NB201 skeleton C={d['skeleton']['C']}, N={d['skeleton']['N']}",
        "",
        f"{'dataset':<16}{'test acc %':>11}{'FLOPs (M)':>12}{'params (M)':>12}",
    ]
    rec = d["nb201"]
    for dataset, cost in d["computed"].items():
        acc = rec["test_accuracy"].get(dataset, float("nan"))
        lines.append(
            f"{dataset:<16}{acc:>11.2f}{cost['flops_M']:>12.5f}{cost['params_M']:>12.6f}")
    lines.append(f"(accuracy: NB201 200 epochs, {rec['source']}; costs: counted from the network)")
    return "\n".join(lines)
