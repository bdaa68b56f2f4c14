"""``micronas-search``: the MicroNAS search launcher (also ``python experiments/search.py``).

    micronas-search                                  # one search, the defaults: CIFAR-10, STM32F746
    micronas-search --seeds=0-9 --w_latency=0,0.5,1,2 --results=runs.jsonl --json_out=runs.json
    micronas-search --max_latency_ms=300 --max_sram_kb=128 --data_path=~/data/cifar-10-batches-py

Lists (``--seeds``, ``--datasets``, ``--w_flops``, ``--w_latency``, budgets) span a grid; every
search is appended to ``--results`` as it finishes and a rerun skips what is there. Flags may also
come from a file: ``--flagfile=search.flags``.
"""

from __future__ import annotations

import itertools
import os

import jax
from absl import app, flags, logging

from cells import skeleton as sk
from cells import space
from micronas_jax import batch, benchmark, cli, inputs, plots, search
from micronas_jax.hardware import lut as lut_lib
from micronas_jax.proxies import engine as engine_lib

_ARCH = flags.DEFINE_string("arch", space.RESNET_CELL,
                            "Reference cell (string or index) reported beside the found ones.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Search seeds: '0', '0,3,7' or a range '0-9'.")
_DATASETS = flags.DEFINE_list("datasets", ["cifar10"], f"Datasets to search for: {', '.join(inputs.RESOLUTION)}.")
_W_NTK = flags.DEFINE_float("w_ntk", 1.0, "Weight of the NTK condition-number rank.")
_W_REGIONS = flags.DEFINE_float("w_regions", 1.0, "Weight of the linear-region rank.")
_W_FLOPS = flags.DEFINE_list("w_flops", ["0"], "Weight(s) of the FLOPs rank; negative rewards FLOPs (opt-in).")
_W_LATENCY = flags.DEFINE_list("w_latency", [str(search.DEFAULT_W_LATENCY)],
                               "Weight(s) of the MCU-latency rank (0 with --w_flops=0: TE-NAS's search).")
_W_BUDGET = flags.DEFINE_float("w_budget", 0.0, "Weight of the budget-pressure rank (with budgets: prune early the "
                                "ops few cells within the budgets use).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Seeds (initialisations and batches) per round.")
_ENDGAME = flags.DEFINE_list("endgame", ["0"], "Stop pruning when at most this many cells (within the budgets) "
                             "are left, score them as cells and keep the best by the same ranks; 0 = prune to the end.")
_ENDGAME_W_LATENCY = flags.DEFINE_list("endgame_w_latency", [], "The endgame's latency weight(s), if not "
                                       "--w_latency (needs --endgame).")
_LIVE_FLOPS = flags.DEFINE_bool("live_flops", False, "The endgame's FLOPs rank counts only the edges that reach the "
                                  "output (NB201's count includes dead ones, which cost no MCU latency).")
_ENDGAME_CLASSES = flags.DEFINE_bool("endgame_classes", False, "The endgame picks a latency class by its best NTK "
                                     "rank plus the endgame latency weight x its latency rank, then the class's cell "
                                     "with the most linear regions (needs --endgame).")
_DROP_NONE = flags.DEFINE_list("drop_none", ["true"], "Remove 'none' from every edge before the first round "
                               "(TE-NAS); 'true', 'false' or both (a grid).")
_MAX_LATENCY = flags.DEFINE_list("max_latency_ms", [], "MCU latency budget(s), ms.")
_MAX_FLASH = flags.DEFINE_list("max_flash_kb", [], "Flash budget(s), KB.")
_MAX_SRAM = flags.DEFINE_list("max_sram_kb", [], "Peak SRAM budget(s), KB.")
_MAX_MFLOPS = flags.DEFINE_list("max_mflops", [], "FLOPs budget(s), millions.")
_INPUTS = cli.define_input_flags()
_NTK_MODE = flags.DEFINE_enum("ntk_mode", "exact", [m.value for m in engine_lib.ntk.NTKMode], "NTK kernel.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "NTK batch size.")
_INIT = flags.DEFINE_enum("init", "kaiming_normal", list(engine_lib.INITS), "Initialisation.")
_LUT = flags.DEFINE_string("lut", None, "Device LUT JSON (default: STM32F746, CMSIS-NN s8).")
_C = flags.DEFINE_integer("C", 16, "Deployed network's first-stage width (hardware costs).")
_N = flags.DEFINE_integer("N", 5, "Deployed network's cells per stage (hardware costs).")
_PROXY_NET = cli.define_proxy_network_flags()
_NB201_FILE = flags.DEFINE_string("nb201_file", None, "Official NB201 file for accuracies (needs the [nb201] extra).")
_RESULTS = flags.DEFINE_string("results", "micronas_search.jsonl", "Results JSONL: appended per search; reruns resume.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write every result and the summary as JSON here.")
_PLOT_OUT = flags.DEFINE_string("plot_out", None, "PNG: the found cells on the space's latency-accuracy plane.")
_CACHE_DIR = flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "micronas-jax"),
                                 "Persistent XLA compilation cache ('' to disable).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars.")


def _bools(flag, values) -> list[bool]:
    table = {"true": True, "1": True, "false": False, "0": False}
    try:
        return [table[v.lower()] for v in values]
    except KeyError as err:
        raise app.UsageError(f"--{flag}: {err} is not true or false") from None


