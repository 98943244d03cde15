"""The verify report's schema and its validator (`prov.verify-report.v2`, and v1 so old stored reports still
validate), documented field by field in docs/report-schema.md. Every renderer runs the validator first, so a broken
verifier can never print, file or export a malformed report, nor a verdict its checks contradict."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from provenance.errors import FormatError

FORMAT = "prov.verify-report.v2"
FORMAT_V1 = "prov.verify-report.v1"
EXIT_CODES = {"verified": 0, "failed": 1, "inconclusive": 3, "error": 2}
EXIT_CODES_V1 = {"verified": 0, "failed": 1, "error": 2}
# The v2 checks, in the order the verifier runs them and every renderer shows them.
CHECK_IDS = ("record", "run_manifest", "checkpoint", "history", "step_log", "committers", "chain", "base_model",
             "privacy", "dataset", "steps", "checkpoint_zero", "replay")
# Checks only some subjects have, and the check each comes right after: `merge` exactly for a merged model.
OPTIONAL_CHECKS = {"merge": "checkpoint", "merged_files": "merge"}
LEVEL_WORDS = {"commitments": "VERIFIED (commitments)", "data": "VERIFIED (commitments and data)",
               "full": "VERIFIED (fully replayed)"}
VERDICT_WORDS = {"verified": "VERIFIED", "failed": "FAILED", "inconclusive": "INCONCLUSIVE",
                 "error": "COULD NOT VERIFY"}
DEV_CHAIN_SUFFIX = " — local development chain"
NOT_FINALISED_SUFFIX = " — not finalised: checkpoints may follow"


def level_text(verdict: str, name: str | None, *, replayed: int = 0, segments: int = 0,
               dev_chain: str | None = None, finalized: bool | None = None) -> str:
    """The verdict line (`level.text`): what was proven, e.g. `VERIFIED (replayed 2/30 segments)`; a verified run
    that is not finalised says so (`finalized=False`: later checkpoints may follow, so this is not the run's final
    state); a known development chain appends ` — local development chain`. The verifier and the validator both
    call this."""
    if verdict != "verified":
        word = VERDICT_WORDS[verdict]
    elif name == "sampled":
        word = f"VERIFIED (replayed {replayed}/{segments} segments)"
    else:
        word = LEVEL_WORDS[str(name)]
    if verdict == "verified" and finalized is False:
        word += NOT_FINALISED_SUFFIX
    return word + (DEV_CHAIN_SUFFIX if dev_chain else "")


def finalized_of(report: dict[str, Any]) -> bool | None:
    """Whether the report's run is finalised, for its verdict line; None for reports written before the verdict
    line said so (they have no `audit` section) or without a run."""
    if "audit" not in report or not isinstance(report.get("run"), dict):
        return None
    return report["run"].get("finalized") is not None


# --- the shape language ----------------------------------------------------------------------------------------

class _Opt:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


class _Added(_Opt):
    """A nullable field added to v2 after reports were stored: reports written before may lack it."""


class _List:
    def __init__(self, item: Any) -> None:
        self.item = item


class _Tuple:
    def __init__(self, *items: Any) -> None:
        self.items = items


class _Enum:
    def __init__(self, *values: Any) -> None:
        self.values = values


class _Map:
    """A JSON object with free keys whose values all match `value` (None: any JSON value)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value


class _Pat:
    def __init__(self, pattern: str, what: str, parse: Callable[[str], object] = str) -> None:
        self.regex, self.what, self.parse = re.compile(pattern), what, parse


class _Range:
    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high


_DIGEST = _Pat(r"sha256:[0-9a-f]{64}", "a digest 'sha256:<64 hex>'")
_ADDRESS = _Pat(r"0x[0-9a-fA-F]{40}", "an address '0x<40 hex>'")
_HASH = _Pat(r"0x[0-9a-fA-F]{64}", "a hash '0x<64 hex>'")
_HEX = _Pat(r"(0x)?[0-9a-fA-F]+", "hex text")
_TIME = _Pat(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "an ISO-8601 time with a zone",
             lambda text: datetime.fromisoformat(text.replace("Z", "+00:00")))
_REQUESTED_V1 = _Pat(r"all|[1-9][0-9]*", "'all' or a count")
_REQUESTED = _Pat(r"all|auto|[0-9]+", "'all', 'auto' or a count")
# File name only: a local directory path tells the world where the auditor keeps things.
_FILE_NAME = _Pat(r"[^/\\]+", "a file name without any directory")
# scheme://host[:port], or a word for a node without a URL (`tester`): an RPC URL's path, query and user info
# often carry an API key.
_RPC = _Pat(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\\?#@\s]+|[^/\\?#@\s]+",
            "'scheme://host[:port]' (no path, query or credentials)")
