"""Audit reports of `prov verify`: check a report, render it as terminal text or as one HTML file, and make the
copy that may be published.

The report (format `prov.verify-report.v2`, docs/report-schema.md) is what `prov verify --json` prints; the verifier
hands it over as a dict or as an object with `to_json()`. Old stored reports (`prov.verify-report.v1`) still
validate and render: they are upgraded to v2 first, saying they predate today's checks. Values may come from
untrusted sources (manifests fetched from IPFS), so every renderer escapes them, and before rendering anything it
scrubs what must never be shown or published: an RPC URL's path, query or credentials (where API keys live), local
directory paths, and any field named like a secret. `publishable()` also drops the per-step loss, which only an
auditor holding the run's secrets may see.
"""

from __future__ import annotations

import copy
import os
import re
import textwrap
from collections.abc import Mapping
from typing import Any

from provenance import _report_words as words
from provenance._report_schema import CHECK_IDS, EXIT_CODES, FORMAT, FORMAT_V1, level_text
from provenance._report_schema import validate_report as _validate
from provenance._report_words import privacy_sentence
from provenance.fsutil import atomic_write

__all__ = ["CHECK_IDS", "EXIT_CODES", "FORMAT", "as_dict", "level_text", "privacy_sentence", "publishable",
           "render_html", "render_public", "render_text", "report_id", "scrub", "seal", "upgrade", "validate_report",
           "write_html"]

WIDTH = 100
_ANSI = {"verified": "1;32", "passed": "32", "failed": "1;31", "error": "1;33", "inconclusive": "1;35",
         "not_run": "33", "head": "1"}
# Control characters and bidirectional overrides: untrusted text must not drive a terminal or reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://(?:[^\s/?#@]*@)?([^\s/?#@)\]}>,;'\"]+)[^\s)\]}>,;'\"]*")
_MULTIADDR = r"(?:ip4|ip6|dns|dns4|dns6|dnsaddr|tcp|udp|p2p|ipfs|http|https|ws|wss|tls)"
_SEGMENT = r"[^\s/\\'\"<>()\[\]{},;:]+"
_PATH = re.compile(rf"(?<![\w.:/\\~…-])(?:~|[A-Za-z]:)?[/\\](?!{_MULTIADDR}[/\\]){_SEGMENT}(?:[/\\]{_SEGMENT})+")
# Field names that hold secrets, as whole underscore-separated words (`api_key`, `noise_seed`; not `tokenizers`).
_SECRET_KEY = re.compile(r"(?:^|[_-])(?:secrets?|password|passphrase|private|api_?key|token|mnemonic|noise_seed|"
                         r"dataset_key)(?:$|[_-])", re.I)


# --- one shape for every renderer -------------------------------------------------------------------------------

def as_dict(report: Any) -> Any:
    """A deep copy of the report as a plain dict: the verifier's report object (`to_json()`) or a dict."""
    to_json = getattr(report, "to_json", None)
    value = to_json() if callable(to_json) else report
    return copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)


def validate_report(report: Any) -> None:
    """Raise FormatError naming the first missing or invalid field (v2, or a stored v1 report)."""
    _validate(as_dict(report))


def _scrub_text(text: str) -> str:
    text = _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}", text)
    return _PATH.sub(lambda m: "…/" + re.split(r"[/\\]", m.group())[-1], text)


def scrub(value: Any) -> Any:
    """A copy of a JSON-like value without URL credentials, paths and queries, local directory paths, or values
    named like secrets (`api_key`, `noise_seed`, `password`, …; `*_commitment` stays, and a section named
    `secrets` is searched rather than dropped)."""
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if isinstance(v, dict | list) or not (
            isinstance(k, str) and _SECRET_KEY.search(k) and not k.endswith("_commitment"))}
    return [scrub(item) for item in value] if isinstance(value, list) else value


