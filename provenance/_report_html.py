"""The HTML audit report: one self-contained page (inline CSS and SVG, no script, no external resource) with the
same content as the terminal text, every value escaped, and the EU AI Act Annex IV section in a `<details>`.
Called by `provenance.report.render_html` with a validated, scrubbed v2 report."""

from __future__ import annotations

import html
import math
import string
from collections.abc import Sequence
from importlib import resources
from typing import Any

from provenance import _report_words as words
from provenance._report_schema import FORMAT

# Banner colours; the browser test looks for them in the screenshot.
VERDICT_COLORS = {"verified": "#17803a", "failed": "#c0262d", "inconclusive": "#5b4a9e", "error": "#b35c00"}


def _e(value: Any) -> str:
    """Escape a report value for HTML text or a quoted attribute; None becomes a muted dash."""
    return '<span class="none">—</span>' if value is None else html.escape(str(value), quote=True)


def _hx(value: str | None, keep: int = 8) -> str:
    """A long hex value shortened, with the whole value in the title attribute (and in the JSON report)."""
    if value is None or len(words.short(value, keep)) == len(value.removeprefix("sha256:")):
        return f'<span class="hex">{_e(value)}</span>'
    return f'<span class="hex" title="{_e(value)}">{_e(words.short(value, keep))}</span>'


def _full(value: str | None) -> str:
    return f'<span class="hex full">{_e(value)}</span>'


def _dl(rows: Sequence[tuple[str, str]], cls: str = "facts") -> str:
    return f'<dl class="{cls}">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _table(head: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], cls: str, empty: str = "") -> str:
    if not rows:
        return f'<p class="empty">{empty or "Nothing to show."}</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f'<tr class="{a}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for a, cells in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _pill(status: str) -> str:
    return f'<span class="pill {_e(status)}">{_e(words.STATUS_WORDS.get(status, status))}</span>'


def _list(items: Sequence[str], cls: str) -> str:
    return f'<ul class="{cls}">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>" if items else ""


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
                   f"budget {_e(words.num(limit))}</text>")
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    out.append(f'<polyline class="series" points="{line}"/>')
    if len(pts) <= 60:
        out += [f'<circle class="dot" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' for x, y in pts]
    return "".join(out) + "</svg>"


def _run_facts(report: dict[str, Any]) -> str:
    run, subject = report["run"], report["subject"]
    marker, audit_rows = _audit(report)
    rows = [*audit_rows, ("File", _e(subject["path"])), ("Kind", _e(subject["kind"])),
            ("Weights digest", _full(subject["weights_digest"])), ("Tensor digest", _full(subject["tensor_digest"])),
            ("Run id in the file's metadata", _full(subject["run_id"])),
            ("Checkpoint in the file's metadata", _e(subject["checkpoint"]))]
    if run is None:
        return marker + _dl(rows) + '<p class="empty">No registry record was found for this file.</p>'
    base, final = run["base_model"], run["finalized"]
    rows += [("Run id", _full(run["run_id"])), ("Run key", _full(run["run_key"])), ("Owner", _full(run["owner"])),
             ("Owner named by the manifest", _full(run["manifest_owner"])),
             ("Registered", f"block {_e(run['register_block'])} · {_e(words.when(run['register_time']))}"),
             ("Registration tx", _full(run["register_tx"])),
             ("Finalised", "not finalised" if final is None else
              f"block {_e(final['block'])} · {_e(words.when(final['time']))} · tx {_hx(final['tx'])}"),
             ("Run manifest CID", _full(run["manifest_cid"])), ("Run manifest digest", _full(run["manifest_digest"])),
             ("Formats", _e(", ".join(f"{k} {v}" for k, v in sorted(run["formats"].items()) if v) or None)),
             ("Base model", _e(base["name"])), ("Base model digest", _full(base["digest"])),
             ("Dataset root", _full(run["dataset_root"])), ("Training examples", _e(run["examples"])),
             ("Planned steps", _e(run["steps_planned"]))]
    return marker + _dl(rows)


def _checks(report: dict[str, Any]) -> str:
    """The checks table, each check once (not-run checks sharing a reason in one row); the expected/found
    columns only when some check has evidence to show."""
    evidence = any(c["expected"] is not None or c["found"] is not None for c in report["checks"])
    rows = []
    for row in words.check_rows(report):
        c = row.checks[0]
        if row.grouped:
            cells = [_pill(row.status), _e(f"{len(row.checks)} checks not run"),
                     _e(row.reason) + '<br><span class="ids">' + _e(", ".join(x["id"] for x in row.checks))
                     + "</span>"] + ["", ""] * evidence
        else:
            cells = [_pill(c["status"]), _e(c["title"]), _e(c["summary"])] + (
                [_full(c["expected"]), _full(c["found"])] if evidence else [])
        rows.append((f"check {_e(row.status)}", cells))
    return _table(["Status", "Check", "Summary"] + ["Expected", "Found"] * evidence, rows, "checks")


