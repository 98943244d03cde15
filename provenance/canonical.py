"""Canonical JSON: the one byte encoding of every hashed document.

UTF-8, keys sorted, no insignificant whitespace, no floats (store numbers that are not integers as strings,
e.g. `repr(float)`, so the bytes never depend on a float printer). Booleans, null, integers, strings, lists and
objects only. Parsing the same bytes back and re-encoding them yields identical bytes.

`decode` reads bytes from a trust boundary and is bounded: at most `MAX_DOCUMENT` bytes (callers may lower it),
nesting at most `MAX_DEPTH` deep (checked by a linear scan *before* the recursive parser runs, so a hostile
`[[[[...` is a FormatError, never a RecursionError), integers within the canonical range, no duplicate keys.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from provenance.errors import FormatError, ProvenanceError

# Integers outside this range do not survive JSON readers in other languages (JavaScript's 2^53).
_MAX_SAFE = 2**63 - 1
MAX_DEPTH = 64  # prov's documents nest 4 levels; Python's parser recurses once per level and fails near 1,000
MAX_DOCUMENT = 64 << 20  # a run or checkpoint manifest is kilobytes; a step-log segment is parsed line by line
_MAX_INT_TEXT = len(str(_MAX_SAFE)) + 1  # digits and sign: anything longer is out of range before int() runs
_BRACKETS = bytes(range(256)).translate(None, b'"[]{}')  # every byte but these is deleted by the depth scan


# py-evm and py-ecc raise Python's recursion limit to 100,000 when imported; with it that high a recursive parse of
# ~200,000-deep input overflows the C stack (a segfault, no report) instead of raising RecursionError.
_SAFE_RECURSION_LIMIT = sys.getrecursionlimit() if sys.getrecursionlimit() <= 10_000 else 1000


def restore_recursion_limit() -> None:
    """Put Python's recursion limit back after importing the chain libraries (web3 pulls in py-evm; BLS needs
    py-ecc): only the in-process py-evm test chain needs the raised limit, and no prov code recurses that deep."""
    if sys.getrecursionlimit() > _SAFE_RECURSION_LIMIT:
        sys.setrecursionlimit(_SAFE_RECURSION_LIMIT)


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
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800" decodes to one) has no UTF-8 form
        raise FormatError("canonical JSON: a string holds a lone UTF-16 surrogate, which is not text") from None


def is_count(value: Any, minimum: int = 0) -> bool:
    """Whether a decoded JSON value is an integer (not a boolean) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _reject_float(text: str) -> Any:
    raise FormatError(f"canonical JSON: float {_short(text)} not allowed")


def _reject_constant(text: str) -> Any:
    raise FormatError(f"canonical JSON: {text} not allowed")


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_TEXT or not -_MAX_SAFE <= (value := int(text)) <= _MAX_SAFE:
        raise FormatError(f"canonical JSON: integer {_short(text)} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"canonical JSON: key {_short(repr(key))} appears twice in one object")
            seen.add(key)
    return value


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def short_repr(value: Any) -> str:
    """`repr(value)` cut to 60 characters, for naming an untrusted value in a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _too_deep(data: bytes) -> bool:
    """Whether `[`/`{` outside strings nest deeper than MAX_DEPTH: a linear scan, no recursion, no parsing.

    For bytes that are not valid JSON the answer may be either; the parser that runs afterwards refuses them.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False  # cannot nest deeper than it has brackets (the common case: no scan)
    # Drop escaped backslashes, then escaped quotes, so every remaining quote opens or closes a string; keep
    # only quotes and brackets; the even-numbered pieces between quotes lie outside strings.
    marks = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _BRACKETS)
    outside = b"".join(marks.split(b'"')[::2])
    depth = deepest = 0
    for byte in outside:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest > MAX_DEPTH


def load_json(data: bytes | str, *, source: str, max_size: int = MAX_DOCUMENT) -> Any:
    """Parse any JSON (floats allowed: not a canonical document) from a trust boundary — a user's file, a tool's
    output — bounded like `decode`: size, nesting (checked before the recursive parser, which would otherwise
    overflow the C stack on a hostile file), one-line FormatError naming `source`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_size:
        raise FormatError(f"{source}: {len(raw)} bytes is more than the {max_size}-byte limit for a document")
    if _too_deep(raw):
        raise FormatError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{source}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise FormatError(f"{source}: JSON nested too deeply") from None


def decode(data: bytes, *, source: str = "document", strict: bool = False, max_size: int = MAX_DOCUMENT) -> Any:
    """Parse JSON bytes from a trust boundary. `strict` also demands the bytes already be canonical.

    Refused with a one-line FormatError naming `source`: more than `max_size` bytes, nesting deeper than
    MAX_DEPTH, malformed JSON, floats, NaN/Infinity, integers outside the canonical range, duplicate keys.
    """
    if len(data) > max_size:
        raise FormatError(f"{source}: {len(data)} bytes is more than the {max_size}-byte limit for a document")
    if _too_deep(data):
        raise FormatError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_reject_float, parse_constant=_reject_constant,
                           parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise FormatError(f"{source}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except FormatError as exc:
        raise FormatError(f"{source}: {exc}") from None
    if strict:
        try:
            canonical = encode(value)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc}") from None
        if canonical != data:
            raise FormatError(f"{source}: JSON is not in canonical form (sorted keys, no whitespace)")
    return value


# Characters a trainer could use to rewrite what an auditor sees: C0/C1 controls (ESC starts terminal sequences,
# CR overwrites a line), DEL, bidirectional overrides and isolates (Trojan Source), line/paragraph separators, BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                                "\u2066-\u2069\ufeff]")
_UNSAFE_NOT_C0 = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control, bidi and separator character shown as a visible escape (`\\x1b`, `\\u202e`), so a
    trainer-supplied string can neither move the cursor nor reorder what is printed around it."""
    return (_UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE).sub(_escaped, text)


def escape_strings(value: Any) -> Any:
    """A copy of a decoded JSON value with `escape_controls` applied to every string (keys included)."""
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, list | tuple):
        return [escape_strings(v) for v in value]
    if isinstance(value, dict):
        return {escape_controls(k) if isinstance(k, str) else k: escape_strings(v) for k, v in value.items()}
    return value


def dumps_for_terminal(value: Any, *, indent: int | None = 2) -> str:
    """JSON text that stays valid JSON and is safe to print: non-ASCII kept readable, but control, bidi and
    separator characters written as `\\uXXXX` escapes (json.dumps already escapes C0 controls)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)  # raw C0 left in `text` is the layout's whitespace
    return _UNSAFE_NOT_C0.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def read_document(path: Path, format_name: str, *, missing: ProvenanceError, what: str = "document") -> dict[str, Any]:
    """A canonical-JSON file whose `format` is `format_name`: `missing` is raised when there is no such file, a
    one-line FormatError when it is not such a document (its other fields are the caller's to check)."""
    try:
        if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block the reader (#22)
            raise FormatError(f"{path}: not a regular file; give the {what} itself")
        if path.is_file() and path.stat().st_size > MAX_DOCUMENT:  # refused before it is read (#22)
            raise FormatError(f"{path}: {path.stat().st_size} bytes is more than a {format_name} {what} can be")
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    doc = decode(data, source=str(path))
    if not isinstance(doc, dict) or doc.get("format") != format_name:
        raise FormatError(f"{path}: not a {format_name} {what}")
    return doc
