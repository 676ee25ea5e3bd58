"""Formatting shared by every output (the report, compare, the terminal): numbers for people and
values for strict JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Lists longer than this are cut in the details table (the full numbers are in verdicts.json).
MAX_LIST_ITEMS = 24


def format_value(value: Any) -> str:
    """Floats to 4 significant digits, lists of numbers joined, None as an em dash."""
    value = _as_python(value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        x = float(value)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if float(x).is_integer() and abs(x) < 1e6:
            return str(int(x))
        return f"{x:.4g}"
    if isinstance(value, (list, tuple)):
        items = list(value)
        shown = ", ".join(format_value(item) for item in items[:MAX_LIST_ITEMS])
        if len(items) > MAX_LIST_ITEMS:
            shown += f", … ({len(items) - MAX_LIST_ITEMS} more)"
        return shown
    return str(value)


def flatten(details: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (key path, formatted value) rows:
    {"a": {"b": 1.23456}} -> [("a.b", "1.235")]; lists of dicts by index: "runs[0].loss"."""
    rows: list[tuple[str, str]] = []
    for key, value in details.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            rows.extend(flatten(value, path) if value else [(path, "{}")])
        elif (isinstance(value, (list, tuple)) and value
              and all(isinstance(item, Mapping) for item in value)):
            for i, item in enumerate(value):
                rows.extend(flatten(item, f"{path}[{i}]"))
        else:
            rows.append((path, format_value(value)))
    return rows


def jsonable(value: Any) -> Any:
    """Strict JSON: arrays and scalars of numpy or torch as Python values, tuples as lists,
    non-finite floats as null (NaN is not JSON and breaks JavaScript parsers), anything else
    unknown as its str."""
    value = _as_python(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _as_python(value: Any) -> Any:
    """numpy / torch arrays and scalars (anything with ``shape`` and ``tolist``) as Python lists
    and numbers; other values unchanged."""
    if hasattr(value, "shape") and hasattr(value, "tolist") and not isinstance(value, type):
        return value.tolist()
    return value
