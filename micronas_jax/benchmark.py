"""NB201 ground truth: 200-epoch test accuracies, FLOPs and params of every cell.

Two sources behind one interface:

* ``BuiltinBenchmark`` (the default): the compact table shipped in this package
  (``data/nb201_200ep.csv.gz``, provenance in ``data/DATA.md``). Nothing is downloaded.
* ``OfficialBenchmark``: the user's own NB201 benchmark file, read through the
  ``nas-bench-201`` package (which needs torch: ``pip install 'micronas-jax[nb201]'``).

Both answer ``query(arch) -> Record`` for a cell string, index or ``Cell``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.resources
import io
import math
import os
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from absl import logging

from cells import space

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")

_ACC_COLUMNS = {"cifar10": "c10_test_200ep", "cifar100": "c100_test_200ep",
                "ImageNet16-120": "in16_test_200ep"}
_FLOPS_COLUMNS = {"cifar10": "flops_c10_M", "ImageNet16-120": "flops_in16_M"}
_PARAMS_COLUMNS = {"cifar10": "params_c10_M", "cifar100": "params_c100_M",
                   "ImageNet16-120": "params_in16_M"}
COLUMNS = ("arch_idx", "arch_str", "unique_str", *_ACC_COLUMNS.values(),
           *_FLOPS_COLUMNS.values(), *_PARAMS_COLUMNS.values())

TABLE_FILE = "nb201_200ep.csv.gz"


class BenchmarkDataError(ValueError):
    """A benchmark file that is missing a column, a row or a value, or cannot be read."""


@dataclasses.dataclass(frozen=True)
class Record:
    """What NB201 reports for one cell.

    Attributes:
      index: official NB201 index.
      arch_str: NB201 cell string.
      test_accuracy: dataset -> test accuracy (%) after 200 epochs.
      flops_M: dataset -> NB201's FLOPs (millions); datasets the source lacks are absent.
      params_M: dataset -> NB201's parameter count (millions).
      source: 'builtin' or the official file's path.
    """

    index: int
    arch_str: str
    test_accuracy: Mapping[str, float]
    flops_M: Mapping[str, float]
    params_M: Mapping[str, float]
    source: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Benchmark(Protocol):
    def query(self, arch: space.ArchLike) -> Record: ...


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


@dataclasses.dataclass(frozen=True)
class Table:
    """The whole built-in table as arrays indexed by official NB201 index.

    Attributes:
      arch_str, unique_str: str[15625].
      test_accuracy: dataset -> float64[15625] (%).
      flops_M: dataset -> float64[15625] for 'cifar10' and 'ImageNet16-120'.
      params_M: dataset -> float64[15625].
    """

    arch_str: np.ndarray
    unique_str: np.ndarray
    test_accuracy: Mapping[str, np.ndarray]
    flops_M: Mapping[str, np.ndarray]
    params_M: Mapping[str, np.ndarray]


def load_table(path: str | os.PathLike | None = None) -> Table:
    """Reads and validates a benchmark table (default: the one shipped in the package).

    Raises:
      FileNotFoundError: no file at ``path``.
      BenchmarkDataError: unreadable, missing columns or rows, non-finite values.
    """
    source = path if path is not None else importlib.resources.files("micronas_jax.data") / TABLE_FILE
    try:
        with open(source, "rb") as raw:
            data = raw.read()
        text = gzip.decompress(data).decode() if data[:2] == b"\x1f\x8b" else data.decode()
    except FileNotFoundError:
        raise FileNotFoundError(f"benchmark table not found: {source}") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise BenchmarkDataError(f"benchmark table {source} cannot be read: {err}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise BenchmarkDataError(f"benchmark table {source} lacks column(s) {missing}")
    rows = list(reader)
    if len(rows) != space.NUM_CELLS:
        raise BenchmarkDataError(
            f"benchmark table {source} has {len(rows)} rows, expected {space.NUM_CELLS}")
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for line, row in enumerate(rows, start=2):
        if row["arch_idx"] != str(line - 2):
            raise BenchmarkDataError(
                f"benchmark table {source} line {line}: arch_idx {row['arch_idx']!r}, "
                f"expected {line - 2}")
        for c in COLUMNS:
            value = row[c]
            if c not in ("arch_idx", "arch_str", "unique_str"):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    value = math.nan
                if not math.isfinite(value):
                    raise BenchmarkDataError(
                        f"benchmark table {source} line {line}: column {c} = {row[c]!r} "
                        "is not a finite number")
            columns[c].append(value)
    arrays = {c: np.array(v, dtype=object if c.endswith("str") else np.float64)
              for c, v in columns.items()}
    return Table(
        arch_str=arrays["arch_str"].astype(str),
        unique_str=arrays["unique_str"].astype(str),
        test_accuracy={d: arrays[c] for d, c in _ACC_COLUMNS.items()},
        flops_M={d: arrays[c] for d, c in _FLOPS_COLUMNS.items()},
        params_M={d: arrays[c] for d, c in _PARAMS_COLUMNS.items()},
    )


class BuiltinBenchmark:
    """Answers from the table shipped in the package (or another file of the same format)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.table = load_table(path) if path is not None else _builtin_table()

    def query(self, arch: space.ArchLike) -> Record:
        i = space.as_cell(arch).index
        t = self.table
        return Record(
            index=i,
            arch_str=str(t.arch_str[i]),
            test_accuracy={d: float(a[i]) for d, a in t.test_accuracy.items()},
            flops_M={d: float(a[i]) for d, a in t.flops_M.items()},
            params_M={d: float(a[i]) for d, a in t.params_M.items()},
            source="builtin",
        )

    def test_accuracies(self, dataset: str) -> np.ndarray:
        """float64[15625]: every cell's test accuracy (%), by official index."""
        _check_dataset(dataset)
        return self.table.test_accuracy[dataset]