_PROBABILITY = _Range(0.0, 1.0)
_DIVERGENCE_V1 = {"step": int, "field": str, "expected": str, "found": str}
# v2: `step` is null when the difference is not in a step record (a checkpoint file, the replay itself).
_DIVERGENCE = _DIVERGENCE_V1 | {"step": _Opt(int)}

_RUN_V1 = {
    "run_id": _HEX, "owner": _ADDRESS, "register_tx": _HASH, "register_block": int, "register_time": _Opt(_TIME),
    "manifest_cid": str, "manifest_digest": _DIGEST, "base_model": {"digest": _DIGEST, "name": _Opt(str)},
    "dataset_root": _DIGEST, "examples": _Opt(int), "steps_planned": _Opt(int)}
_DP_V1 = {
    "mode": _Enum("dp", "non-private"), "noise_multiplier": _Opt(float), "max_grad_norm": _Opt(float),
    "sample_rate": _Opt(float), "delta": _Opt(float), "accountant": _Opt(str), "epsilon_budget": _Opt(float),
    "epsilon_committed": _Opt(float), "epsilon_recomputed": _Opt(float), "steps": int}
_LINEAGE_V1 = {
    "index": int, "step": int, "log_size": int, "log_root": _HEX, "weights_digest": _DIGEST,
    "checkpoint_digest": _DIGEST, "epsilon": _Opt(float), "manifest_cid": str, "tx": _HASH, "block": int,
    "time": _Opt(_TIME), "committer": _ADDRESS, "is_subject": bool}

_SCHEMA_V1: dict[str, Any] = {
    "format": _Enum(FORMAT_V1), "verdict": _Enum(*EXIT_CODES_V1), "verdict_text": str, "exit_code": int,
    "generated_at": _TIME, "prov_version": str,
    "subject": {"path": str, "kind": _Enum("adapter", "checkpoint"), "weights_digest": _Opt(_DIGEST)},
    "chain": {"rpc_url": _Opt(str), "chain_id": _Opt(int), "registry": _Opt(_ADDRESS)},
    "store": {"backend": _Opt(str)},
    "run": _Opt(_RUN_V1), "dp": _Opt(_DP_V1), "lineage": _List(_LINEAGE_V1),
    "checks": _List({"id": str, "title": str, "status": _Enum("passed", "failed", "skipped"), "summary": str,
                     "expected": _Opt(str), "found": _Opt(str)}),
    "series": {"step": _List(int), "loss": _List(float), "epsilon": _List(_Tuple(int, float))},
    "replay": _Opt({
        "seed_block": int, "seed_hash": _HASH, "requested": _REQUESTED_V1,
        "segments": _List({
            "from_index": int, "to_index": int, "steps": _Tuple(int, int),
            "status": _Enum("passed", "failed", "skipped"), "bitwise": bool, "weight_distance": _Opt(float),
            "first_divergence": _Opt(_DIVERGENCE_V1)})}),
    "not_checked": _List(str),
}

