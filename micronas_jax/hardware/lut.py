"""Latency lookup tables (LUTs): the file format, its validating loader, and lookups.

A LUT is a JSON file::

    {
      "format": "micronas-lut/1",
      "device": {
        "name": "STM32F746 (NUCLEO-F746ZG)",   # free text
        "core": "Cortex-M7",                   # free text
        "clock_mhz": 216,                      # > 0; converts cycles to ms
        "runtime": "CMSIS-NN s8",              # free text
        "sram_kb": 320, "flash_kb": 1024,      # optional: the board's memory, for budgets
        "dead_edges": "dropped",               # 'dropped' (a graph converter removes cell edges
                                               #  that cannot reach the output or be reached from
                                               #  the input) or 'executed' (an eager runtime)
        "provenance": "how the numbers were made"
      },
      "overhead_ms": 0.0,                      # constant per inference, >= 0
      "entries": [                             # one per operator shape
        {"op": "conv3x3", "cin": 16, "cout": 16, "hin": 32, "hout": 32, "k": 3, "stride": 1,
         "cycles": 5278881, "ms": 24.439}      # cycles and/or ms (ms wins when both are given)
      ],
      "calibration": {...}                     # optional, written by ``calibrate.py``
    }

Operator names (``LUT_OPS``) follow the CMSIS-NN accounting of the NB201 skeleton: a cell's
conv edge is ``relu_q7`` + ``conv1x1``/``conv3x3`` (BatchNorm folded), a pool edge
``avgpool3x3``, a skip edge ``memcpy``; ``add_s8`` is one element-wise addition; reduction
blocks use the ``res_*`` operators; the head is ``relu_q7`` + ``gap{H}x{H}`` + ``fc_s8``.

Pure Python + NumPy.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

FORMAT = "micronas-lut/1"
DEAD_EDGE_MODES = ("dropped", "executed")
LUT_OPS = (
    "stem_conv3x3", "conv1x1", "conv3x3", "avgpool3x3", "add_s8", "relu_q7", "memcpy",
    "res_conv3x3_s2", "res_conv3x3_s1", "res_avgpool2x2_s2", "res_conv1x1", "res_conv1x1_s2",
    "fc_s8",
)
_GAP = re.compile(r"^gap(\d+)x\1$")
KEY_FIELDS = ("op", "cin", "cout", "hin", "hout", "k", "stride")
DEFAULT_LUT = "stm32f746_cmsisnn_s8.json"


class LUTError(ValueError):
    """A malformed LUT file or entry."""


class MissingEntryError(LUTError, KeyError):
    """The LUT has no entry for an operator shape a network needs."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, order=True)
