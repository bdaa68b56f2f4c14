"""BUILD mirrors the layout: every module, data file, test and launcher has a target.

``bazel query`` checks the file's syntax and rule attributes (see the README); this test checks
what loading does not: that each listed file exists and that nothing is left out.
"""

import fnmatch
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _evaluate_build():
    """Runs BUILD (Starlark is Python-compatible here) with recording stand-ins for the rules."""
    targets = {}

    def rule(kind):
        def record(name, **attrs):
            assert name not in targets, f"duplicate target {name}"
            targets[name] = dict(attrs, kind=kind)
        return record

    names = {k: rule(k) for k in ("py_library", "py_binary", "py_test", "test_suite")}
    names["package"] = lambda **kwargs: None
    names["glob"] = lambda patterns: sorted(p for pat in patterns for p in _files(pat))
    with open(os.path.join(ROOT, "BUILD")) as f:
        exec(compile(f.read(), "BUILD", "exec"), names)
    return targets


def _files(pattern):
    return {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)}


def test_every_source_file_is_in_exactly_one_target_and_exists():
    targets = _evaluate_build()
    listed = {}
    for name, t in targets.items():
        for src in t.get("srcs", []):
            assert os.path.exists(os.path.join(ROOT, src)), f"{name}: {src} does not exist"
            if t["kind"] != "py_test":
                assert src not in listed, f"{src} in both {listed.get(src)} and {name}"
            listed[src] = name
        for d in t.get("data", []):
            if not d.startswith(":") and "*" not in d:
                assert os.path.exists(os.path.join(ROOT, d)), f"{name}: data {d} does not exist"
    python_files = _files("cells/**/*.py") | _files("micronas_jax/**/*.py") | _files(
        "experiments/*.py") | _files("tests/*.py")
    assert python_files - set(listed) == set(), "files with no Bazel target"


def test_target_kinds_mirror_the_layout():
    targets = _evaluate_build()
    assert targets["cells"]["kind"] == targets["micronas_jax"]["kind"] == "py_library"
    assert ":cells" in targets["micronas_jax"]["deps"]  # the layers depend one way
    assert "cells/nb201_order.npy" in targets["cells"]["data"]
    shipped = _files("micronas_jax/**/*.json") | _files("micronas_jax/**/*.csv.gz") | _files("cells/*.npy")
    assert shipped <= set(targets["micronas_jax"]["data"]) | set(targets["cells"]["data"])
    for launcher in _files("experiments/*.py"):
        name = os.path.splitext(os.path.basename(launcher))[0]
        assert targets[name]["kind"] == "py_binary" and targets[name]["srcs"] == [launcher]
    tests = {os.path.splitext(os.path.basename(p))[0] for p in _files("tests/test_*.py")}
    assert {n for n, t in targets.items() if t["kind"] == "py_test"} == tests
    assert {t.lstrip(":") for t in targets["all_tests"]["tests"]} == tests


def test_every_shipped_data_file_is_package_data():
    """A non-editable install ships only what ``[tool.setuptools.package-data]`` names."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    shipped = (_files("cells/*.npy") | _files("micronas_jax/**/*.json") | _files("micronas_jax/**/*.csv.gz")
               | _files("cells/*.md") | _files("micronas_jax/**/*.md"))
    assert shipped
    for path in shipped:
        package, name = os.path.dirname(path).replace("/", "."), os.path.basename(path)
        patterns = package_data.get(package, [])
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{path} is not package data"
