"""MCU hardware model: LUT format, latency, memory, calibration, profiling harness."""

import copy
import csv
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import calibrate, harness, latency, memory
from micronas_jax.hardware import lut as lut_lib

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def _uniform(op):
    return f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|"


# ---------------------------------------------------------------- latency: the README's figures

@pytest.mark.parametrize(
    "cell, ms",
    [
        (_uniform("nor_conv_3x3"), 2060),
        (_uniform("nor_conv_1x1"), 433),
        (_uniform("avg_pool_3x3"), 516),
        (_uniform("skip_connect"), 195),
        (_uniform("none"), 76),
        (RESNET, 738),
    ],
)
def test_reproduces_the_tables_readme(cell, ms):
    est = latency.estimate_latency(cell)  # default: STM32F746, C=16, N=5, 32x32, latency bound
    assert round(est.total_ms) == ms
    assert not est.estimated


def test_breakdown_sums_to_total():
    for cell in (RESNET, 6111, 0, 1651):
        est = latency.estimate_latency(cell)
        assert est.total_ms == pytest.approx(est.overhead_ms + sum(c.ms for c in est.ops), rel=1e-12)
        assert sum(est.terms.values()) == pytest.approx(sum(c.ms for c in est.ops), rel=1e-12)
        assert sum(est.by_unit().values()) == pytest.approx(sum(c.ms for c in est.ops), rel=1e-12)


def test_resnet_cell_by_hand():
    # Two conv3x3 edges (relu + conv) and two skips (0->3, 2->3); node 2 gets one live input (the
    # 0->2 edge is none), node 3 gets two, so one addition; the none edges cost nothing.
    lut = lut_lib.load_lut()
    cyc = lambda op, c, h, k=0: lut.entries[lut_lib.OpKey(op, c, c, h, h, k, 1)]  # noqa: E731
    cell_ms = sum(5 * (2 * (cyc("relu_q7", c, h) + cyc("conv3x3", c, h, 3)) + 2 * cyc("memcpy", c, h)
                       + cyc("add_s8", c, h)) for c, h in ((16, 32), (32, 16), (64, 8)))
    empty = latency.estimate_latency(_uniform("none")).total_ms
    assert latency.estimate_latency(RESNET).total_ms == pytest.approx(empty + cell_ms, rel=1e-12)


def test_dead_edges_dropped_or_executed():
    # Node 1 is fed by a conv but feeds nothing that reaches the output: a dead edge.
    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    live = latency.live_edges(space.parse(cell).matrix)
    assert live.tolist() == [False, False, False, True, False, False]
    dropped = latency.estimate_latency(cell)
    lut = lut_lib.load_lut()
    eager = lut_lib.parse_lut(dict(lut.to_json(), device=dict(lut.to_json()["device"], dead_edges="executed")))
    executed = latency.estimate_latency(cell, eager)
    assert executed.total_ms > dropped.total_ms
    assert "conv3x3" in executed.terms and "conv3x3" not in dropped.terms


def test_vectorised_table_equals_the_walk():
    table = latency.latency_table()
    lat = table.latency(space.all_matrices())
    for i in np.random.default_rng(0).choice(space.NUM_CELLS, 200, replace=False):
        assert lat[i] == pytest.approx(latency.estimate_latency(int(i)).total_ms, rel=1e-12)


def test_other_skeletons_and_devices():
    for dataset in sk.DATASETS:
        for C in (8, 16, 32):
            skeleton = sk.Skeleton.for_dataset(dataset, C=C)
            est = latency.estimate_latency(6111, skeleton=skeleton)
            assert est.total_ms > 0 and not est.estimated
    tput = lut_lib.load_lut(os.path.join(os.path.dirname(lut_lib.__file__), "stm32f746_cmsisnn_s8_tput.json"))
    assert latency.estimate_latency(6111, tput).total_ms < latency.estimate_latency(6111).total_ms


