"""Audit reports of `prov verify`: check the report dict, render it as terminal text or as one HTML file.

The report dict (format `prov.verify-report.v1`, documented in docs/report-schema.md) is exactly what
`prov verify --json` prints. Its values may come from untrusted sources (manifests fetched from IPFS), so the HTML
escapes every value taken from the report, loads no external resource and runs no script.
"""

from __future__ import annotations

import html
import math
import os
import re
import string
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from provenance._report_schema import EXIT_CODES, FORMAT, validate_report
from provenance.fsutil import atomic_write

__all__ = ["EXIT_CODES", "FORMAT", "privacy_sentence", "render_html", "render_text", "validate_report",
           "write_html"]

WIDTH = 100
VERDICT_WORDS = {"verified": "VERIFIED", "failed": "FAILED", "error": "COULD NOT VERIFY"}
# Banner colours; the browser test looks for them in the screenshot.
VERDICT_COLORS = {"verified": "#17803a", "failed": "#c0262d", "error": "#b35c00"}
_STATUS_WORDS = {"passed": "passed", "failed": "FAILED", "skipped": "skipped"}
_ANSI = {"verified": "1;32", "passed": "32", "failed": "1;31", "error": "1;33", "skipped": "33", "head": "1"}
# Control characters and bidirectional overrides: untrusted text must not drive a terminal or reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# --- shared wording ---------------------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """A copy of a report with unsafe characters in its text shown as escapes (`\\x1b`, `\\u202e`)."""
    if isinstance(value, str):
        return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    return [_clean(item) for item in value] if isinstance(value, list) else value


def _num(value: Any) -> str:
    """A number as a person writes it: `1.0`, `0.05`, `1e-05`, `3.215`; `—` for unknown."""
    if value is None:
        return "—"
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 7 else f"{value:.4g}"
    return str(value)


def _when(value: str | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(value: str, keep: int = 8) -> str:
    body = value.removeprefix("sha256:")
    return body if len(body) <= 2 * keep + 2 else f"{body[:keep + 2 * body.startswith('0x')]}…{body[-4:]}"


def _counts(report: dict[str, Any]) -> str:
    statuses = [c["status"] for c in report["checks"]]
    parts = [f"{statuses.count(s)} {s}" for s in ("passed", "failed", "skipped")]
    return f"{len(statuses)} checks: " + ", ".join(parts)


def privacy_sentence(dp: dict[str, Any] | None) -> str:
    """The privacy guarantee in one or two plain sentences."""
    if dp is None:
        return "Differential privacy: unknown (the run's privacy settings could not be read)."
    if dp["mode"] == "non-private":
        return "Not private: trained without differential privacy."
    committed, recomputed, budget = dp["epsilon_committed"], dp["epsilon_recomputed"], dp["epsilon_budget"]
    eps = recomputed if recomputed is not None else committed
    parts = [f"(ε = {_num(eps)}, δ = {_num(dp['delta'])})-DP for each training example" if eps is not None
             else "trained with DP-SGD, but no ε was recorded"]
    if dp["accountant"]:
        parts.append(f"{dp['accountant'].upper()} accountant")
    for key, label in (("noise_multiplier", "noise multiplier"), ("max_grad_norm", "clipping")):
        if dp[key] is not None:
            parts.append(f"{label} {_num(dp[key])}")
    rate = f"sample rate {_num(dp['sample_rate'])} over " if dp["sample_rate"] is not None else ""
    parts.append(f"{rate}{dp['steps']} steps")
    text = "Differential privacy: " + ", ".join(parts) + "."
    if committed is not None and recomputed is not None and not math.isclose(committed, recomputed, rel_tol=1e-6):
        text += f" The trainer committed ε = {_num(committed)}; recomputed from its parameters: {_num(recomputed)}."
    if budget is None:
        return text + " No ε budget was set."
    if eps is None:
        return text + f" Budget {_num(budget)}: unknown whether it was kept."
    return text + f" Budget {_num(budget)}: " + ("within budget." if eps <= budget else "OVER BUDGET.")


# --- terminal text ----------------------------------------------------------------------------------------------

def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, WIDTH, initial_indent=first or pad, subsequent_indent=pad) or [first.rstrip()]