_SCHEMA: dict[str, Any] = {
    "format": _Enum(FORMAT), "verdict": _Enum(*EXIT_CODES), "exit_code": _Enum(*EXIT_CODES.values()),
    "level": {"name": _Opt(_Enum("commitments", "data", "sampled", "full")), "replayed": int, "segments": int,
              "catch_probability": _Opt(_PROBABILITY), "text": str},
    "verdict_text": str, "next_steps": _List(str), "generated_at": _TIME, "prov_version": str,
    "subject": {"path": _FILE_NAME, "kind": _Enum("adapter", "adapter_dir", "checkpoint", "merged"),
                "weights_digest": _Opt(_DIGEST), "tensor_digest": _Opt(_DIGEST), "run_id": _Opt(_HEX),
                "checkpoint": _Opt(int), "files": _Added(_List({"path": _FILE_NAME, "digest": _DIGEST}))},
    "chain": {"chain_id": _Opt(int), "genesis_hash": _Opt(_HASH), "registry": _Opt(_ADDRESS),
              "registry_version": _Opt(_Enum(1, 2, 3)), "rpc": _Opt(_RPC), "dev_chain": _Opt(str),
              "expected_chain_id": _Opt(int), "expected_registry": _Opt(_ADDRESS)},
    "store": {"backend": _Opt(str)},
    "run": _Opt(_RUN_V1 | {
        "run_key": _HEX, "manifest_owner": _Opt(_ADDRESS), "formats": _Map(_Opt(str)),
        "finalized": _Opt({"block": int, "time": _Opt(_TIME), "tx": _HASH, "merged_tensor_digest": _Opt(_DIGEST)})}),
    "claims": _List({"run_key": _HEX, "run_id": _HEX, "owner": _ADDRESS, "index": int, "block": int,
                     "time": _Opt(_TIME), "tx": _HASH, "match": _Enum("weights", "tensors", "merged"), "selected": bool,
                     "note": _Opt(str)}),
    "dp": _Opt(_DP_V1 | {"epsilon_checked": int, "statement": _Added(_List(str))}),
    "lineage": _List(_LINEAGE_V1 | {"tensor_digest": _Opt(_DIGEST), "epsilon_recomputed": _Opt(float)}),
    "checks": _List({"id": str, "title": str, "status": _Enum("passed", "failed", "not_run", "inconclusive"),
                     "summary": str, "expected": _Opt(str), "found": _Opt(str)}),
    "series": {"step": _List(int), "loss": _Opt(_List(float)),
               "loss_status": _Enum("checked", "withheld", "public-v1"), "epsilon": _List(_Tuple(int, float))},
    "replay": _Opt({
        "requested": _REQUESTED,
        "beacon": _Opt({"block": _Opt(int), "hash": _Opt(_HASH), "auditor_seed": _Opt(str),
                        "auditor_seed_origin": _Added(_Enum("given", "drawn")), "confirmations": int,
                        "source": _Enum("chain", "auditor", "chain+auditor")}),
        "candidates": int, "chosen": _List(int), "catch_probability": _Opt(_PROBABILITY),
        "environment": _Opt({"recorded": _Map(), "here": _Map(), "bitwise_possible": bool,
                             "problems": _List(str)}),
        "segments": _List({
            "from_index": _Opt(int), "to_index": int, "steps": _Tuple(int, int),
            "status": _Enum("passed", "failed", "inconclusive"), "bitwise": bool, "expected": _DIGEST,
            "found": _Opt(_DIGEST), "weight_distance": _Opt(float), "first_divergence": _Opt(_DIVERGENCE)})}),
    "warnings": _List(str),
    "not_checked": _List(str),
    "audit": _Added({"auditor": _Opt(str), "command": _Opt(str), "report_id": _Opt(_DIGEST),
                     "statistics": _Enum("private", "none")}),
    "attestations": _Opt(_List({
        "number": int, "tx": _HASH, "block": int, "report_cid": _Opt(str),
        "signers": _List({"auditor": _ADDRESS, "name": _Opt(str)}), "valid": bool, "reason": _Opt(str),
        "revoked": bool})),
}


# --- checking a value against a shape --------------------------------------------------------------------------

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
                if isinstance(sub, _Added):
                    continue
                raise FormatError(f"invalid report: field {path!r} is missing")
            _check(value[key], sub, path)
    elif isinstance(spec, _Map):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(where, "an object", value)
        for key, item in value.items():
            if spec.value is not None:
                _check(item, spec.value, f"{where}.{key}")
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
    elif isinstance(spec, _Range):
        _check(value, float, where)
        if not spec.low <= value <= spec.high:
            raise _bad(where, f"a number from {spec.low} to {spec.high}", value)
    elif spec is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _bad(where, "a finite number", value)
    elif isinstance(value, bool) != (spec is bool) or not isinstance(value, spec):
        raise _bad(where, {str: "text", int: "an integer", bool: "true or false"}[spec], value)


# --- what the fields must say together --------------------------------------------------------------------------

def _common(report: dict[str, Any], codes: dict[str, int]) -> None:
    verdict = report["verdict"]
    if report["exit_code"] != codes[verdict]:
        raise _bad("exit_code", f"{codes[verdict]} for verdict {verdict!r}", report["exit_code"])
    ids = [c["id"] for c in report["checks"]]
    if len(set(ids)) != len(ids):
        raise _bad("checks", "a list with distinct ids", ids)
    if sum(bool(c["is_subject"]) for c in report["lineage"]) > 1:
        raise _bad("lineage", "a list with at most one is_subject entry", "several")


def _semantics_v1(report: dict[str, Any]) -> None:
    _common(report, EXIT_CODES_V1)
    verdict, statuses = report["verdict"], [c["status"] for c in report["checks"]]
    if (verdict == "verified") == ("failed" in statuses) and verdict != "error":
        raise _bad("verdict", "'failed' exactly when a check failed", verdict)
    if len(report["series"]["loss"]) != len(report["series"]["step"]):
        raise _bad("series.loss", f"as long as series.step ({len(report['series']['step'])})", "…")


