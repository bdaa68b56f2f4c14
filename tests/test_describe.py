"""The describe library call and its launcher, end to end."""

import json
import os
import subprocess
import sys

import pytest

from micronas_jax import describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_describe_resnet_cell():
    d = describe.describe("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    assert d["index"] == 11472
    assert d["isomorphism"]["representative_index"] == 2528
    assert d["isomorphism"]["class_size"] == 3
    assert d["computed"]["cifar10"]["flops_M"] == pytest.approx(d["nb201"]["flops_M"]["cifar10"])
    assert d["computed"]["ImageNet16-120"]["params_M"] == pytest.approx(
        d["nb201"]["params_M"]["ImageNet16-120"])
    text = describe.format_description(d)
    assert "11472" in text and "93.91" in text


def _run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "describe.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_launcher_writes_json(tmp_path):
    out = tmp_path / "cell.json"
    proc = _run("--arch=6111", f"--json_out={out}")
    assert proc.returncode == 0, proc.stderr
    assert "94.37" in proc.stdout
    data = json.loads(out.read_text())
    assert data["index"] == 6111
    assert data["nb201"]["test_accuracy"]["cifar10"] == pytest.approx(94.373333)


def test_launcher_rejects_a_bad_cell():
    proc = _run("--arch=|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert proc.returncode != 0
    assert "unknown operator 'nor_conv_5x5'" in proc.stderr