def _text_lineage(report: dict[str, Any]) -> list[str]:
    lineage, run = report["lineage"], report["run"]
    if not lineage:
        return ["Lineage: none (no registry record was found for this file)."]
    base = run["base_model"] if run else None
    named = f"{base['name'] or 'unnamed'} ({_short(base['digest'], 12)})" if base else "unknown"
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
                + (f"ε {_num(c['epsilon']):<7} " if eps else "") + f"block {c['block']}  {_when(c['time'])}")
        lines.append(line + ("  ← this file" if c["is_subject"] else ""))
    if len(lineage) - 1 > last:
        lines.append(f"  … {len(lineage) - 1 - last} more …")
    if subject is None:
        lines.append(f"  → this file  {report['subject']['weights_digest'] or '(not hashed)'}")
    return lines


def _signers(item: dict[str, Any]) -> str:
    return ", ".join(f"{s['name'] or 'unnamed'} ({_short(s['auditor'])})" for s in item["signers"])


def _text_attestations(report: dict[str, Any]) -> list[str]:
    items = report["attestations"] or []
    if not items:
        return ["Auditor attestations: none anchored for this checkpoint."]
    lines = ["Auditor attestations (they inform; the verdict above is about the lineage)"]
    for a in items:
        state = "valid" if a["valid"] else f"INVALID: {a['reason']}"
        lines += _wrap(f"#{a['number']} by {_signers(a)}, block {a['block']}: {state}", 4, "  - ")
    return lines


def render_text(report: dict[str, Any], *, color: bool = False) -> str:
    """The terminal summary: verdict, one line per check, lineage, privacy, and what was not checked."""
    validate_report(report)
    report = _clean(report)

    def paint(text: str, key: str) -> str:
        return f"\033[{_ANSI[key]}m{text}\033[0m" if color else text

    verdict, subject, run = report["verdict"], report["subject"], report["run"]
    lines = [f"{paint(VERDICT_WORDS[verdict], verdict)} — {report['verdict_text']}", _counts(report), ""]
    lines += _wrap(subject["path"], 9, "File     ")
    lines.append(f"Weights  {subject['weights_digest'] or '(not hashed)'}")
    if run:
        lines.append(f"Run      {_short(run['run_id'])}, registered by {_short(run['owner'])} "
                     f"in block {run['register_block']}")
    lines += ["", paint("Checks", "head")]
    for c in report["checks"]:
        lines.append(f"  {paint(_STATUS_WORDS[c['status']].ljust(7), c['status'])}  {c['title']}")
        lines += _wrap(c["summary"] or "(no reason given)", 11)
        for label in ("expected", "found"):
            if c["status"] == "failed" and c[label] is not None:
                lines += _wrap(c[label], 21, f"           {label:<9} ")
    lines += ["", *_text_lineage(report), "", *_wrap(privacy_sentence(report["dp"]), 0), ""]
    lines += [*_text_attestations(report), ""] if report.get("attestations") is not None else []
    lines.append("Not checked:" + ("" if report["not_checked"] else " nothing."))
    for item in report["not_checked"]:
        lines += _wrap(item, 4, "  - ")
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    """Escape a report value for HTML text or a quoted attribute; None becomes a muted dash."""
    return '<span class="none">—</span>' if value is None else html.escape(str(value), quote=True)


def _hx(value: str | None, keep: int = 8) -> str:
    """A long hex value shortened, with the whole value in the title attribute (and in the JSON report)."""
    if value is None or len(_short(value, keep)) == len(value.removeprefix("sha256:")):
        return f'<span class="hex">{_e(value)}</span>'
    return f'<span class="hex" title="{_e(value)}">{_e(_short(value, keep))}</span>'


def _full(value: str | None) -> str:
    return f'<span class="hex full">{_e(value)}</span>'


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _table(head: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], cls: str, empty: str = "") -> str:
    if not rows:
        return f'<p class="empty">{empty or "Nothing to show."}</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f'<tr class="{a}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for a, cells in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _pill(status: str) -> str:
    return f'<span class="pill {_e(status)}">{_e(_STATUS_WORDS.get(status, status))}</span>'


def _ticks(lo: float, hi: float, *, whole: bool = False) -> list[float]:
    raw = ((hi - lo) or abs(hi) or 1.0) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    step = max(step, 1.0) if whole else step
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, max(last, first + 1) + 1)]


