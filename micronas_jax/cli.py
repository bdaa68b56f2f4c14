"""What every absl launcher in ``experiments/`` does the same way."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from cells import space


def no_extra_args(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")


def arch_flag(value: str) -> space.Cell:
    """The cell named by ``--arch`` (cell string or index); a bad one is a usage error naming it."""
    try:
        return space.as_cell(value)
    except space.CellError as err:
        raise app.UsageError(f"--arch: {err}") from None


def float_list(flag: str, values: Sequence[str], allow_none: bool = False) -> list[float | None]:
    """A list flag's values as floats (a usage error naming the flag if one is not a number); an
    empty list gives ``[None]`` (no limit) with ``allow_none``."""
    try:
        out: list[float | None] = [float(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{flag}: {values} are not numbers") from None
    return out or ([None] if allow_none else [])


def seed_list(flag: str, values: Sequence[str]) -> list[int]:
    """A list flag of seeds and inclusive ranges ('0', '0,3,7', '0-9') as ints, in order."""
    out = []
    for v in values:
        lo, sep, hi = v.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(v)])
        except ValueError:
            raise app.UsageError(f"--{flag}: {v!r} is not a seed or a range like 0-9") from None
    return out


@dataclasses.dataclass(frozen=True)
class InputFlags:
    """The ``--data_path`` and ``--synthetic`` flags: where a launcher's images come from."""

    data_path: flags.FlagHolder
    synthetic: flags.FlagHolder

    def load(self, dataset: str):
        """The ``inputs.ImageSource`` the flags name, shaped for ``dataset``."""
        from micronas_jax import inputs
        return inputs.load_images(dataset, self.data_path.value, self.synthetic.value)


def define_input_flags() -> InputFlags:
    """Defines ``--data_path`` and ``--synthetic`` (at a launcher's import, like any absl flag)."""
    # Imported here, not at the top, so that the launchers without images (LUT, describe) stay
    # free of JAX.
    from micronas_jax import inputs
    return InputFlags(
        flags.DEFINE_string("data_path", None, "Local dataset folder; default: synthetic inputs."),
        flags.DEFINE_enum("synthetic", "gaussian", list(inputs.SYNTHETIC), "Synthetic inputs without "
                          "--data_path: 'gaussian' (white noise) or 'natural' (1/f^2 natural-image spectrum)."))


@dataclasses.dataclass(frozen=True)
class ProxyNetworkFlags:
    """The ``--proxy_C`` and ``--proxy_N`` flags: the NTK network's width and depth."""

    C: flags.FlagHolder
    N: flags.FlagHolder

    def values(self) -> dict[str, int]:
        """``{'C': ..., 'N': ...}`` for ``ProxyConfig``; a value below 1 is a usage error naming its flag."""
        for holder in (self.C, self.N):
            if holder.value < 1:
                raise app.UsageError(f"--{holder.name} must be a positive integer, got {holder.value}")
        return {"C": self.C.value, "N": self.N.value}


def define_proxy_network_flags() -> ProxyNetworkFlags:
    """Defines ``--proxy_C`` and ``--proxy_N`` (TE-NAS's NTK network: C=3, N=1)."""
    return ProxyNetworkFlags(
        flags.DEFINE_integer("proxy_C", 3, "NTK network's first-stage width (TE-NAS: 3)."),
        flags.DEFINE_integer("proxy_N", 1, "NTK network's cells per stage (TE-NAS: 1). Deeper networks show what a "
                             "cell's lack of a residual path costs the deployed network (N=5), at more time."))


def write_json(path: str | os.PathLike | None, result: Any) -> None:
    """Writes ``result`` as indented JSON to ``path`` (nothing when no path was given)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
