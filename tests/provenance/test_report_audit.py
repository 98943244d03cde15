"""What an audit report says about itself (issue #24): who audited, the command, a report id anyone can recompute,
the finalisation state in the verdict line, private statistics marked and a publishable variant one flag away, a
lineage diagram, and print styles that expand every section — checked in headless Chromium at 1280 and 800 px."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from provenance.errors import FormatError
from provenance.report import publishable, render_html, render_text, report_id, seal, validate_report, write_html
from tests.fixtures.report import sample_report
from tests.provenance.test_report_html import _browse, _chromium, _png_top

COMMAND = "prov verify adapter_model.safetensors --bundle run.car --rpc http://127.0.0.1:8545 --auditor 'ACME Audit'"


def audited(*, private: bool = True, finalized: bool = True, **kwargs: Any) -> dict[str, Any]:
    report = sample_report(**kwargs)
    report["audit"] = {"auditor": "ACME Audit", "command": COMMAND, "report_id": None,
                       "statistics": "private" if private and report["series"]["loss"] is not None else "none"}
    if not finalized:
        report["run"]["finalized"] = None
        report["level"]["text"] = report["level"]["text"].replace(
            " — local development chain", " — not finalised: checkpoints may follow — local development chain")
    seal(report)
    return report


def test_the_report_id_is_a_digest_of_the_json_anyone_recomputes() -> None:
    report = audited()
    validate_report(report)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", report["audit"]["report_id"])
    assert report_id(report) == report["audit"]["report_id"]  # the id itself is left out of what it covers
    changed = copy.deepcopy(report)
    changed["checks"][0]["summary"] += "."
    assert report_id(changed) != report["audit"]["report_id"]


def test_private_statistics_are_marked_and_the_public_variant_drops_them() -> None:
    report = audited()
    assert report["audit"]["statistics"] == "private" and report["series"]["loss"]
    text, page = render_text(report), render_html(report)
    assert "PRIVATE: this report holds the run's per-step loss" in text and "ACME Audit" in text
    assert report["audit"]["report_id"] in text and "--bundle run.car" in text
    assert '<p class="private">Contains private statistics' in page and "ACME Audit" in page
    public = publishable(report)
    validate_report(public)
    assert public["series"]["loss"] is None and public["audit"]["statistics"] == "none"
    assert public["audit"]["report_id"] == report_id(public) != report["audit"]["report_id"]
    assert "PRIVATE" not in render_text(public) and 'class="private"' not in render_html(public)


def test_an_unfinalised_run_says_so_in_the_verdict_line() -> None:
    report = audited(finalized=False)
    validate_report(report)
    assert report["level"]["text"].startswith("VERIFIED (replayed 2/30 segments) — not finalised: checkpoints may")
    assert render_text(report).splitlines()[0] == report["level"]["text"]
    wrong = audited(finalized=False)
    wrong["level"]["text"] = sample_report()["level"]["text"]  # as green as a finished run: refused
    with pytest.raises(FormatError, match=r"level\.text"):
        validate_report(wrong)
    stored = sample_report()  # written before the audit section: its verdict line stays valid
    stored["run"]["finalized"] = None
    validate_report(stored)


def test_the_lineage_diagram_is_inline_svg_with_the_subject_highlighted() -> None:
    page = render_html(audited())
    svg = page.split('<svg class="lineage-diagram"')[1].split("</svg>")[0]
    assert '<g class="node subject">' in svg and "this file" in svg and "base model" in svg
    assert "… 13 more …" in svg and "finalised" in svg  # 31 checkpoints: the first and last 9 shown
    assert "<script" not in page.lower() and '<div class="wide"><table class="lineage">' in page
    unfinished = render_html(audited(finalized=False))
    assert '<g class="node open">' in unfinished and "checkpoints may follow" in unfinished


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.mark.slow
def test_chromium_at_1280_and_800_px_and_printing_expands_every_section(tmp_path: Path) -> None:
    _chromium()
    report = audited()
    page = tmp_path / "report.html"
    write_html(report, page)
    dom = _browse(tmp_path, "--dump-dom", page.as_uri())
    assert 'class="lineage-diagram"' in dom and report["audit"]["report_id"] in dom
    for width in (1280, 800):
        shot = tmp_path / f"report-{width}.png"
        _browse(tmp_path, f"--screenshot={shot}", f"--window-size={width},1400", page.as_uri())
        got_width, _, top = _png_top(shot, 60)
        assert got_width == width
        green = sum(1 for p in top[5] if abs(p[0] - 0x17) < 14 and abs(p[1] - 0x80) < 14 and abs(p[2] - 0x3a) < 14)
        assert green > 0.9 * width, f"the verdict banner does not span the page at {width} px"
    # Printing: the collapsed Annex IV section prints as if opened (the same number of pages).
    opened = tmp_path / "opened.html"
    opened.write_text(page.read_text(encoding="utf-8").replace('<details class="annex">',
                                                               '<details class="annex" open>'), encoding="utf-8")
    pdfs = []
    for source in (page, opened):
        pdf = tmp_path / f"{source.stem}.pdf"
        _browse(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", source.as_uri())
        pdfs.append(_pdf_pages(pdf))
    assert pdfs[0] == pdfs[1] > 1


def test_annex_iv_fields_come_from_the_manifest_the_verifier_read() -> None:
    report = audited()
    unread = render_html(report).split('<section id="annex-iv">')[1]
    manifest = {"training": {"schedule": {"name": "cosine", "warmup_steps": 3, "format": "prov.schedule.v2"}}}
    read = render_html(report, manifest=manifest).split('<section id="annex-iv">')[1]
    assert "which was not read for this document" in unread and "which was not read" not in read
    assert "name cosine" in read and "warmup_steps 3" in read


def test_an_unfinalised_run_has_a_marked_banner() -> None:
    assert '<header class="banner verified open"' in render_html(audited(finalized=False))
    assert '<header class="banner verified"' in render_html(audited())
