"""The built-in NB201 table and the official-file adapter."""

import gzip
import importlib.resources
import importlib.util

import numpy as np
import pytest

from cells import space
from micronas_jax import benchmark


def test_published_optima(table):
    # NB201's published 200-epoch optima (test accuracy, %).
    c10 = table.test_accuracy["cifar10"]
    assert int(np.argmax(c10)) == 6111
    assert c10.max() == pytest.approx(94.3733, abs=1e-4)
    assert table.test_accuracy["cifar100"].max() == pytest.approx(73.513, abs=1e-3)
    assert table.test_accuracy["ImageNet16-120"].max() == pytest.approx(47.311, abs=1e-3)


def test_query_by_string_index_and_cell():
    bench = benchmark.BuiltinBenchmark()
    s = space.from_index(6111).to_string()
    by_index, by_string = bench.query(6111), bench.query(s)
    assert by_index == by_string == bench.query(space.parse(s)) == bench.query("6111")
    assert by_index.arch_str == s
    assert by_index.test_accuracy["cifar10"] == pytest.approx(94.373333)
    assert set(by_index.test_accuracy) == set(benchmark.DATASETS)
    # Isomorphic cells were trained separately, so they may differ; the record follows the index.
    assert bench.test_accuracies("cifar100").shape == (15625,)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        bench.test_accuracies("svhn")


def _write_table(path, transform):
    shipped = importlib.resources.files("micronas_jax.data") / benchmark.TABLE_FILE
    text = gzip.decompress(shipped.read_bytes()).decode()
    path.write_bytes(gzip.compress(transform(text).encode()))
    return path


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda t: t.replace("c100_test_200ep", "c100_acc", 1), "lacks column(s) ['c100_test_200ep']"),
        (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "has 15624 rows"),
        (lambda t: t.replace(",93.660000,", ",nan,", 1), "column c10_test_200ep = 'nan'"),
        (lambda t: t.replace("\n1,|", "\n7,|", 1), "arch_idx '7', expected 1"),
    ],
)
def test_corrupt_tables_are_reported(tmp_path, transform, message):
    path = _write_table(tmp_path / "t.csv.gz", transform)
    with pytest.raises(benchmark.BenchmarkDataError) as info:
        benchmark.load_table(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_and_missing_tables(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(benchmark.BenchmarkDataError, match="cannot be read"):
        benchmark.load_table(bad)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        benchmark.load_table(tmp_path / "nowhere.csv")


class _FakeNB201API:
    """Answers like nas_201_api.NASBench201API, from the built-in table."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def query_index_by_arch(self, arch):
        return int(np.flatnonzero(self.table.arch_str == arch)[0])

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append((dataset, hp, is_random))
        return {"test-accuracy": self.table.test_accuracy[dataset][index]}

    def get_cost_info(self, index, dataset):
        flops = self.table.flops_M.get(dataset, self.table.flops_M["cifar10"])[index]
        return {"flops": flops, "params": self.table.params_M[dataset][index], "latency": 0.0}


def test_official_adapter_maps_the_api(table):
    fake = _FakeNB201API(table)
    official = benchmark.OfficialBenchmark("NAS-Bench-201-v1_1-096897.pth", api=fake)
    rec, builtin = official.query(11472), benchmark.BuiltinBenchmark().query(11472)
    assert rec.test_accuracy == builtin.test_accuracy
    assert rec.params_M == builtin.params_M
    assert rec.source == "NAS-Bench-201-v1_1-096897.pth"
    assert set(fake.calls) == {(d, "200", False) for d in benchmark.DATASETS}


def test_official_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        benchmark.load_benchmark(tmp_path / "missing.pth")
    present = tmp_path / "nb201.pth"
    present.write_bytes(b"")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match=r"micronas-jax\[nb201\]") as info:
            benchmark.load_benchmark(present)
        assert "torch" in str(info.value) or "nas_201_api" in str(info.value)