def _scrub_report(report: dict[str, Any]) -> dict[str, Any]:
    """The report without URL credentials and paths, local directories, or secret-named fields."""
    report = scrub(report)
    subject = report.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("path"), str):
        subject["path"] = re.split(r"[/\\]", subject["path"].rstrip("/\\"))[-1] or subject["path"]
    chain = report.get("chain")
    if isinstance(chain, dict) and isinstance(chain.get("rpc"), str):
        chain["rpc"] = _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}", chain["rpc"].strip())
        if "://" not in chain["rpc"] and re.search(r"[/\\?#@]", chain["rpc"]):
            chain["rpc"] = "(local)"
    store = report.get("store")
    if isinstance(store, dict) and isinstance(store.get("backend"), str):
        store["backend"] = re.sub(r"^(local)\b.*$", r"\1", store["backend"])
    return report


def _clean(value: Any) -> Any:
    """A copy with unsafe characters in its text shown as escapes (`\\x1b`, `\\u202e`), in keys too (a manifest's
    `formats` names are the trainer's)."""
    if isinstance(value, str):
        return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], value)
    if isinstance(value, dict):
        return {_clean(key) if isinstance(key, str) else key: _clean(item) for key, item in value.items()}
    return [_clean(item) for item in value] if isinstance(value, list) else value


def prepared(report: Any) -> dict[str, Any]:
    """The validated v2 report every renderer and export works from: upgraded if v1, scrubbed, terminal-safe."""
    data = as_dict(report)
    if isinstance(data, dict) and data.get("format") == FORMAT_V1:
        _validate(data)
        data = upgrade(data)
    data = _scrub_report(data) if isinstance(data, dict) else data
    _validate(data)
    return _clean(data)


def publishable(report: Any) -> dict[str, Any]:
    """The copy of a report that may be stored publicly (`--store-report`, `prov verify --public`) or exported: no
    per-step loss (even when the auditor checked it: it is computed from private examples), no local path, no
    credential; its own report id."""
    data = prepared(report)
    data["series"]["loss"] = None
    if isinstance(data.get("audit"), dict):
        data["audit"]["statistics"] = "none"
        seal(data)
    return data


