"""Tables of the studies as CSV and markdown (written through lib.io.atomic)."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lib.io.atomic import atomic_write_text


def cell(value: Any, digits: int = 4) -> str:
    """A value as table text: floats with `digits` significant digits, None and NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """`rows` as CSV with a header of `columns` (missing values empty, floats at full precision)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if row.get(key) is None else row.get(key)) for key in columns} for row in rows)
    return atomic_write_text(path, text.getvalue())


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A markdown table of already ordered `rows` under `header` (cells through `cell`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