def _lineage(report: dict[str, Any]) -> str:
    tensors = any(c["tensor_digest"] for c in report["lineage"])
    rows = [("subject" if c["is_subject"] else "", [
        _e(c["index"]) + ('<span class="tag">this file</span>' if c["is_subject"] else ""), _e(c["step"]),
        _e(c["log_size"]), _hx(c["log_root"]), _hx(c["weights_digest"]), *([_hx(c["tensor_digest"])] * tensors),
        _hx(c["checkpoint_digest"]), _e(words.num(c["epsilon"])), _e(words.num(c["epsilon_recomputed"])),
        _hx(c["manifest_cid"], 6), _hx(c["tx"], 6), _e(c["block"]), _e(words.when(c["time"]).removesuffix(" UTC")),
        _hx(c["committer"], 6)]) for c in report["lineage"]]
    head = ["#", "Step", "Log size", "Log root", "Weights", *(["Tensors"] * tensors), "Checkpoint", "ε",
            "ε recomputed", "Manifest CID", "Tx", "Block", "Time (UTC)", "Committer"]
    note = ('<p class="note">Long values are shortened: hover for the full value, or see <code>prov verify --json'
            "</code>. The highlighted row is the file that was verified.</p>") if rows else ""
    from provenance._report_lineage import diagram

    table = _table(head, rows, "lineage", "No checkpoints: no registry record was found for this file.")
    return diagram(report) + note + (f'<div class="wide">{table}</div>' if rows else table)