def test_missing_entry_is_named_or_estimated():
    skeleton = sk.Skeleton(C=24)  # widths 24/48/96: not in the table
    with pytest.raises(lut_lib.MissingEntryError) as info:
        latency.estimate_latency(6111, skeleton=skeleton)
    assert "stem_conv3x3(cin=3, cout=24, hin=32, hout=32, k=3, stride=1)" in str(info.value)
    est = latency.estimate_latency(6111, skeleton=skeleton, allow_estimate=True)
    assert est.estimated and any(c.estimated for c in est.ops)
    # Interpolates between C=16 and C=32.
    lo = latency.estimate_latency(6111, skeleton=sk.Skeleton(C=16)).total_ms
    hi = latency.estimate_latency(6111, skeleton=sk.Skeleton(C=32)).total_ms
    assert lo < est.total_ms < hi


# ---------------------------------------------------------------- LUT format and validation

def _doc():
    return copy.deepcopy(lut_lib.load_lut().to_json())


def _write(tmp_path, doc):
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="v0"), "format must be 'micronas-lut/1'"),
        (lambda d: d.pop("overhead_ms"), "missing field 'overhead_ms'"),
        (lambda d: d.update(overhead_ms=-1), "overhead_ms must be non-negative"),
        (lambda d: d["device"].update(clock_mhz=0), "clock_mhz must be positive"),
        (lambda d: d["device"].pop("name"), "device.name must be a non-empty string"),
        (lambda d: d["device"].update(dead_edges="maybe"), "device.dead_edges must be one of"),
        (lambda d: d["entries"][3].update(op="conv5x5"), "entry 3: unknown operator 'conv5x5'"),
        (lambda d: d["entries"][4].pop("cout"), "entry 4 (" ),
        (lambda d: d["entries"][5].update(hin=-3), "hin must be a non-negative integer, got -3"),
        (lambda d: d["entries"][6].update(ms=float("nan")), "ms must be a finite number"),
        (lambda d: d["entries"][7].pop("ms"), "has neither 'ms' nor 'cycles'"),
        (lambda d: d["entries"].append(dict(d["entries"][0])), "duplicate entry for"),
        (lambda d: d.update(entries={}), "'entries' must be a list"),
    ],
)
def test_malformed_luts(tmp_path, mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(lut_lib.LUTError) as info:
        lut_lib.load_lut(_write(tmp_path, doc))
    assert message in str(info.value)
    assert "lut.json" in str(info.value)


def test_unreadable_luts(tmp_path):
    with pytest.raises(lut_lib.LUTError, match="not valid JSON"):
        lut_lib.load_lut(_write(tmp_path, "{not json"))
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        lut_lib.load_lut(tmp_path / "nope.json")


def test_round_trip_and_cycles(tmp_path):
    lut = lut_lib.load_lut()
    path = tmp_path / "copy.json"
    lut.save(path)
    again = lut_lib.load_lut(path)
    assert again.entries == pytest.approx(lut.entries) and again.device == lut.device
    key = lut_lib.OpKey("conv3x3", 16, 16, 32, 32, 3, 1)
    assert lut.entries[key] == pytest.approx(5278881 / 216e3)  # cycles at 216 MHz


def test_incomplete_lut_names_the_missing_operator(tmp_path):
    doc = _doc()
    doc["entries"] = [e for e in doc["entries"] if not (e["op"] == "memcpy" and e["cin"] == 64)]
    lut = lut_lib.load_lut(_write(tmp_path, doc))
    with pytest.raises(lut_lib.MissingEntryError, match=r"memcpy\(cin=64, cout=64, hin=8, hout=8"):
        latency.estimate_latency(RESNET, lut)
    latency.estimate_latency(_uniform("nor_conv_3x3"), lut)  # needs no copy: fine


# ---------------------------------------------------------------- memory

def test_memory_by_hand_resnet_cell():
    # C=4, N=1, 8x8, 10 classes. Feature maps: 4x8x8 = 256 B, 8x4x4 = 128 B, 16x2x2 = 64 B.
    skeleton = sk.Skeleton(C=4, N=1, resolution=8)
    est = memory.estimate_memory(RESNET, skeleton)
    # Flash. Per cell: two conv3x3 (9*C*C weights + 4*C bias + 8*C requant) at C = 4, 8, 16.
    conv3 = lambda ci, co: 9 * ci * co + 12 * co  # noqa: E731
    cells = 2 * (conv3(4, 4) + conv3(8, 8) + conv3(16, 16))
    stem = 27 * 4 + 12 * 4
    red = lambda ci, co: conv3(ci, co) + conv3(co, co) + ci * co + 8 * co  # noqa: E731
    head = 8 * 16 + (16 * 10 + 4 * 10 + 8)
    assert est.flash_bytes == cells + stem + red(4, 8) + red(8, 16) + head
    # SRAM. In the first cell, edge 1->2 (conv3x3) runs while node 0 (needed by 0->3), node 1
    # and node 2 are alive (3 x 256), plus its ReLU copy (256) and im2col (4*4*9 = 144): 1168.
    # The reduction 4->8 peaks at conv_b: x, kept for the shortcut (256), conv_a's output and
    # conv_b's (2 x 128), im2col 4*8*9 = 288: 800 (conv_a: 2 x 256 + 128 + 144 = 784).
    assert est.unit_peaks["cells_0"] == 3 * 256 + 256 + 144
    assert est.unit_peaks["cells_1"] == 800
    assert est.sram_bytes == 1168 and est.peak_unit == "cells_0"
    assert est.peak_step == "edge 1->2 nor_conv_3x3"


def test_memory_by_hand_all_skip_cell():
    skeleton = sk.Skeleton(C=4, N=1, resolution=8)
    est = memory.estimate_memory(_uniform("skip_connect"), skeleton)
    # All six edges live. Edge 1->2 (index 2): node 0 (still read by 0->3), node 1, node 2 and a
    # temporary to add into it: 4. Edge 1->3 (index 4): node 0 is done (last read by 0->3), node
    # 1 is read now, node 2 later (2->3), node 3 accumulates, plus a temporary: 4. Edge 0->2
    # (index 1) writes node 2 directly: nodes 0, 1, 2: 3. Peak: 4 x 256 B.
    assert est.unit_peaks["cells_0"] == 4 * 256
    assert est.flash_bytes == memory.memory_table(skeleton).flash(space.parse(_uniform("none")).matrix)
    steps = memory.cell_step_buffers(latency.live_edges(space.parse(_uniform("skip_connect")).matrix))
    assert steps.tolist() == [2, 3, 4, 4, 4, 3]


def test_memory_vectorised_equals_per_cell():
    table = memory.memory_table()
    m = space.all_matrices()
    flash, sram = table.flash(m), table.sram(m)
    for i in np.random.default_rng(1).choice(space.NUM_CELLS, 200, replace=False):
        est = memory.estimate_memory(int(i))
        assert (est.flash_bytes, est.sram_bytes) == (flash[i], sram[i])
    # Where no edge is dead, flash tracks the parameter count: int8 weights dominate.
    from micronas_jax.hardware import flops
    params = flops.cost_table(sk.Skeleton()).params(m)
    no_dead = (latency.live_edges(m) == (m[..., 0] == 0)).all(-1)
    assert np.corrcoef(flash[no_dead], params[no_dead])[0, 1] > 0.999


# ---------------------------------------------------------------- calibration

def _synthetic_measurements(overhead=3.5):
    lut = lut_lib.load_lut()
    synthetic = lut_lib.parse_lut(dict(lut.to_json(), overhead_ms=overhead))
    return latency.latency_table(synthetic).latency(space.all_matrices()), synthetic


def test_calibration_recovers_a_known_lut_exactly():
    truth, synthetic = _synthetic_measurements()
    rng = np.random.default_rng(0)
    train = rng.choice(space.NUM_CELLS, 60, replace=False)
    model = calibrate.fit(train, truth[train], models=("additive-dropped",))
    table = latency.latency_table(synthetic)
    # The per-operator costs are the LUT's, summed over the network's 15 cells; the constant is
    # the stem, reductions, head and the overhead.
    expected = [table.edge_op_ms[0, o] for o in range(1, 5)] + [table.add_ms]
    np.testing.assert_allclose(model.coef_ms, expected, rtol=1e-7)
    assert model.overhead_ms == pytest.approx(table.fixed_ms + 3.5, rel=1e-7)
    np.testing.assert_allclose(model.latency(space.all_matrices()), truth, rtol=1e-7)
    # Model selection finds an exact model too.
    best = calibrate.fit(train, truth[train])
    assert best.fit["candidates"][best.model]["cv_median_ape"] < 1e-6


def test_calibrated_lut_round_trip(tmp_path):
    truth, _ = _synthetic_measurements()
    train = np.arange(0, space.NUM_CELLS, 150)
    model = calibrate.fit(train, truth[train])
    device = {"name": "synthetic board", "core": "none", "clock_mhz": 100, "runtime": "test",
              "provenance": "test"}
    lut = calibrate.to_lut(model, device)
    lut.save(tmp_path / "cal.json")
    again = lut_lib.load_lut(tmp_path / "cal.json")
    est = latency.estimate_latency(6111, again)
    assert est.total_ms == pytest.approx(truth[6111], rel=1e-6)
    with pytest.raises(ValueError, match="fitted on networks with"):
        latency.estimate_latency(6111, again, sk.Skeleton(C=8))
    bad = dict(again.to_json())
    bad["calibration"] = dict(bad["calibration"], coef_ms=[-1.0] * len(model.coef_ms))
    with pytest.raises(lut_lib.LUTError, match="do not match model"):
        latency.estimate_latency(6111, lut_lib.parse_lut(bad))


def test_calibration_input_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 5 measured cells"):
        calibrate.fit([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="cell 7 has nan"):
        calibrate.fit(np.arange(3, 10), [1, 1, 1, 1, np.nan, 1, 1])
    path = tmp_path / "m.csv"
    path.write_text("arch,ms\n6111,12.5\n|bogus~0|,3\n")
    with pytest.raises(ValueError, match="line 3"):
        calibrate.read_measurements(path)
    path.write_text(f"arch,ms\n6111,12.5\n{RESNET},3\n")
    idx, ms = calibrate.read_measurements(path)
    assert idx.tolist() == [6111, 11472] and ms.tolist() == [12.5, 3.0]


# ---------------------------------------------------------------- profiling harness

def test_harness_covers_every_needed_shape_and_the_default_lut(tmp_path):
    skeletons = [sk.Skeleton.for_dataset(d, C=c) for d in sk.DATASETS for c in (8, 16, 32)]
    keys = harness.write_harness(tmp_path, skeletons)
    lut = lut_lib.load_lut()
    assert set(keys) <= set(lut.entries)  # the shipped table covers these networks
    text = (tmp_path / "micronas_ops.h").read_text()
    assert f"#define MICRONAS_NUM_OPS {len(keys)}" in text
    assert '{"conv3x3", OP_CONV, 16, 16, 32, 32, 3, 1, 1}' in text
    # Every cell's network needs only listed shapes.
    for i in (0, 6111, 11472, 1651):
        needed = {k for _, k in latency.network_ops(skeletons[4], space.from_index(i))}
        assert needed <= set(keys)
    assert "DWT->CYCCNT" in (tmp_path / "micronas_profile.c").read_text()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_harness_compiles_and_its_output_becomes_a_lut(tmp_path):
    keys = harness.write_harness(tmp_path, [sk.Skeleton(C=4, N=1, resolution=8)])
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "arm_nnfunctions_stub.h"),
                tmp_path / "arm_nnfunctions.h")
    exe = tmp_path / "profile"
    subprocess.run(["cc", "-std=c99", "-D_POSIX_C_SOURCE=199309L", "-Wall", "-Werror", "-O1",
                    "-DMICRONAS_HOST", "-I", str(tmp_path), str(tmp_path / "micronas_profile.c"),
                    "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == harness.CSV_HEADER and len(rows) == len(keys)
    device = {"name": "host dry run", "core": "x86", "clock_mhz": 1000, "runtime": "stub",
              "provenance": "test"}
    board = lut_lib.lut_from_rows(rows, device, cost="cycles")
    assert set(board.entries) == set(keys)
    est = latency.estimate_latency(RESNET, board, sk.Skeleton(C=4, N=1, resolution=8))
    assert est.total_ms > 0 and not est.estimated
