"""The lineage diagram of the HTML report: base model → checkpoint 0 → … → the verified file (→ finalisation), as
inline SVG (no script, no external resource) that scales to the page, so it is never cut at 1280 or 800 px the way
the wide lineage table is. Every label is escaped; long runs show their first and last checkpoints."""

from __future__ import annotations

import html
import itertools
from typing import Any

from provenance import _report_words as words

PER_ROW = 6
BOX_W, BOX_H, GAP_X, GAP_Y = 150, 56, 34, 30
MAX_SHOWN = 18  # more checkpoints than this: the first and last few, with the count left out in between


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _nodes(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, first line, second line) per box, in order."""
    run, lineage = report["run"] or {}, report["lineage"]
    base = (run.get("base_model") or {}).get("name") or "base model"
    nodes = [("base", "base model", str(base)[:22])]
    shown = lineage
    if len(lineage) > MAX_SHOWN:
        keep = MAX_SHOWN // 2
        shown = [*lineage[:keep], None, *lineage[-keep:]]
    for c in shown:
        if c is None:
            nodes.append(("gap", f"… {len(lineage) - 2 * (MAX_SHOWN // 2)} more …", ""))
            continue
        eps = words.num(c["epsilon"])
        kind = "subject" if c["is_subject"] else "checkpoint"
        second = f"this file · step {c['step']}" if c["is_subject"] else f"step {c['step']} · ε {eps}"
        nodes.append((kind, f"checkpoint {c['index']}", second))
    final = run.get("finalized")
    if run:
        nodes.append(("final", "finalised", f"block {final['block']}") if final else
                     ("open", "not finalised", "checkpoints may follow"))
    return nodes


def diagram(report: dict[str, Any]) -> str:
    """The SVG, or an empty string when there is no lineage to draw."""
    if not report["lineage"]:
        return ""
    nodes = _nodes(report)
    rows = (len(nodes) + PER_ROW - 1) // PER_ROW
    width = PER_ROW * BOX_W + (PER_ROW - 1) * GAP_X + 20
    height = rows * BOX_H + (rows - 1) * GAP_Y + 20
    parts = [f'<svg class="lineage-diagram" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Lineage: base model, {len(report["lineage"])} checkpoints">']
    centres = []
    for i, (kind, first, second) in enumerate(nodes):
        row, col = divmod(i, PER_ROW)
        x, y = 10 + col * (BOX_W + GAP_X), 10 + row * (BOX_H + GAP_Y)
        centres.append((x, y))
        parts.append(f'<g class="node {kind}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
                     f'<text x="{x + BOX_W / 2:.0f}" y="{y + 23}">{_e(first)}</text>'
                     f'<text class="sub" x="{x + BOX_W / 2:.0f}" y="{y + 42}">{_e(second)}</text></g>')
    for (x0, y0), (x1, y1) in itertools.pairwise(centres):
        if y0 == y1:
            parts.append(f'<line class="edge" x1="{x0 + BOX_W}" y1="{y0 + BOX_H / 2:.0f}" x2="{x1 - 4}" '
                         f'y2="{y1 + BOX_H / 2:.0f}"/><polygon class="head" points="{x1 - 4},{y1 + BOX_H / 2 - 5:.0f} '
                         f'{x1},{y1 + BOX_H / 2:.0f} {x1 - 4},{y1 + BOX_H / 2 + 5:.0f}"/>')
        else:  # the next row: down from the end of this row, back to the start of the next
            parts.append(f'<path class="edge" d="M{x0 + BOX_W / 2:.0f} {y0 + BOX_H} '
                         f'V{y0 + BOX_H + GAP_Y / 2:.0f} H{x1 + BOX_W / 2:.0f} V{y1}"/>')
    return "".join(parts) + "</svg>"


CSS = """
.lineage-diagram { width: 100%; max-width: 1200px; height: auto; display: block; margin: 0 0 12px; }
.lineage-diagram rect { fill: #f4f6f8; stroke: #9aa5b1; stroke-width: 1.2; }
.lineage-diagram .subject rect { fill: #fff4c2; stroke: #e0a800; stroke-width: 2.5; }
.lineage-diagram .base rect { fill: #e8eef6; }
.lineage-diagram .final rect { fill: #e3f3e8; stroke: #17803a; }
.lineage-diagram .open rect { fill: #fff; stroke: #b35c00; stroke-dasharray: 5 4; }
.lineage-diagram .gap rect { fill: #fff; stroke: none; }
.lineage-diagram text { font-size: 14px; text-anchor: middle; fill: #1d232b; font-weight: 600; }
.lineage-diagram text.sub { font-size: 12px; fill: #5f6b78; font-weight: 400; }
.lineage-diagram .edge { stroke: #5f6b78; stroke-width: 1.5; fill: none; }
.lineage-diagram .head { fill: #5f6b78; }
"""
