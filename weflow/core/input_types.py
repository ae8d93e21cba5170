"""The types a run input may declare, and how a value is judged against one.

One table for both moments a value meets its type: a default when a definition is applied
(``InputSpec``) and a given value when a run starts (``execution`` resolving ``input_data``).
The names are also the JSON Schema types of a deployment's run form.
"""

from __future__ import annotations

from typing import Literal

InputType = Literal["string", "integer", "number", "boolean"]

# A bool is an int to isinstance(); weflow takes a bool only as a "boolean" (``True`` is no count).
INPUT_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def mismatch(kind: str, value: object) -> str | None:
    """Why ``value`` is not a ``kind`` input (``expected integer, got bool``), or None when it is one."""
    if (isinstance(value, bool) and kind != "boolean") or not isinstance(value, INPUT_TYPES[kind]):
        return f"expected {kind}, got {type(value).__name__}"
    return None
