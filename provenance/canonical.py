"""Canonical JSON: the one byte encoding of every hashed document.

UTF-8, keys sorted, no insignificant whitespace, no floats (store numbers that are not integers as strings,
e.g. `repr(float)`, so the bytes never depend on a float printer). Booleans, null, integers, strings, lists and
objects only. Parsing the same bytes back and re-encoding them yields identical bytes.
"""

from __future__ import annotations

import json
from typing import Any

from provenance.errors import FormatError

# Integers outside this range do not survive JSON readers in other languages (JavaScript's 2^53).
_MAX_SAFE = 2**63 - 1


def _check(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -_MAX_SAFE <= value <= _MAX_SAFE:
            raise FormatError(f"canonical JSON: integer at {where} is out of range")
        return
    if isinstance(value, float):
        raise FormatError(f"canonical JSON: float at {where}; encode it as a string (repr) instead")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(f"canonical JSON: non-string key {key!r} at {where}")
            _check(item, f"{where}.{key}")
        return
    raise FormatError(f"canonical JSON: unsupported type {type(value).__name__} at {where}")


def encode(value: Any) -> bytes:
    """The canonical bytes of `value`."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _reject_float(text: str) -> Any:
    raise FormatError(f"canonical JSON: float {text} not allowed")


def _reject_constant(text: str) -> Any:
    raise FormatError(f"canonical JSON: {text} not allowed")


def decode(data: bytes, *, source: str = "document", strict: bool = False) -> Any:
    """Parse JSON bytes from a trust boundary. `strict` also demands the bytes already be canonical."""
    try:
        value = json.loads(
            data.decode("utf-8"), parse_float=_reject_float, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise FormatError(f"{source}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if strict and encode(value) != data:
        raise FormatError(f"{source}: JSON is not in canonical form (sorted keys, no whitespace)")
    return value
