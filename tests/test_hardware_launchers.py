"""The hardware launchers end to end: hardware.py, calibrate.py, bench_hardware.py."""

import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cells import space
from micronas_jax.hardware import latency

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return proc


def test_hardware_one_cell(tmp_path):
    out = tmp_path / "hw.json"
    proc = _run("hardware.py", "--arch=6111", f"--json_out={out}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["index"] == 6111
    assert report["latency"]["total_ms"] == pytest.approx(latency.estimate_latency(6111).total_ms)
    assert report["fits_sram"] is True and report["fits_flash"] is False  # 1.08 MB of int8 weights
    assert "latency by operator" in proc.stdout


def test_hardware_all_cells_writes_csv_plot_and_json(tmp_path):
    paths = {k: tmp_path / f"space.{k}" for k in ("json", "csv", "png")}
    proc = _run("hardware.py", "--all", "--dataset=ImageNet16-120", f"--json_out={paths['json']}",
                f"--csv_out={paths['csv']}", f"--plot_out={paths['png']}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(paths["json"].read_text())
    assert summary["cells"] == 15625 and summary["dataset"] == "ImageNet16-120"
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 15625 and rows[6111]["cell"] == space.from_index(6111).to_string()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    front = summary["pareto_front"]
    assert all(a["latency_ms"] <= b["latency_ms"] and a["accuracy"] < b["accuracy"]
               for a, b in itertools.pairwise(front))
    # The summary lists the front, one line per cell.
    for p in front:
        assert f"{p['accuracy']:>12.2f}{p['index']:>8}  {space.from_index(p['index']).to_string()}" in proc.stdout


def test_hardware_rejects_bad_input(tmp_path):
    proc = _run("hardware.py", "--arch=99999")
    assert proc.returncode != 0 and "out of range 0..15624" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "micronas-lut/1"}')
    proc = _run("hardware.py", f"--lut={bad}")
    assert proc.returncode != 0 and "missing field 'device'" in proc.stderr


def test_calibrate_launcher(tmp_path):
    # Measurements from a known synthetic device: the default LUT plus 4 ms of overhead.
    truth = latency.latency_table().latency(space.all_matrices()) + 4.0
    rng = np.random.default_rng(3)
    cells = rng.choice(space.NUM_CELLS, 40, replace=False)
    measurements = tmp_path / "board.csv"
    with measurements.open("w") as f:
        f.write("arch,ms\n" + "".join(f"{i},{truth[i]}\n" for i in cells))
    lut_out, json_out = tmp_path / "board_lut.json", tmp_path / "fit.json"
    proc = _run("calibrate.py", f"--measurements={measurements}", f"--lut_out={lut_out}",
                "--arch=6111", f"--json_out={json_out}", "--device_name=test board")
    assert proc.returncode == 0, proc.stderr
    fit = json.loads(json_out.read_text())
    assert fit["arch"]["latency_ms"] == pytest.approx(truth[6111], rel=1e-6)
    proc = _run("hardware.py", "--arch=6111", f"--lut={lut_out}", f"--json_out={tmp_path / 'hw.json'}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "hw.json").read_text())["latency"]["total_ms"] == pytest.approx(
        truth[6111], rel=1e-6)


def test_bench_hardware(tmp_path):
    out = tmp_path / "bench.json"
    # A small measured-latency file: a synthetic device for every cell.
    truth = latency.latency_table().latency(space.all_matrices())
    measured = tmp_path / "lat.csv"
    with measured.open("w") as f:
        f.write("arch_idx,lat_synthetic_ms\n" + "".join(f"{i},{t}\n" for i, t in enumerate(truth)))
    proc = _run("bench_hardware.py", "--repeats=2", f"--latency_csv={measured}", "--draws=1",
                f"--json_out={out}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["timings"]["all 15,625 cells, warm"]["min_s"] > 0
    assert result["calibration"]["lat_synthetic_ms"]["selected"]["kendall_tau"] > 0.999
    assert "FLOPs-only" in proc.stdout


@pytest.mark.parametrize("module", ["experiments.hardware", "experiments.calibrate", "experiments.bench_hardware",
                                    "experiments.describe"])
def test_hardware_launchers_do_not_import_jax(module):
    # The LUT and its launchers are pure Python: a TinyML user can cost cells without JAX.
    code = (f"import sys; import {module}\n"
            "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
