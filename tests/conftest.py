"""Shared fixtures: the shipped benchmark table, loaded once per session."""

import pytest

from micronas_jax import benchmark


@pytest.fixture(scope="session")
def table() -> benchmark.Table:
    return benchmark.load_table()