@functools.cache
def _builtin_table() -> Table:
    return load_table()


class OfficialBenchmark:
    """Answers from the official NB201 benchmark file through ``nas_201_api``.

    Args:
      path: the NB201 ``.pth`` file (e.g. ``NAS-Bench-201-v1_1-096897.pth``).
      api: an already-built ``NASBench201API`` (or an object with its methods); when given,
        ``path`` is only a label.
    """

    def __init__(self, path: str | os.PathLike, *, api: Any = None):
        self.path = os.fspath(path)
        if api is None:
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"official NB201 benchmark file not found: {self.path}")
            try:
                from nas_201_api import NASBench201API
            except ModuleNotFoundError as err:
                missing = err.name or "nas_201_api"
                raise ImportError(
                    f"reading the official NB201 file needs the optional extra (missing module "
                    f"{missing!r}; nas-bench-201 loads the file with torch): "
                    "pip install 'micronas-jax[nb201]'"
                ) from err
            logging.info("Loading the official NB201 file %s (this takes a while)", self.path)
            api = NASBench201API(self.path, verbose=False)
        self.api = api

    def query(self, arch: space.ArchLike) -> Record:
        cell = space.as_cell(arch)
        i = self.api.query_index_by_arch(cell.to_string())
        if i != cell.index:
            raise BenchmarkDataError(
                f"{self.path}: the file indexes {cell} as {i}, the official order says {cell.index}")
        acc, flops, params = {}, {}, {}
        for d in DATASETS:
            acc[d] = float(self.api.get_more_info(i, d, hp="200", is_random=False)["test-accuracy"])
            cost = self.api.get_cost_info(i, d)
            flops[d], params[d] = float(cost["flops"]), float(cost["params"])
        return Record(i, cell.to_string(), acc, flops, params, source=self.path)


def load_benchmark(official_path: str | os.PathLike | None = None) -> Benchmark:
    """The built-in table, or the official NB201 file when a path is given."""
    return OfficialBenchmark(official_path) if official_path else BuiltinBenchmark()