def _ints(flag, values) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{flag}: {values} are not whole numbers") from None


def configs() -> dict[str, search.SearchConfig]:
    """The grid named by the flags: configuration name -> config."""
    out = {}
    for eg, ew, dn, wf, wl, lat, fl, sr, mf in itertools.product(
            _ints("endgame", _ENDGAME.value),
            cli.float_list("endgame_w_latency", _ENDGAME_W_LATENCY.value, True),
            _bools("drop_none", _DROP_NONE.value),
            cli.float_list("w_flops", _W_FLOPS.value),
            cli.float_list("w_latency", _W_LATENCY.value),
            cli.float_list("max_latency_ms", _MAX_LATENCY.value, True),
            cli.float_list("max_flash_kb", _MAX_FLASH.value, True),
            cli.float_list("max_sram_kb", _MAX_SRAM.value, True),
            cli.float_list("max_mflops", _MAX_MFLOPS.value, True)):
        budgets = search.Budgets(lat, fl, sr, mf)
        name = (f"w_flops={wf:g},w_latency={wl:g}" + (f",w_budget={_W_BUDGET.value:g}" if _W_BUDGET.value else "")
                + ("" if dn else ",keep_none") + (f",endgame={eg}" if eg else "")
                + ("" if ew is None else f",endgame_w_latency={ew:g}")
                + (",live_flops" if _LIVE_FLOPS.value else "") + (",classes" if _ENDGAME_CLASSES.value else "")
                + "".join(f",{k}<={v:g}" for k, v in budgets.active().items()))
        try:
            out[name] = search.SearchConfig(w_ntk=_W_NTK.value, w_regions=_W_REGIONS.value, w_flops=wf, w_latency=wl,
                                            w_budget=_W_BUDGET.value, repeats=_REPEATS.value, drop_none=dn,
                                            budgets=budgets, endgame=eg, endgame_w_latency=ew,
                                            live_flops=_LIVE_FLOPS.value, endgame_classes=_ENDGAME_CLASSES.value)
        except ValueError as err:
            raise app.UsageError(str(err)) from None
    return out


def main(argv):
    cli.no_extra_args(argv)
    reference = cli.arch_flag(_ARCH.value)
    for d in _DATASETS.value:
        if d not in inputs.RESOLUTION:
            raise app.UsageError(f"--datasets: unknown dataset {d!r}; known: {', '.join(inputs.RESOLUTION)}")
    if _CACHE_DIR.value:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE_DIR.value))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    proxy_net = _PROXY_NET.values()
    lut = lut_lib.load_lut(_LUT.value)
    bench = benchmark.load_benchmark(_NB201_FILE.value)
    costs = {d: search.SpaceCosts(sk.Skeleton.for_dataset(d, C=_C.value, N=_N.value), lut) for d in _DATASETS.value}

    def make_engine(dataset):
        config = engine_lib.ProxyConfig(dataset=dataset, **proxy_net, ntk_mode=_NTK_MODE.value,
                                        batch_size=_BATCH.value, init=_INIT.value)
        return engine_lib.ProxyEngine(config, _INPUTS.load(dataset))

    grid = configs()
    for name, config in grid.items():
        for d in _DATASETS.value:
            try:
                costs[d].check(config.budgets, search.initial_mask(config), config.require_path)
            except search.BudgetError as err:
                raise app.UsageError(f"{name} on {d}: {err}") from None
    seeds = cli.seed_list("seeds", _SEEDS.value)
    jobs = batch.grid(seeds, _DATASETS.value, grid)
    logging.info("%d searches: %d configurations x %d datasets x %d seeds; results in %s", len(jobs), len(grid),
                 len(_DATASETS.value), len(seeds), _RESULTS.value)
    records = batch.run(jobs, _RESULTS.value, make_engine, benchmark=bench, costs=costs.get,
                        progress=_PROGRESS.value)
    summary = batch.summarize(records)
    ref = {d: search.cell_report(reference, costs[d], bench) for d in _DATASETS.value}
    if len(records) == 1:
        print(search.format_result(records[0]["result"], records[0]["job"]["dataset"]))
    else:
        print(batch.format_summary(summary))
    for d, r in ref.items():
        print(f"reference --arch #{reference.index} on {d}: {r['nb201']['test_accuracy'][d]:.2f}%, "
              f"{r['hardware']['latency_ms']:.1f} ms on {r['hardware']['device']}")
    cli.write_json(_JSON_OUT.value, {"summary": summary, "reference": {"cell": reference.to_string(),
                                                                       "index": reference.index, **ref},
                                     "searches": records})
    if _PLOT_OUT.value:
        d = _DATASETS.value[0]
        found: dict[str, list[int]] = {}
        for r in records:
            if r["job"]["dataset"] == d:
                found.setdefault(r["job"]["name"], []).append(r["result"]["index"])
        plots.found_cells(costs[d].cells["latency_ms"], benchmark.BuiltinBenchmark().test_accuracies(d), found,
                          _PLOT_OUT.value, reference=(f"--arch #{reference.index}", reference.index),
                          ylabel=f"NB201 test accuracy, {d} (%)", title=f"found cells: {lut.device.name}, {d}")


def run() -> None:
    """Console entry point ``micronas-search``."""
    app.run(main)