def _chart(points: Sequence[Sequence[float]], *, name: str, limit: float | None = None, zero: bool = False) -> str:
    """An inline SVG line chart of (step, value) points, with an optional dashed limit line."""
    pts = [(float(x), float(y)) for x, y in points]
    if not pts:
        return f'<p class="empty">No {_e(name)} values were recorded.</p>'
    w, h, left, right, top, bottom = 520, 230, 54, 14, 14, 40
    ys = [y for _, y in pts] + ([limit] if limit is not None else []) + ([0.0] if zero else [])
    xt = _ticks(min(x for x, _ in pts), max(x for x, _ in pts), whole=True)
    yt = _ticks(min(ys), max(ys))

    def sx(x: float) -> float:
        return left + (x - xt[0]) / (xt[-1] - xt[0]) * (w - left - right)

    def sy(y: float) -> float:
        return h - bottom - (y - yt[0]) / (yt[-1] - yt[0]) * (h - top - bottom)

    out = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{_e(name)} by training step">']
    for y in yt:
        out.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in xt:
        out.append(f'<text class="tick" x="{sx(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x:g}</text>')
    out.append(f'<text class="axis" x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">training step</text>')
    if limit is not None:
        out.append(f'<line class="limit" x1="{left}" x2="{w - right}" y1="{sy(limit):.1f}" y2="{sy(limit):.1f}"/>'
                   f'<text class="limit-label" x="{w - right - 4}" y="{sy(limit) - 5:.1f}" text-anchor="end">'
                   f"budget {_e(_num(limit))}</text>")
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    out.append(f'<polyline class="series" points="{line}"/>')
    if len(pts) <= 60:
        out += [f'<circle class="dot" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' for x, y in pts]
    return "".join(out) + "</svg>"


def _run_facts(report: dict[str, Any]) -> str:
    run, subject = report["run"], report["subject"]
    rows = [("File", _e(subject["path"])), ("Kind", _e(subject["kind"])),
            ("Weights digest", _full(subject["weights_digest"]))]
    if run is None:
        return _dl(rows) + '<p class="empty">No registry record was found for this file.</p>'
    base = run["base_model"]
    rows += [("Run id", _full(run["run_id"])), ("Owner", _full(run["owner"])),
             ("Registered", f"block {_e(run['register_block'])} · {_e(_when(run['register_time']))}"),
             ("Registration tx", _full(run["register_tx"])), ("Run manifest CID", _full(run["manifest_cid"])),
             ("Run manifest digest", _full(run["manifest_digest"])), ("Base model", _e(base["name"])),
             ("Base model digest", _full(base["digest"])), ("Dataset root", _full(run["dataset_root"])),
             ("Training examples", _e(run["examples"])), ("Planned steps", _e(run["steps_planned"]))]
    return _dl(rows)


def _checks(report: dict[str, Any]) -> str:
    """The checks table; the expected/found columns only when some check has evidence to show."""
    evidence = any(c["expected"] is not None or c["found"] is not None for c in report["checks"])
    rows = [(f"check {_e(c['status'])}", [_pill(c["status"]), _e(c["title"]), _e(c["summary"])]
             + ([_full(c["expected"]), _full(c["found"])] if evidence else [])) for c in report["checks"]]
    return _table(["Status", "Check", "Summary"] + ["Expected", "Found"] * evidence, rows, "checks")


def _lineage(report: dict[str, Any]) -> str:
    rows = [("subject" if c["is_subject"] else "", [
        _e(c["index"]) + ('<span class="tag">this file</span>' if c["is_subject"] else ""), _e(c["step"]),
        _e(c["log_size"]), _hx(c["log_root"]), _hx(c["weights_digest"]),
        _hx(c["checkpoint_digest"]), _e(_num(c["epsilon"])), _hx(c["manifest_cid"], 6), _hx(c["tx"], 6),
        _e(c["block"]), _e(_when(c["time"]).removesuffix(" UTC")), _hx(c["committer"], 6)])
        for c in report["lineage"]]
    head = ["#", "Step", "Log size", "Log root", "Weights", "Checkpoint", "ε", "Manifest CID", "Tx", "Block",
            "Time (UTC)", "Committer"]
    note = ('<p class="note">Long values are shortened: hover for the full value, or see <code>prov verify --json'
            "</code>. The highlighted row is the file that was verified.</p>") if rows else ""
    return note + _table(head, rows, "lineage", "No checkpoints: no registry record was found for this file.")


