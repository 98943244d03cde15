"""The Annex IV document as Markdown, as an HTML fragment (also shown, collapsed, in the HTML audit report), as a
self-contained HTML page, and as JSON. Every value is escaped for the format it lands in: values come from a
report whose text may originate in untrusted manifests."""

from __future__ import annotations

import html
import json
import re
import string
from importlib import resources

from provenance._export.annex import ANNEX_FORMAT, AnnexIV
from provenance.canonical import escape_controls

TITLE = "EU AI Act Annex IV technical documentation"
INTRO = ("Technical documentation under Article 11(1) and Annex IV of Regulation (EU) 2024/1689, as far as the "
         "training record of this model proves it. Each value names its source. Fields marked \u201cto be completed "
         "by the provider\u201d cannot come from a training record: a person must write them.")
# What GFM acts on mid-line: emphasis, code, links and images (`[`), HTML, table cells, strikethrough.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: str) -> str:
    """Plain text as inert Markdown: one line, every character Markdown or HTML would act on escaped, control and
    bidi characters shown as escapes (#22: a trainer's text must not reorder what a reader of the form sees)."""
    return _MD_SPECIAL.sub(r"\\\1", escape_controls(" ".join(text.split())))


def markdown(doc: AnnexIV) -> str:
    lines = [f"# {TITLE}", "", md(INTRO), "",
             f"- **Model file:** {md(doc.subject)}", f"- **Weights digest:** {md(doc.weights_digest or '—')}",
             f"- **Verification:** {md(doc.level)} (prov {md(doc.prov_version)}, {md(doc.generated_at)})",
             f"- **Document format:** {ANNEX_FORMAT}", ""]
    for point in doc.points:
        lines += [f"## Annex IV {point.ref} — {md(point.title)}", "", "| Field | Value | Source |", "|---|---|---|"]
        lines += [f"| {md(e.label)} | {md(e.value)} | {md(e.source)} |" for e in point.entries]
        lines.append("")
    lines += ["## To be completed by the provider", ""]
    lines += [f"- **Annex IV {md(t.ref)}** — {md(t.title)}: _{md(t.what)}_" for t in doc.todo]
    return "\n".join(lines) + "\n"


def _e(text: str) -> str:
    return html.escape(escape_controls(text), quote=True)


def fragment(doc: AnnexIV, *, heading: str = "h3") -> str:
    """The document's body as HTML (no script, no external resource)."""
    out = [f'<p class="note">{_e(INTRO)}</p>']
    for point in doc.points:
        rows = "".join(f"<tr><td>{_e(e.label)}</td><td>{_e(e.value)}</td><td class=\"source\">{_e(e.source)}</td>"
                       "</tr>" for e in point.entries)
        out.append(f"<{heading}>Annex IV {_e(point.ref)} — {_e(point.title)}</{heading}>"
                   '<table class="annex"><thead><tr><th>Field</th><th>Value</th><th>Source</th></tr></thead>'
                   f"<tbody>{rows}</tbody></table>")
    todo = "".join(f'<li><strong>Annex IV {_e(t.ref)}</strong> — {_e(t.title)}: <em class="todo">{_e(t.what)}'
                   "</em></li>" for t in doc.todo)
    out.append(f'<{heading}>To be completed by the provider</{heading}><ul class="todo">{todo}</ul>')
    return "".join(out)


def page(doc: AnnexIV) -> str:
    """A self-contained HTML page of the document, in the audit report's style."""
    css = resources.files("provenance").joinpath("templates", "annex.css").read_text(encoding="utf-8")
    facts = (f"<p>Model file <strong>{_e(doc.subject)}</strong> · weights <code>{_e(doc.weights_digest or '—')}"
             f"</code> · {_e(doc.level)} · prov {_e(doc.prov_version)} · {_e(doc.generated_at)}</p>")
    template = resources.files("provenance").joinpath("templates", "annex.html").read_text(encoding="utf-8")
    return string.Template(template).substitute(css=css, title=_e(TITLE), facts=facts,
                                                body=fragment(doc, heading="h2"), format=ANNEX_FORMAT)


def as_json(doc: AnnexIV) -> str:
    return json.dumps(doc.to_json(), indent=2, ensure_ascii=False) + "\n"