def _verdict_agrees(report: dict[str, Any]) -> None:
    verdict, checks = report["verdict"], report["checks"]
    statuses = {c["status"] for c in checks}
    rules = {"failed": ("failed" in statuses, "'failed' only when some check failed"),
             "inconclusive": ("failed" not in statuses and "inconclusive" in statuses,
                              "'inconclusive' only when no check failed and some check is inconclusive"),
             "verified": (not statuses & {"failed", "inconclusive"} and checks[0]["status"] == "passed"
                          and report["run"] is not None,
                          "'verified' only when the record was found and no check failed or is inconclusive"),
             "error": ("failed" not in statuses, "'error' only when no check failed (a failed check is 'failed')")}
    holds, rule = rules[verdict]
    if not holds:
        raise _bad("verdict", rule, verdict)


def _check_order(report: dict[str, Any]) -> None:
    expected = list(CHECK_IDS)
    if report["subject"]["kind"] == "merged":
        expected.insert(expected.index(OPTIONAL_CHECKS["merge"]) + 1, "merge")
        if any(c["id"] == "merged_files" for c in report["checks"]):  # reports stored before #20 lack it
            expected.insert(expected.index(OPTIONAL_CHECKS["merged_files"]) + 1, "merged_files")
    known = [c["id"] for c in report["checks"] if c["id"] in CHECK_IDS or c["id"] in OPTIONAL_CHECKS]
    if known != expected:
        raise _bad("checks", "every check id in the order " + ", ".join(expected), known)
    merge = [c["status"] for c in report["checks"] if c["id"] == "merge"]
    if report["verdict"] == "verified" and merge and merge[0] != "passed":
        raise _bad("verdict", "'verified' for a merged model only when its merge check passed", report["verdict"])


def _level_agrees(report: dict[str, Any]) -> None:
    level, verdict = report["level"], report["verdict"]
    name, replayed, segments = level["name"], level["replayed"], level["segments"]
    if (name is None) != (verdict != "verified"):
        raise _bad("level.name", "set exactly when the verdict is 'verified'", name)
    if not 0 <= replayed <= segments:
        raise _bad("level.replayed", f"between 0 and level.segments ({segments})", replayed)
    if name in ("commitments", "data") and replayed:
        raise _bad("level.replayed", f"0 at level {name!r}", replayed)
    if name == "sampled" and not replayed:
        raise _bad("level.replayed", "at least 1 at level 'sampled'", replayed)
    if name == "full" and replayed != segments:
        raise _bad("level.replayed", f"every segment ({segments}) at level 'full'", replayed)
    if name == "sampled" and report["replay"] is None:
        raise _bad("replay", "an object at level 'sampled'", None)
    text = level_text(verdict, name, replayed=replayed, segments=segments, dev_chain=report["chain"]["dev_chain"],
                      finalized=finalized_of(report))
    if level["text"] != text:
        raise _bad("level.text", repr(text), level["text"])


def _parts_agree(report: dict[str, Any]) -> None:
    series = report["series"]
    if series["loss"] is not None and len(series["loss"]) != len(series["step"]):
        raise _bad("series.loss", f"as long as series.step ({len(series['step'])})", "…")
    if series["loss_status"] == "withheld" and series["loss"] is not None:
        raise _bad("series.loss", "null when loss_status is 'withheld'", "a list")
    step_format = ((report["run"] or {}).get("formats") or {}).get("step") or "prov.step.v1"
    if series["loss_status"] == "public-v1" and step_format != "prov.step.v1":
        raise _bad("series.loss_status", f"'checked' or 'withheld' for a {step_format} run", "public-v1")
    if sum(bool(c["selected"]) for c in report["claims"]) > 1:
        raise _bad("claims", "a list with at most one selected claim", "several")
    beacon = (report["replay"] or {}).get("beacon")
    if beacon is not None:
        if "chain" in beacon["source"] and (beacon["block"] is None or beacon["hash"] is None):
            raise _bad("replay.beacon", f"a block and hash for source {beacon['source']!r}", beacon)
        if "auditor" in beacon["source"] and beacon["auditor_seed"] is None:
            raise _bad("replay.beacon.auditor_seed", f"set for source {beacon['source']!r}", None)


def validate_report(report: dict[str, Any]) -> None:
    """Raise FormatError naming the first missing or invalid field, or a verdict, level or exit code that
    contradicts the checks. Accepts v2 and (for old stored reports) v1."""
    if isinstance(report, dict) and report.get("format") == FORMAT_V1:
        _check(report, _SCHEMA_V1, "")
        _semantics_v1(report)
        return
    _check(report, _SCHEMA, "")
    _common(report, EXIT_CODES)
    _check_order(report)
    _verdict_agrees(report)
    _level_agrees(report)
    _parts_agree(report)
