"""The verify report's schema (`prov.verify-report.v1`, documented in docs/report-schema.md) and its validator,
which every renderer runs first so a broken verifier can never print or file a malformed report."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from provenance.errors import FormatError

FORMAT = "prov.verify-report.v1"
EXIT_CODES = {"verified": 0, "failed": 1, "error": 2}


class _Opt:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


class _List:
    def __init__(self, item: Any) -> None:
        self.item = item


class _Tuple:
    def __init__(self, *items: Any) -> None:
        self.items = items


class _Enum:
    def __init__(self, *values: Any) -> None:
        self.values = values


class _Pat:
    def __init__(self, pattern: str, what: str, parse: Callable[[str], object] = str) -> None:
        self.regex, self.what, self.parse = re.compile(pattern), what, parse


_DIGEST = _Pat(r"sha256:[0-9a-f]{64}", "a digest 'sha256:<64 hex>'")
_ADDRESS = _Pat(r"0x[0-9a-fA-F]{40}", "an address '0x<40 hex>'")
_HASH = _Pat(r"0x[0-9a-fA-F]{64}", "a hash '0x<64 hex>'")
_HEX = _Pat(r"(0x)?[0-9a-fA-F]+", "hex text")
_TIME = _Pat(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "an ISO-8601 time with a zone",
             lambda text: datetime.fromisoformat(text.replace("Z", "+00:00")))
_STATUS = _Enum("passed", "failed", "skipped")

_SCHEMA: dict[str, Any] = {
    "format": _Enum(FORMAT), "verdict": _Enum(*EXIT_CODES), "verdict_text": str, "exit_code": int,
    "generated_at": _TIME, "prov_version": str,
    "subject": {"path": str, "kind": _Enum("adapter", "checkpoint"), "weights_digest": _Opt(_DIGEST)},
    "chain": {"rpc_url": _Opt(str), "chain_id": _Opt(int), "registry": _Opt(_ADDRESS)},
    "store": {"backend": _Opt(str)},
    "run": _Opt({
        "run_id": _HEX, "owner": _ADDRESS, "register_tx": _HASH, "register_block": int,
        "register_time": _Opt(_TIME), "manifest_cid": str, "manifest_digest": _DIGEST,
        "base_model": {"digest": _DIGEST, "name": _Opt(str)}, "dataset_root": _DIGEST,
        "examples": _Opt(int), "steps_planned": _Opt(int)}),
    "dp": _Opt({
        "mode": _Enum("dp", "non-private"), "noise_multiplier": _Opt(float), "max_grad_norm": _Opt(float),
        "sample_rate": _Opt(float), "delta": _Opt(float), "accountant": _Opt(str), "epsilon_budget": _Opt(float),
        "epsilon_committed": _Opt(float), "epsilon_recomputed": _Opt(float), "steps": int}),
    "lineage": _List({
        "index": int, "step": int, "log_size": int, "log_root": _HEX, "weights_digest": _DIGEST,
        "checkpoint_digest": _DIGEST, "epsilon": _Opt(float), "manifest_cid": str, "tx": _HASH, "block": int,
        "time": _Opt(_TIME), "committer": _ADDRESS, "is_subject": bool}),
    "checks": _List({"id": str, "title": str, "status": _STATUS, "summary": str,
                     "expected": _Opt(str), "found": _Opt(str)}),
    "series": {"step": _List(int), "loss": _List(float), "epsilon": _List(_Tuple(int, float))},
    "replay": _Opt({
        "seed_block": int, "seed_hash": _HASH, "requested": _Pat(r"all|[1-9][0-9]*", "'all' or a count"),
        "segments": _List({
            "from_index": int, "to_index": int, "steps": _Tuple(int, int), "status": _STATUS, "bitwise": bool,
            "weight_distance": _Opt(float),
            "first_divergence": _Opt({"step": int, "field": str, "expected": str, "found": str})})}),
    "not_checked": _List(str),
}


def _bad(where: str, what: str, value: Any) -> FormatError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return FormatError(f"invalid report: field {where!r} must be {what}, got {shown}")


def _check(value: Any, spec: Any, where: str) -> None:
    if isinstance(spec, _Opt):
        if value is None:
            return
        spec = spec.inner
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _bad(where or "report", "an object", value)
        for key, sub in spec.items():
            path = f"{where}.{key}" if where else key
            if key not in value:
                raise FormatError(f"invalid report: field {path!r} is missing")
            _check(value[key], sub, path)
    elif isinstance(spec, _List | _Tuple):
        if not isinstance(value, list | tuple) or (isinstance(spec, _Tuple) and len(value) != len(spec.items)):
            raise _bad(where, "a list" if isinstance(spec, _List) else f"a pair {list(spec.items)}", value)
        for i, item in enumerate(value):
            _check(item, spec.item if isinstance(spec, _List) else spec.items[i], f"{where}[{i}]")
    elif isinstance(spec, _Enum):
        if isinstance(value, bool) or value not in spec.values:
            raise _bad(where, "one of " + ", ".join(map(repr, spec.values)), value)
    elif isinstance(spec, _Pat):
        if not isinstance(value, str) or not spec.regex.fullmatch(value):
            raise _bad(where, spec.what, value)
        try:
            spec.parse(value)  # e.g. a well-shaped but impossible date
        except ValueError:
            raise _bad(where, spec.what, value) from None
    elif spec is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _bad(where, "a finite number", value)
    elif isinstance(value, bool) != (spec is bool) or not isinstance(value, spec):
        raise _bad(where, {str: "text", int: "an integer", bool: "true or false"}[spec], value)


def validate_report(report: dict[str, Any]) -> None:
    """Raise FormatError naming the first missing or invalid field, or a verdict that contradicts the checks."""
    _check(report, _SCHEMA, "")
    verdict, statuses = report["verdict"], [c["status"] for c in report["checks"]]
    if report["exit_code"] != EXIT_CODES[verdict]:
        raise _bad("exit_code", f"{EXIT_CODES[verdict]} for verdict {verdict!r}", report["exit_code"])
    if (verdict == "verified") == ("failed" in statuses) and verdict != "error":
        raise _bad("verdict", "'failed' exactly when a check failed", verdict)
    ids = [c["id"] for c in report["checks"]]
    if len(set(ids)) != len(ids):
        raise _bad("checks", "a list with distinct ids", ids)
    if len(report["series"]["loss"]) != len(report["series"]["step"]):
        raise _bad("series.loss", f"as long as series.step ({len(report['series']['step'])})", "…")
    if sum(bool(c["is_subject"]) for c in report["lineage"]) > 1:
        raise _bad("lineage", "a list with at most one is_subject entry", "several")
