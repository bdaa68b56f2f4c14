"""Regenerates the paper's experiments into one folder: batch-size study, indicator table, search
table, Pareto plots and ``report.md`` embedding them. Resumable: rerun the same command.

    python experiments/reproduce.py --out=reproduction              # the full report
    python experiments/reproduce.py --out=/tmp/quick --quick        # minutes on a 2-core CPU
    python experiments/reproduce.py --out=mine --data_path=~/data/cifar-10-batches-py --lut=my_board.json

A flag given explicitly overrides the (full or quick) configuration's value.
"""

import dataclasses
import os
import shlex
import sys

import jax
from absl import app, flags

from micronas_jax import cli, reproduce

_OUT = flags.DEFINE_string("out", "reproduction", "Output folder (created; a rerun resumes in it).")
_QUICK = flags.DEFINE_bool("quick", False, "The small version: CIFAR-10, 2 seeds at R = 1, 100 cells.")
_STAGES = flags.DEFINE_list("stages", ["batch_size", "indicators", "searches"], "Stages to run.")
_ARCH = flags.DEFINE_string("arch", "11472", "A reference cell (string or index) marked on the Pareto plots.")
_DATASETS = flags.DEFINE_list("datasets", None, "Datasets (default: all three; --quick: cifar10).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Search seeds 0..N-1 per configuration (default 10; --quick 2).")
_REPEATS = flags.DEFINE_integer("repeats", None, "R, draws per pruning round (default 3; --quick 1).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", None, "The study's NTK batch sizes (default 8,16,32,64,128).")
_STUDY_CELLS = flags.DEFINE_integer("study_cells", None, "Cells sampled for the batch-size study (default 1000).")
_STUDY_SEEDS = flags.DEFINE_integer("study_seeds", None, "Draws per cell in the study (default 3).")
_INDICATOR_CELLS = flags.DEFINE_integer("indicator_cells", None, "Cells sampled for the indicator table.")
_W_FLOPS = flags.DEFINE_list("w_flops", None, "FLOPs-guided searches' weights (default 1,3).")
_W_LATENCY = flags.DEFINE_list("w_latency", None, "Latency-guided searches' weights (default 1,3,5).")
_BUDGETS = flags.DEFINE_list("budget_quantiles", None, "Latency budgets as quantiles of the space's latency.")
_INPUTS = cli.define_input_flags()
_LUT = flags.DEFINE_string("lut", None, "Device LUT JSON (default: STM32F746, CMSIS-NN s8).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the whole result (report.json) here.")
_CACHE_DIR = flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "micronas-jax"),
                                 "Persistent XLA compilation cache ('' to disable).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars.")


def _config() -> reproduce.ReproduceConfig:
    base = reproduce.QUICK if _QUICK.value else reproduce.ReproduceConfig()
    overrides = {}
    for flag, field, cast in ((_DATASETS, "datasets", str), (_BATCH_SIZES, "batch_sizes", int),
                              (_W_FLOPS, "w_flops", float), (_W_LATENCY, "w_latency", float),
                              (_BUDGETS, "budget_quantiles", float)):
        if flag.value is not None:
            try:
                overrides[field] = tuple(cast(v) for v in flag.value)
            except ValueError as err:
                raise app.UsageError(f"--{flag.name}: {err}") from None
    for flag, field in ((_SEEDS, "seeds"), (_REPEATS, "repeats"), (_STUDY_CELLS, "study_cells"),
                        (_STUDY_SEEDS, "study_seeds"), (_INDICATOR_CELLS, "indicator_cells")):
        if flag.value is not None:
            overrides[field] = flag.value
    if "datasets" in overrides and base.study_dataset not in overrides["datasets"]:
        overrides["study_dataset"] = overrides["datasets"][0]
    try:
        return dataclasses.replace(base, **overrides)
    except ValueError as err:
        raise app.UsageError(str(err)) from None


def main(argv):
    cli.no_extra_args(argv)
    reference = cli.arch_flag(_ARCH.value)
    unknown = set(_STAGES.value) - {"batch_size", "indicators", "searches"}
    if unknown:
        raise app.UsageError(f"--stages: unknown {sorted(unknown)}; known: batch_size, indicators, searches")
    if _CACHE_DIR.value:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE_DIR.value))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    result = reproduce.run_stages(_OUT.value, _config(), _STAGES.value, data_path=_INPUTS.data_path.value,
                                  synthetic=_INPUTS.synthetic.value, lut_path=_LUT.value, reference=reference,
                                  progress=_PROGRESS.value,
                                  command=shlex.join(["python", "experiments/reproduce.py", *sys.argv[1:]]))
    print(reproduce.summary_text(result))
    print(f"report: {os.path.join(_OUT.value, 'report.md')}")
    cli.write_json(_JSON_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