def _audit(report: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Who audited, the command, the report id (fact rows), and a marker when the report holds private
    statistics."""
    audit = report.get("audit")
    if not isinstance(audit, dict):
        return "", []
    rows = [("Auditor", _e(audit["auditor"] or "not given (--auditor NAME)")),
            ("Command", f'<code class="full">{_e(audit["command"])}</code>' if audit["command"] else _e(None)),
            ("Report id", _full(audit["report_id"]))]
    marker = ('<p class="private">Contains private statistics (the per-step training loss, in the JSON and in the '
              "loss chart): do not publish this report; <code>prov verify --public</code> writes the publishable "
              "variant.</p>") if audit["statistics"] == "private" else ""
    return marker, rows


def _privacy(report: dict[str, Any]) -> str:
    dp = report["dp"]
    text = f'<p class="lead">{_e(words.privacy_sentence(dp))}</p>'
    extra = words.epsilon_checked_sentence(report)
    text += f"<p>{_e(extra)}</p>" if extra else ""
    if dp is None or dp["mode"] != "dp":
        return text
    keys = [("Accountant", "accountant"), ("Noise multiplier", "noise_multiplier"), ("Clipping norm",
            "max_grad_norm"), ("Sample rate", "sample_rate"), ("δ", "delta"), ("Steps", "steps"),
            ("ε committed", "epsilon_committed"), ("ε recomputed", "epsilon_recomputed"), ("ε budget",
            "epsilon_budget")]
    rows = [(label, _e(words.num(dp[k]).upper() if k == "accountant" else words.num(dp[k]))) for label, k in keys]
    return text + _dl(rows, "facts params")


def _loss(report: dict[str, Any]) -> str:
    series = report["series"]
    if series["loss"] is None:
        return f'<p class="empty">{_e(words.loss_sentence(report))}</p>'
    chart = _chart(list(zip(series["step"], series["loss"], strict=True)), name="loss")
    return chart + f'<p class="note">{_e(words.loss_sentence(report))}</p>'


def _replay(report: dict[str, Any]) -> str:
    replay = report["replay"]
    if replay is None:
        return '<p class="empty">No training steps were replayed.</p>'
    lines = [words.beacon_sentence(replay), *words.environment_lines(replay)]
    intro = (f'<p class="lead">{_e(words.replay_sentence(report))} (requested: {_e(replay["requested"])}).</p>'
             + _list([x for x in lines if x], "plain"))
    rows = []
    for s in replay["segments"]:
        d = s["first_divergence"]
        where = f"step {_e(d['step'])}, " if d and d["step"] is not None else ""
        first = (f"{where}{_e(d['field'])}<br>expected {_full(d['expected'])}<br>found {_full(d['found'])}"
                 if d else "none")
        rows.append((f"check {_e(s['status'])}", [
            _e(words.segment_span(s)), _pill(s["status"]), "yes" if s["bitwise"] else "no", _hx(s["expected"]),
            _hx(s["found"]), _e(words.num(s["weight_distance"])), first]))
    head = ["Segment", "Result", "Bit for bit", "Committed checkpoint", "Rebuilt", "Weight distance",
            "First difference"]
    return intro + _table(head, rows, "replay", "No segments were replayed.")


def _claims(report: dict[str, Any]) -> str:
    rows = [("subject" if c["selected"] else "", [
        _hx(c["run_id"]), _hx(c["run_key"]), _hx(c["owner"], 6), _e(c["index"]), _e(c["block"]),
        _e(words.when(c["time"])), _hx(c["tx"], 6), _e(c["match"]), "shown above" if c["selected"] else "",
        _e(c["note"])]) for c in report["claims"]]
    head = ["Run id", "Run key", "Owner", "Checkpoint", "Block", "Time", "Tx", "Match", "Selected", "Note"]
    return _table(head, rows, "claims", "No on-chain claim of these weights was found.")


def _attestations(report: dict[str, Any]) -> str:
    items = report["attestations"]
    if items is None:
        return '<p class="empty">No attestation registry was consulted.</p>'
    rows = []
    for a in items:
        status = "failed" if a["revoked"] or not a["valid"] else "passed"
        signers = ", ".join(f"{s['name'] or 'unnamed'} ({words.short(s['auditor'])})" for s in a["signers"])
        trust = "trusted: on your --trust-auditors list" if a.get("trusted") else "names self-declared, not trusted"
        rows.append((f"check {status}", [_e(a["number"]), _e(f"{signers} ({trust})"), _pill(status),
                                         "revoked key" if a["revoked"] else "", _e(a["reason"]), _e(a["block"]),
                                         _hx(a["tx"]), _e(a["report_cid"])]))
    head = ["#", "Auditors", "Signature", "Key", "Why invalid", "Block", "Tx", "Report CID"]
    return _table(head, rows, "attestations", "No auditor has attested this checkpoint.")


def _evidence(report: dict[str, Any]) -> str:
    chain = report["chain"]
    return _dl([("Chain id", _e(chain["chain_id"])), ("Genesis block", _full(chain["genesis_hash"])),
                ("Development chain", _e(chain["dev_chain"] or "no")), ("RPC endpoint", _e(chain["rpc"])),
                ("Registry contract", _full(chain["registry"])), ("Registry version", _e(chain["registry_version"])),
                ("Chain id required", _e(chain["expected_chain_id"])),
                ("Registry required", _full(chain["expected_registry"])),
                ("Artifact store", _e(report["store"]["backend"]))])


def _annex(report: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    from provenance._export import annex, render

    if report["verdict"] != "verified" or report["run"] is None:
        return ('<p class="empty">Not produced: Annex IV documentation is drawn only from a verified run, and this '
                f"verification says {_e(report['level']['text'])}.</p>")
    doc = annex.build(report, manifest)
    return ('<details class="annex"><summary>Annex IV point 2, as far as the training record proves it (open)'
            f"</summary>{render.fragment(doc)}</details>")


def _unfinalised(report: dict[str, Any]) -> bool:
    """A verified report (with an audit section) whose run is not finalised: its banner is marked."""
    run = report["run"]
    return report["verdict"] == "verified" and isinstance(run, dict) and run["finalized"] is None \
        and isinstance(report.get("audit"), dict)


def _template(name: str) -> str:
    return resources.files("provenance").joinpath("templates", name).read_text(encoding="utf-8")


def page(report: dict[str, Any], *, manifest: dict[str, Any] | None = None) -> str:
    """The page for a prepared (validated, scrubbed, escaped-on-output) v2 report."""
    verdict, dp, series, level = report["verdict"], report["dp"], report["series"], report["level"]
    from provenance._report_lineage import CSS as LINEAGE_CSS

    css = string.Template(_template("report.css")).substitute(VERDICT_COLORS) + LINEAGE_CSS
    missing = words.not_checked(report)
    warns = words.warnings(report)
    return string.Template(_template("report.html")).substitute(
        css=css, verdict=verdict + (" open" if _unfinalised(report) else ""), word=_e(level["text"]),
        sentence=_e(report["verdict_text"]),
        next_steps=_list(report["next_steps"], "next"), counts=_e(words.counts(report)),
        title=_e(f"{level['text']}: {report['subject']['path']}"),
        warnings=(f'<section id="warnings" class="warnings"><h2>Warnings</h2>{_list(warns, "warnings")}</section>'
                  if warns else ""),
        facts=_run_facts(report), checks=_checks(report), privacy=_privacy(report),
        not_checked=_list(missing, "plain") or '<p class="empty">Nothing beyond the checks above.</p>',
        eps_chart=_chart(series["epsilon"], name="ε", limit=dp and dp["epsilon_budget"], zero=True),
        loss_chart=_loss(report), replay=_replay(report), claims=_claims(report), lineage=_lineage(report),
        attestations=_attestations(report), evidence=_evidence(report), annex=_annex(report, manifest),
        generated=_e(words.when(report["generated_at"])), version=_e(report["prov_version"]), format=_e(FORMAT),
        exit_code=_e(report["exit_code"]))
