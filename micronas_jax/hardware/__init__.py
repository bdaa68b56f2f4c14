"""Hardware indicators, pure Python + NumPy: FLOPs and parameter counts (more to come)."""

from micronas_jax.hardware.flops import CostTable, cost_table, count_flops, count_params

__all__ = ["CostTable", "cost_table", "count_flops", "count_params"]
