"""micronas-jax: zero-shot, hardware-aware NAS for microcontrollers (MicroNAS) in JAX.

Submodules: ``benchmark`` (NB201 ground truth), ``describe`` (cell summaries), ``hardware``
(FLOPs, MCU latency, memory).
"""

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

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "Benchmark",
    "BenchmarkDataError",
    "BuiltinBenchmark",
    "OfficialBenchmark",
    "Record",
    "load_benchmark",
    "load_table",
]