def _privacy(report: dict[str, Any]) -> str:
    dp, text = report["dp"], f'<p class="lead">{_e(privacy_sentence(report["dp"]))}</p>'
    if dp is None or dp["mode"] != "dp":
        return text
    keys = [("Accountant", "accountant"), ("Noise multiplier", "noise_multiplier"), ("Clipping norm",
            "max_grad_norm"), ("Sample rate", "sample_rate"), ("δ", "delta"), ("Steps", "steps"),
            ("ε committed", "epsilon_committed"), ("ε recomputed", "epsilon_recomputed"), ("ε budget",
            "epsilon_budget")]
    rows = [(label, _e(_num(dp[k]).upper() if k == "accountant" else _num(dp[k]))) for label, k in keys]
    return text + _dl(rows).replace('class="facts"', 'class="facts params"')


def _replay(report: dict[str, Any]) -> str:
    replay = report["replay"]
    if replay is None:
        return '<p class="empty">No training steps were replayed.</p>'
    last_commit = max((c["block"] for c in report["lineage"]), default=-1)
    unpredictable = ("a value not known when the checkpoints were committed" if replay["seed_block"] > last_commit
                     else "the block of the last commitment itself, as no later block existed yet (a later "
                          "verification draws from a later, unpredictable block)")
    intro = (f"<p>Segments were chosen from the hash of block {_e(replay['seed_block'])} "
             f"({_hx(replay['seed_hash'])}), {unpredictable}. Requested: {_e(replay['requested'])}.</p>")
    rows = []
    for s in replay["segments"]:
        d = s["first_divergence"]
        first = (f"step {_e(d['step'])}, {_e(d['field'])}<br>expected {_full(d['expected'])}<br>"
                 f"found {_full(d['found'])}") if d else "none"
        rows.append((f"check {_e(s['status'])}", [
            f"checkpoint {_e(s['from_index'])} → {_e(s['to_index'])}",
            f"{_e(s['steps'][0])}–{_e(s['steps'][1] - 1)}", _pill(s["status"]),
            "yes" if s["bitwise"] else "no", _e(_num(s["weight_distance"])), first]))
    head = ["Segment", "Steps", "Result", "Bit for bit", "Weight distance", "First divergence"]
    return intro + _table(head, rows, "replay", "No segments were replayed.")


def _attestations_html(report: dict[str, Any]) -> str:
    items = report.get("attestations")
    if items is None:
        return '<p class="empty">No attestation registry was consulted.</p>'
    rows = [(f"check {'passed' if a['valid'] else 'failed'}", [
        _e(a["number"]), _e(_signers(a)), _pill("passed" if a["valid"] else "failed"), _e(a["reason"]),
        _e(a["block"]), _hx(a["tx"]), _e(a["report_cid"])]) for a in items]
    head = ["#", "Auditors", "Signature", "Why invalid", "Block", "Tx", "Report CID"]
    return _table(head, rows, "attestations", "No auditor has attested this checkpoint.")


def _template(name: str) -> str:
    return resources.files("provenance").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page an auditor can file: inline CSS and SVG, no scripts, no external resources."""
    validate_report(report)
    report = _clean(report)
    verdict, dp, series, chain = report["verdict"], report["dp"], report["series"], report["chain"]
    css = string.Template(_template("report.css")).substitute(
        {k: VERDICT_COLORS[k] for k in ("verified", "failed", "error")})
    items = "".join(f"<li>{_e(item)}</li>" for item in report["not_checked"])
    return string.Template(_template("report.html")).substitute(
        css=css, verdict=verdict, word=_e(VERDICT_WORDS[verdict]), sentence=_e(report["verdict_text"]),
        counts=_e(_counts(report)), title=_e(f"{VERDICT_WORDS[verdict]}: {report['subject']['path']}"),
        facts=_run_facts(report), checks=_checks(report), privacy=_privacy(report),
        not_checked=f"<ul>{items}</ul>" if items else '<p class="empty">Nothing: every check ran.</p>',
        eps_chart=_chart(series["epsilon"], name="ε", limit=dp and dp["epsilon_budget"], zero=True),
        loss_chart=_chart(list(zip(series["step"], series["loss"], strict=True)), name="loss"),
        replay=_replay(report), lineage=_lineage(report), attestations=_attestations_html(report),
        evidence=_dl([("Chain id", _e(chain["chain_id"])), ("RPC URL", _e(chain["rpc_url"])),
                      ("Registry contract", _full(chain["registry"])),
                      ("Artifact store", _e(report["store"]["backend"]))]),
        generated=_e(_when(report["generated_at"])), version=_e(report["prov_version"]), format=_e(FORMAT),
        exit_code=_e(report["exit_code"]))


def write_html(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Render the report and write it to `path` atomically (readers never see half a file)."""
    atomic_write(path, render_html(report).encode("utf-8"))