def report_id(report: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the report's JSON with `audit.report_id` null (keys sorted, no spaces, UTF-8): anyone
    holding the JSON recomputes it; a changed byte of content changes it."""
    import hashlib
    import json

    body = copy.deepcopy(dict(report))
    if isinstance(body.get("audit"), dict):
        body["audit"]["report_id"] = None
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(report: dict[str, Any]) -> None:
    """Set `audit.report_id` (last: every other field is final)."""
    if isinstance(report.get("audit"), dict):
        report["audit"]["report_id"] = report_id(report)


# --- old reports ----------------------------------------------------------------------------------------------

def upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """A v1 report in the v2 shape, claiming nothing v1 did not check: level `commitments` at most, the new checks
    not run, and a next step saying to verify again with this version."""
    verdict, run, lineage = old["verdict"], old["run"], old["lineage"]
    subject = next((c for c in lineage if c["is_subject"]), None)
    renamed = {"checkpoint_manifest": "checkpoint"}
    v1 = {renamed.get(c["id"], c["id"]): c for c in old["checks"]}
    checks = [dict(v1[i], id=i, status="not_run" if v1[i]["status"] == "skipped" else v1[i]["status"])
              if i in v1 else {"id": i, "title": i.replace("_", " ").capitalize(), "status": "not_run",
                               "summary": "not part of the v1 verifier that made this report", "expected": None,
                               "found": None} for i in CHECK_IDS]
    dp = None if old["dp"] is None else old["dp"] | {"epsilon_checked": int(old["dp"]["epsilon_recomputed"]
                                                                           is not None)}
    name = "commitments" if verdict == "verified" else None
    return {
        "format": FORMAT, "verdict": verdict, "exit_code": old["exit_code"],
        "level": {"name": name, "replayed": 0, "segments": len(lineage), "catch_probability": None,
                  "text": level_text(verdict, name)},
        "verdict_text": old["verdict_text"],
        "next_steps": [f"Verify the file again with this version of prov: this report was made by prov "
                       f"{old['prov_version']} in the old format ({FORMAT_V1}), before verdict levels, checkpoint-0 "
                       "rebuilds and whole-state replay."],
        "generated_at": old["generated_at"], "prov_version": old["prov_version"],
        "subject": old["subject"] | {"tensor_digest": None, "run_id": None, "checkpoint": None},
        "chain": {"chain_id": old["chain"]["chain_id"], "genesis_hash": None, "registry": old["chain"]["registry"],
                  "registry_version": 1, "rpc": old["chain"]["rpc_url"], "dev_chain": None,
                  "expected_chain_id": None, "expected_registry": None},
        "store": old["store"],
        "run": None if run is None else run | {"run_key": run["run_id"], "manifest_owner": None, "formats": {},
                                               "finalized": None},
        "claims": [] if run is None or subject is None else [{
            "run_key": run["run_id"], "run_id": run["run_id"], "owner": run["owner"], "index": subject["index"],
            "block": subject["block"], "time": subject["time"], "tx": subject["tx"], "match": "weights",
            "selected": True, "note": None}],
        "dp": dp,
        "lineage": [c | {"tensor_digest": None, "epsilon_recomputed": (dp or {}).get("epsilon_recomputed")
                         if c["is_subject"] else None} for c in lineage],
        "checks": checks,
        "series": old["series"] | {"loss_status": "public-v1"},
        "replay": None if old["replay"] is None else _upgrade_replay(old["replay"], lineage),
        "warnings": ["this run's per-step loss and clipped fraction are public in its v1 step log"] if run else [],
        "not_checked": old["not_checked"],
        "attestations": None if old.get("attestations") is None else [
            a | {"revoked": False} for a in old["attestations"]],
    }


def _upgrade_replay(old: dict[str, Any], lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """v1 replay compared the adapter weights only: its segments are shown against the committed weights."""
    last = max((c["block"] for c in lineage), default=old["seed_block"])
    segments = [{
        "from_index": s["from_index"], "to_index": s["to_index"], "steps": s["steps"],
        "status": "inconclusive" if s["status"] == "skipped" else s["status"], "bitwise": s["bitwise"],
        "expected": lineage[s["to_index"]]["weights_digest"],
        "found": lineage[s["to_index"]]["weights_digest"] if s["bitwise"] else None,
        "weight_distance": s["weight_distance"], "first_divergence": s["first_divergence"]}
        for s in old["segments"] if s["to_index"] < len(lineage)]
    return {"requested": old["requested"],
            "beacon": {"block": old["seed_block"], "hash": old["seed_hash"], "auditor_seed": None,
                       "auditor_seed_origin": None, "confirmations": max(0, old["seed_block"] - last),
                       "source": "chain"},
            "candidates": max(0, len(lineage) - 1), "chosen": [s["to_index"] for s in segments],
            "catch_probability": None, "environment": None, "segments": segments}


# --- terminal text ----------------------------------------------------------------------------------------------

def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, WIDTH, initial_indent=first or pad, subsequent_indent=pad) or [first.rstrip()]


def _text_lineage(report: dict[str, Any]) -> list[str]:
    lineage, run = report["lineage"], report["run"]
    if not lineage:
        return ["Lineage: none (no registry record was found for this file)." if run is None else
                "Lineage: not read (the checkpoint history could not be read)."]
    base = run["base_model"] if run else None
    named = f"{base['name'] or 'unnamed'} ({words.short(base['digest'], 12)})" if base else "unknown"
    lines, eps = ["Lineage", f"  base model  {named}"], any(c["epsilon"] is not None for c in lineage)
    subject = next((i for i, c in enumerate(lineage) if c["is_subject"]), None)
    shown = {0, *range(max(0, len(lineage) - 4), len(lineage))} if len(lineage) > 8 else set(range(len(lineage)))
    shown |= {subject} if subject is not None else set()
    iw, sw = (max(len(str(c[k])) for c in lineage) for k in ("index", "step"))
    last = -1
    for i in sorted(shown):
        if i - last > 1:
            lines.append(f"  … {i - last - 1} more …")
        c, last = lineage[i], i
        line = (f"  → checkpoint {c['index']:>{iw}}  step {c['step']:>{sw}}  "
                + (f"ε {words.num(c['epsilon']):<7} " if eps else "") + f"block {c['block']}  {words.when(c['time'])}")
        lines.append(line + ("  ← this file" if c["is_subject"] else ""))
    if len(lineage) - 1 > last:
        lines.append(f"  … {len(lineage) - 1 - last} more …")
    if subject is None:
        lines.append(f"  → this file  {report['subject']['weights_digest'] or '(not hashed)'}")
    return lines


def _text_facts(report: dict[str, Any]) -> list[str]:
    subject, run, chain = report["subject"], report["run"], report["chain"]
    own = [f"run {words.short(subject['run_id'])}" if subject["run_id"] else "",
           f"checkpoint {subject['checkpoint']}" if subject["checkpoint"] is not None else ""]
    meta = f"; its metadata names {', '.join(p for p in own if p)}" if any(own) else ""
    lines = _wrap(f"{subject['path']} ({subject['kind']}{meta})", 9, "File     ")
    lines.append(f"Weights  {subject['weights_digest'] or '(not hashed)'}")
    if subject["tensor_digest"]:
        lines.append(f"Tensors  {subject['tensor_digest']}")
    if run:
        final = f", finalised in block {run['finalized']['block']}" if run["finalized"] else ""
        lines += _wrap(f"run id {words.short(run['run_id'])}, key {words.short(run['run_key'])}, registered by "
                       f"{words.short(run['owner'])} in block {run['register_block']}{final}", 9, "Run      ")
    lines += _wrap(words.chain_sentence(chain), 9, "Chain    ")
    lines.append(f"Store    {report['store']['backend'] or '—'}")
    audit = report.get("audit")
    if isinstance(audit, dict):
        lines.append(f"Auditor  {audit['auditor'] or '(not given: --auditor NAME)'}")
        if audit["command"]:
            lines += _wrap(audit["command"], 9, "Command  ")
        lines.append(f"Report   {audit['report_id'] or '—'}")
        if audit["statistics"] == "private":
            lines += _wrap("PRIVATE: this report holds the run's per-step loss; do not publish it (prov verify "
                           "--public gives the publishable variant)", 9, "Privacy  ")
    return lines


def _column(statuses: list[str]) -> int:
    """The status column's width: 7 (`passed`, `FAILED`, `not run`), 12 when `INCONCLUSIVE` must fit."""
    return max([7, *(len(words.STATUS_WORDS[s]) for s in statuses)])  # none: 7 (max(7) alone is a TypeError)


def _text_checks(report: dict[str, Any], paint: Any) -> list[str]:
    lines = [paint("Checks", "head")]
    width = _column([c["status"] for c in report["checks"]])
    indent = width + 4
    for row in words.check_rows(report):
        word = words.STATUS_WORDS[row.status].ljust(width)
        head = _wrap(row.heading, indent, " " * indent)
        lines += [f"  {paint(word, row.status)}  {head[0].lstrip()}", *head[1:]]
        if row.grouped:
            lines += _wrap("(" + ", ".join(c["id"] for c in row.checks) + ")", indent)
            continue
        c = row.checks[0]
        lines += _wrap(c["summary"] or "(no reason given)", indent)
        for label in ("expected", "found"):
            if c["status"] in ("failed", "inconclusive") and c[label] is not None:
                lines += _wrap(c[label], indent + 10, " " * indent + f"{label:<9} ")
    return lines


def _text_replay(report: dict[str, Any], paint: Any) -> list[str]:
    replay = report["replay"]
    if replay is None:
        return []
    lines = ["Replay", *_wrap(words.replay_sentence(report) or "", 2)]
    for sentence in [words.beacon_sentence(replay), *words.environment_lines(replay)]:
        lines += _wrap(sentence, 4, "  - ") if sentence else []
    width = _column([s["status"] for s in replay["segments"]])
    for s in replay["segments"]:
        how = "bit for bit" if s["bitwise"] else (
            f"weight distance {words.num(s['weight_distance'])}" if s["weight_distance"] is not None else "")
        lines.append(f"  {paint(words.STATUS_WORDS[s['status']].ljust(width), s['status'])}  {words.segment_span(s)}"
                     + (f": {how}" if how else ""))
        d = s["first_divergence"]
        if d:
            where = f"step {d['step']}, " if d["step"] is not None else ""
            lines += _wrap(f"first difference: {where}{d['field']}: expected {d['expected']}, found {d['found']}",
                           width + 4)
    return [*lines, ""]


def _text_attestations(report: dict[str, Any]) -> list[str]:
    items = report["attestations"]
    if items is None:
        return []
    if not items:
        return ["Auditor attestations: none anchored for this checkpoint.", ""]
    lines = ["Auditor attestations (they inform; the verdict above is about the lineage)",
             *_wrap("Names are self-declared: anyone can anchor an attestation under any name. Only the keys on "
                    "your --trust-auditors list say who signed.", 2)]
    trusted = [a for a in items if a.get("trusted")]  # reports stored before #22 carry no `trusted`: untrusted
    others = [a for a in items if not a.get("trusted")]
    if trusted:
        lines.append("  Trusted (every signer's key on your --trust-auditors list):")
        lines += [line for a in trusted for line in _attestation_line(a)]
    if others:
        lines.append("  Not on a trust list (unvetted; the names below are only what the submitter wrote):")
        lines += [line for a in others for line in _attestation_line(a)]
    return [*lines, ""]


def _attestation_line(a: dict[str, Any]) -> list[str]:
    signers = ", ".join(f"\"{s['name'] or 'unnamed'}\" (self-declared; {words.short(s['auditor'])})"
                        for s in a["signers"])
    state = "REVOKED key" if a["revoked"] else "valid" if a["valid"] else f"INVALID: {a['reason']}"
    return _wrap(f"#{a['number']} by {signers}, block {a['block']}: {state}", 6, "    - ")


def _bullets(title: str, items: list[str]) -> list[str]:
    return [title, *(line for item in items for line in _wrap(item, 4, "  - ")), ""] if items else []


def render_text(report: Any, *, color: bool = False) -> str:
    """The terminal summary: the verdict line, what to do next, the checks (each once), replay, lineage, privacy,
    warnings and what was not checked."""
    report = prepared(report)

    def paint(text: str, key: str) -> str:
        return f"\033[{_ANSI[key]}m{text}\033[0m" if color and key in _ANSI else text

    verdict, level = report["verdict"], report["level"]
    lines = [paint(level["text"], verdict)]
    for step in report["next_steps"]:
        lines += _wrap(step, 2, "→ ")
    lines += [*_wrap(report["verdict_text"], 0), words.counts(report), "", *_text_facts(report), "",
              *_text_checks(report, paint), ""]
    lines += _text_replay(report, paint)
    lines += _bullets("Also claimed by", words.other_claims(report))
    lines += [*_text_lineage(report), "", *_wrap(privacy_sentence(report["dp"]), 0)]
    extra = words.epsilon_checked_sentence(report)
    loss = _wrap(words.loss_sentence(report), 0) if report["run"] else []
    lines += [*(_wrap(extra, 0) if extra else []), *loss, ""]
    lines += _bullets("Warnings", words.warnings(report))
    lines += _text_attestations(report)
    missing = words.not_checked(report)
    lines.append("Not checked:" + ("" if missing else " nothing beyond the checks above."))
    lines += [line for item in missing for line in _wrap(item, 4, "  - ")]
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------------------------

def render_html(report: Any, *, manifest: dict[str, Any] | None = None) -> str:
    """One self-contained HTML page an auditor can file: inline CSS and SVG, no script, no external resource.
    `manifest`: the verified run manifest, so Annex IV fields show what it records rather than "not read"."""
    from provenance._report_html import page

    return page(prepared(report), manifest=manifest)


def render_public(report: Any, *, manifest: dict[str, Any] | None = None) -> str:
    """The HTML page of `publishable(report)`: what may be filed or stored where anyone can read it."""
    from provenance._report_html import page

    return page(publishable(report), manifest=manifest)


def write_html(report: Any, path: str | os.PathLike[str], *, public: bool = False,
               manifest: dict[str, Any] | None = None) -> None:
    """Render the report (or its public copy) and write it to `path` atomically (readers never see half a file)."""
    render = render_public if public else render_html
    atomic_write(path, render(report, manifest=manifest).encode("utf-8"))
