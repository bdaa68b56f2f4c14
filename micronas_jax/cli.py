"""What every absl launcher in ``experiments/`` does the same way."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from absl import app

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


def write_json(path: str | os.PathLike | None, result: Any) -> None:
    """Writes ``result`` as indented JSON to ``path`` (nothing when no path was given)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
