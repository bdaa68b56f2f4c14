"""micronas-jax: zero-shot, hardware-aware NAS for microcontrollers (MicroNAS) in JAX."""

from micronas_jax.benchmark import (
    DATASETS,
    Benchmark,
    BenchmarkDataError,
    BuiltinBenchmark,
    OfficialBenchmark,
    Record,
    load_benchmark,
    load_table,
)
from micronas_jax.describe import describe, format_description

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "Benchmark",
    "BenchmarkDataError",
    "BuiltinBenchmark",
    "OfficialBenchmark",
    "Record",
    "describe",
    "format_description",
    "load_benchmark",
    "load_table",
]