class OpKey:
    """An operator shape: the LUT's key."""

    op: str
    cin: int
    cout: int
    hin: int
    hout: int
    k: int
    stride: int

    def __str__(self) -> str:
        return (f"{self.op}(cin={self.cin}, cout={self.cout}, hin={self.hin}, hout={self.hout}, "
                f"k={self.k}, stride={self.stride})")

    @property
    def macs(self) -> int:
        """Multiply-accumulates (conv, fc), window reads (pooling) or elements (element-wise)."""
        if "conv" in self.op:
            return self.k * self.k * self.cin * self.cout * self.hout * self.hout
        if self.op == "fc_s8":
            return self.cin * self.cout
        if "pool" in self.op:
            return self.k * self.k * self.cout * self.hout * self.hout
        if self.op.startswith("gap"):
            return self.cin * self.hin * self.hin
        return self.cout * self.hout * self.hout

    @property
    def elements(self) -> int:
        """Input plus output elements: the memory traffic term of the estimator."""
        return self.cin * self.hin * self.hin + self.cout * self.hout * self.hout


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    core: str
    clock_mhz: float
    runtime: str
    provenance: str
    dead_edges: str = "dropped"
    sram_kb: float | None = None
    flash_kb: float | None = None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A per-operator latency model ``ms = a * macs + b * elements + c``, fitted on the LUT."""

    op: str
    a: float
    b: float
    c: float
    n_fit: int

    def __call__(self, key: OpKey) -> float:
        return max(self.a * key.macs + self.b * key.elements + self.c, 0.0)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches key on the object
class LUT:
    """A validated lookup table.

    Attributes:
      device: the device and runtime the costs belong to.
      overhead_ms: constant latency added once per inference.
      entries: OpKey -> ms.
      calibration: an optional whole-network model fitted from measurements (``calibrate.py``).
      source: where it was loaded from.
    """

    device: Device
    overhead_ms: float
    entries: Mapping[OpKey, float]
    calibration: Mapping[str, Any] | None = None
    source: str = "<memory>"
    _estimates: dict[str, Estimate] = dataclasses.field(default_factory=dict, repr=False)

    def lookup(self, key: OpKey, *, allow_estimate: bool = False) -> tuple[float, bool]:
        """(ms, estimated) for one operator shape.

        Raises:
          MissingEntryError: no entry, and ``allow_estimate`` is off (or no model can be fitted).
        """
        if key in self.entries:
            return self.entries[key], False
        if not allow_estimate:
            raise MissingEntryError(
                f"LUT {self.source} ({self.device.name}) has no entry for {key}; profile it, or "
                "allow estimates from the fitted per-operator model")
        return self.estimator(key.op)(key), True

    def estimator(self, op: str) -> Estimate:
        """Least-squares fit of ``a*macs + b*elements + c`` over this LUT's entries for ``op``."""
        if op not in self._estimates:
            self._estimates[op] = _fit_estimate(self, op)
        return self._estimates[op]

    def to_json(self) -> dict[str, Any]:
        device = {k: v for k, v in dataclasses.asdict(self.device).items() if v is not None}
        out = {
            "format": FORMAT,
            "device": device,
            "overhead_ms": self.overhead_ms,
            "entries": [dict(dataclasses.asdict(k), ms=ms) for k, ms in sorted(self.entries.items())],
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return out

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            f.write(dumps(self.to_json()))


def dumps(doc: Mapping[str, Any]) -> str:
    """A LUT document as JSON text, one entry per line."""
    head = {k: v for k, v in doc.items() if k != "entries"}
    text = json.dumps(head, indent=1)[:-2]
    entries = ",\n  ".join(json.dumps(e) for e in doc["entries"])
    return f'{text},\n "entries": [\n  {entries}\n ]\n}}\n'


def _fit_estimate(lut: LUT, op: str) -> Estimate:
    keys = [k for k in lut.entries if k.op == op]
    if len(keys) < 3:
        raise MissingEntryError(
            f"LUT {lut.source} has {len(keys)} entries for operator {op!r}; estimating an unlisted "
            "shape needs at least 3")
    X = np.array([[k.macs, k.elements, 1.0] for k in keys], np.float64)
    y = np.array([lut.entries[k] for k in keys], np.float64)
    scale = X.max(axis=0)
    coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
    a, b, c = (coef / scale).tolist()
    return Estimate(op, a, b, c, len(keys))


def _is_known_op(op: Any) -> bool:
    return isinstance(op, str) and (op in LUT_OPS or _GAP.match(op) is not None)


def _number(value: Any, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LUTError(f"{what} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise LUTError(f"{what} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def parse_lut(data: Any, source: str = "<memory>") -> LUT:
    """Validates a decoded LUT document; errors name the file, the entry and the field."""
    if not isinstance(data, dict):
        raise LUTError(f"LUT {source}: top level must be an object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise LUTError(f"LUT {source}: format must be {FORMAT!r}, got {data.get('format')!r}")
    for field in ("device", "overhead_ms", "entries"):
        if field not in data:
            raise LUTError(f"LUT {source}: missing field {field!r}")
    dev = data["device"]
    if not isinstance(dev, dict):
        raise LUTError(f"LUT {source}: 'device' must be an object")
    for field in ("name", "core", "runtime", "provenance"):
        if not isinstance(dev.get(field), str) or not dev[field]:
            raise LUTError(f"LUT {source}: device.{field} must be a non-empty string, "
                           f"got {dev.get(field)!r}")
    dead = dev.get("dead_edges", "dropped")
    if dead not in DEAD_EDGE_MODES:
        raise LUTError(f"LUT {source}: device.dead_edges must be one of {DEAD_EDGE_MODES}, "
                       f"got {dead!r}")
    device = Device(
        name=dev["name"], core=dev["core"], runtime=dev["runtime"], provenance=dev["provenance"],
        clock_mhz=_number(dev.get("clock_mhz"), f"LUT {source}: device.clock_mhz", positive=True),
        dead_edges=dead,
        sram_kb=None if dev.get("sram_kb") is None else _number(dev["sram_kb"], "device.sram_kb"),
        flash_kb=None if dev.get("flash_kb") is None else _number(dev["flash_kb"], "device.flash_kb"),
    )
    overhead = _number(data["overhead_ms"], f"LUT {source}: overhead_ms")
    if not isinstance(data["entries"], list):
        raise LUTError(f"LUT {source}: 'entries' must be a list")
    entries: dict[OpKey, float] = {}
    for n, entry in enumerate(data["entries"]):
        where = f"LUT {source}: entry {n}"
        if not isinstance(entry, dict):
            raise LUTError(f"{where} must be an object, got {entry!r}")
        missing = [f for f in KEY_FIELDS if f not in entry]
        if missing:
            raise LUTError(f"{where} ({entry.get('op', '?')}) lacks field(s) {missing}")
        if not _is_known_op(entry["op"]):
            raise LUTError(f"{where}: unknown operator {entry['op']!r}; known: "
                           f"{', '.join(LUT_OPS)}, gapHxH")
        shape = {}
        for f in KEY_FIELDS[1:]:
            v = entry[f]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise LUTError(f"{where} ({entry['op']}): {f} must be a non-negative integer, got {v!r}")
            shape[f] = v
        key = OpKey(entry["op"], **shape)
        if "ms" in entry:
            ms = _number(entry["ms"], f"{where} ({key}): ms")
        elif "cycles" in entry:
            ms = _number(entry["cycles"], f"{where} ({key}): cycles") / (device.clock_mhz * 1e3)
        else:
            raise LUTError(f"{where} ({key}) has neither 'ms' nor 'cycles'")
        if key in entries:
            raise LUTError(f"LUT {source}: duplicate entry for {key}")
        entries[key] = ms
    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise LUTError(f"LUT {source}: 'calibration' must be an object")
    return LUT(device, overhead, entries, calibration, source)


def load_lut(path: str | os.PathLike | None = None) -> LUT:
    """Loads a LUT file (default: the STM32F746 / CMSIS-NN table shipped in the package).

    Raises:
      FileNotFoundError: no such file.
      LUTError: not JSON, or not a valid LUT (the message names the entry and field).
    """
    if path is None:
        return _default_lut()
    return _load(path)


def _load(source) -> LUT:
    try:
        with open(source) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"LUT file not found: {source}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LUTError(f"LUT {source} is not valid JSON: {err}") from None
    return parse_lut(data, str(source))


@functools.cache
def _default_lut() -> LUT:
    return _load(importlib.resources.files("micronas_jax.hardware") / DEFAULT_LUT)


def lut_from_rows(rows: Iterable[Mapping[str, Any]], device: Mapping[str, Any], *,
                  overhead_ms: float = 0.0, cost: str = "cycles", source: str = "<rows>") -> LUT:
    """Builds a LUT from CSV-like rows (e.g. a profiling harness's output).

    Args:
      rows: mappings with the key fields and a ``cost`` column (strings are converted).
      device: the ``device`` object of the format.
      overhead_ms: constant overhead.
      cost: the column holding each entry's cost; 'ms' or 'cycles', or another column read as
        cycles.
    """
    entries = []
    for n, row in enumerate(rows):
        try:
            entry = {"op": row["op"], **{f: int(row[f]) for f in KEY_FIELDS[1:]}}
            value = float(row[cost])
        except (KeyError, ValueError) as err:
            raise LUTError(f"{source} row {n}: {err!r} in {dict(row)}") from None
        entry["ms" if cost == "ms" else "cycles"] = value
        entries.append(entry)
    return parse_lut({"format": FORMAT, "device": dict(device), "overhead_ms": overhead_ms,
                      "entries": entries}, source)
