"""The HTML audit report: self-contained, escaped, well-formed, the same content as the text (checks once, next
steps, warnings, claims, replay, the Annex IV section), and a real headless-Chromium render of every verdict."""

from __future__ import annotations

import copy
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from provenance import _report_html as rhtml
from provenance import _report_words as words
from provenance.report import render_html, render_public, write_html
from tests.fixtures.report import CATCH, NO_RECORD, STORIES, VERDICTS, digest, hexof, sample_report

PAYLOAD = '<script>alert("owned")</script>'


# --- HTML -------------------------------------------------------------------------------------------------------

def _poison(report: dict[str, Any]) -> dict[str, Any]:
    """Put a script tag in every free-text field the HTML shows, and an attribute breaker where titles go."""
    report = copy.deepcopy(report)
    report["verdict_text"] = report["prov_version"] = PAYLOAD
    report["next_steps"] = [PAYLOAD]
    report["warnings"] = [PAYLOAD]
    report["subject"]["path"] = f"{PAYLOAD}.safetensors".replace("/", "")
    report["run"]["base_model"]["name"] = report["run"]["manifest_cid"] = PAYLOAD
    report["store"]["backend"] = PAYLOAD
    report["checks"][4].update(title=PAYLOAD, summary=PAYLOAD, expected=PAYLOAD, found=PAYLOAD)
    report["not_checked"].append(PAYLOAD)
    report["claims"][0]["note"] = PAYLOAD
    report["replay"]["segments"][-1]["first_divergence"] = {"step": 3, "field": PAYLOAD, "expected": PAYLOAD,
                                                            "found": PAYLOAD}
    report["lineage"][1]["manifest_cid"] = '" onmouseover="alert(1)" data-x="' + "a" * 40
    return report


def test_html_escapes_everything_from_the_report() -> None:
    out = render_html(_poison(sample_report("failed")))
    assert "<script" not in out.lower()
    assert out.count("&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;") >= 14
    assert '" onmouseover="' not in out
    assert 'title="&quot; onmouseover=&quot;alert(1)&quot; data-x=&quot;' in out


def test_html_annex_section_escapes_values_too() -> None:
    out = render_html(_poison(sample_report()))
    annex = out.split('<section id="annex-iv">')[1].split("</section>")[0]
    assert "<script" not in annex and "&lt;script&gt;" in annex


def _external_references(out: str) -> list[str]:
    patterns = [r"""\b(?:src|href|action|poster|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", r"<script",
                r"<link\b", r"<img\b", r"<iframe\b", r"@import", r"url\s*\("]
    return [m.group(0) for p in patterns for m in re.finditer(p, out, re.I)]


@pytest.mark.parametrize("story", STORIES)
def test_html_is_self_contained(story: str) -> None:
    report = sample_report(story)
    report["chain"]["rpc"] = "https://rpc.example.org"
    out = render_html(report)
    assert _external_references(out) == []
    assert "Content-Security-Policy" in out and "default-src 'none'" in out
    assert "https://rpc.example.org" in out  # shown as text, never as a link
    assert _external_references('<img src="https://x.org/a.png">') == ['src="https://', "<img"]


class _Balance(HTMLParser):
    """Checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "br", "line", "circle", "polyline", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unexpected </{tag}>"


@pytest.mark.parametrize("story", STORIES)
def test_html_is_well_formed(story: str) -> None:
    parser = _Balance()
    report = sample_report(story)
    parser.feed(render_html(_poison(report) if report["replay"] else report))
    assert parser.stack == []


def test_html_sections_and_tables() -> None:
    report = sample_report("failed")
    out = render_html(report)
    assert '<header class="banner failed"' in out and '<h1 class="word">FAILED — local development chain</h1>' in out
    assert '<ul class="next"><li>Do not rely on this file' in out
    assert out.count('<tr class="check failed">') == 2 + 1  # two checks, one replay segment
    assert out.count('<tr class="subject">') == 2  # the lineage row and the selected claim
    subject_row = out.split('<table class="lineage">')[1].split('<tr class="subject">')[1].split("</tr>")[0]
    assert ">1420<" in subject_row and "this file" in subject_row
    assert "<th>Expected</th>" in out and hexof("tampered-root3") in out
    assert "step 221, batch" in out and digest("other-batch221") in out
    assert f'title="{report["lineage"][0]["weights_digest"]}"' in out
    assert "within budget" in out and "Generated 2025-03-04 09:30:00 UTC by prov 0.2.0" in out
    assert '<section id="warnings" class="warnings">' in out
    for item in report["not_checked"]:
        assert f"<li>{item.replace(chr(39), '&#x27;')}</li>" in out
    assert "Not produced: Annex IV documentation is drawn only from a verified run" in out


def test_html_verified_hides_empty_evidence_columns_and_carries_annex_iv() -> None:
    out = render_html(sample_report())
    assert '<header class="banner verified"' in out and "<th>Expected</th>" not in out
    assert out.count('<tr class="check passed">') == 13 + 3  # thirteen checks, three replay segments
    assert CATCH in out and "mixed with the auditor&#x27;s seed" in out
    annex = out.split('<section id="annex-iv">')[1].split("</section>")[0]
    assert annex.startswith("\n<h2>EU AI Act Annex IV") and '<details class="annex">' in annex
    assert "<details open" not in out  # collapsed by default
    for ref in ("2(a)", "2(b)", "2(c)", "2(d)", "2(g)", "2(h)"):
        assert f"Annex IV {ref} — " in annex
    assert "to be completed by the provider" in annex


def test_html_groups_checks_not_run_for_one_reason() -> None:
    out = render_html(sample_report("no_record"))
    assert out.count('<tr class="check not_run">') == 1
    assert ">12 checks not run<" in out and out.count(NO_RECORD) == 1
    assert '<header class="banner failed"' in out


def test_html_inconclusive_banner() -> None:
    out = render_html(sample_report("inconclusive"))
    assert '<header class="banner inconclusive"' in out and "--inconclusive: #5b4a9e" in out
    assert out.count('<tr class="check inconclusive">') == 2 + 3


def test_charts_handle_empty_series_and_missing_sections() -> None:
    out = render_html(sample_report("error"))
    assert "No ε values were recorded." in out
    assert "Training loss: withheld (private)" in out
    assert "<polyline" not in out and "<svg" not in out
    assert "No training steps were replayed." in out
    assert "No checkpoints: no registry record was found for this file." in out


def test_charts_handle_one_point_and_flat_series() -> None:
    report = sample_report(checkpoints=1, level="data")
    report["series"] = {"step": [0, 1, 2], "loss": [1.5, 1.5, 1.5], "loss_status": "checked",
                        "epsilon": [[8, 0.5]]}
    out = render_html(report)
    assert out.count("<svg class=\"chart\"") == 2 and out.count("<polyline") == 2
    svgs = re.findall(r"<svg class=\"chart\".*?</svg>", out, re.S)
    assert len(svgs) == 2 and not any(re.search(r"nan|inf", svg, re.I) for svg in svgs)
    assert out.count('class="dot"') == 4
    assert 'class="limit"' in out and "budget 8.0" in out


def test_write_html_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "audit.html"
    write_html(sample_report("error"), target)
    write_html(sample_report(), target)
    assert target.read_text(encoding="utf-8") == render_html(sample_report())
    write_html(sample_report(), target, public=True)
    assert target.read_text(encoding="utf-8") == render_public(sample_report())
    assert sorted(p.name for p in target.parent.iterdir()) == ["audit.html"]


# --- a real browser ---------------------------------------------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        reason = "Debian chromium not installed: apt-get install chromium (scripts/setup installs it)"
        if os.environ.get("PROV_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (PROV_REQUIRE_BROWSER=1: scripts/test requires it)")
        pytest.skip(reason)
    return found


def _browse(tmp_path: Path, *args: str) -> str:
    profile = Path(os.path.join(tmp_path, f"profile-{len(list(tmp_path.glob('profile-*')))}"))
    profile.mkdir()
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _png_top(path: Path, rows: int) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and the first `rows` rows of RGB pixels of an 8-bit non-interlaced PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + size]
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + size]
        pos += 12 + size
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(bytes(idat), (stride + 1) * rows)
    prev, out = bytearray(stride), []
    for y in range(rows):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
            if kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            else:
                pred = (0, a, b, (a + b) // 2)[kind]
            line[x] = (line[x] + pred) & 0xFF
        out.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return width, height, out  # type: ignore[return-value]


def _near(pixel: tuple[int, int, int], color: str, tolerance: int = 12) -> bool:
    target = bytes.fromhex(color.lstrip("#"))
    return all(abs(p - t) <= tolerance for p, t in zip(pixel, target, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("story", ["verified", "no_record", "inconclusive", "error"])
def test_headless_chromium_renders_the_report(tmp_path: Path, story: str) -> None:
    _chromium()
    report = sample_report(story)
    page = tmp_path / "report.html"
    write_html(report, page)

    dom = _browse(tmp_path, "--dump-dom", page.as_uri())
    assert report["verdict_text"] in dom and report["level"]["text"] in dom
    rows = re.findall(r'<tr class="check (passed|failed|inconclusive|not_run)">(.*?)</tr>', dom, re.S)
    for row in words.check_rows(report):
        label = row.heading if not row.grouped else f"{len(row.checks)} checks not run"
        assert any(status == row.status and f"<td>{label}</td>" in cells for status, cells in rows), label
    for step in report["next_steps"]:
        assert step.split(":")[0] in dom
    assert ('<details class="annex">' in dom) == (story == "verified")

    shot = tmp_path / "report.png"
    _browse(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    width, height, top = _png_top(shot, 140)
    assert (width, height) == (1200, 1600)
    banner = rhtml.VERDICT_COLORS[VERDICTS[story]]
    pixels = [p for row in top[10:] for p in row]
    assert sum(_near(p, banner) for p in pixels) > 0.6 * len(pixels), "verdict banner colour missing"
    assert sum(min(p) > 235 for p in pixels) > 500, "no white verdict text on the banner"
    others = [c for v, c in rhtml.VERDICT_COLORS.items() if v != VERDICTS[story]]
    assert not any(_near(p, c) for c in others for p in pixels[::7]), "another verdict's colour is showing"


def test_the_beacon_is_described() -> None:
    report = sample_report()
    page = render_html(report)
    assert "drawn from the hash of block 1432 (0x" in page and "12 confirmations after the run&#x27;s last" in page
    report["replay"]["beacon"] = {"block": None, "hash": None, "auditor_seed": "my-seed", "confirmations": 2,
                                  "auditor_seed_origin": "given", "source": "auditor"}
    assert "Segments were drawn from the auditor&#x27;s seed &#x27;my-seed&#x27;." in render_html(report)
    report["replay"]["beacon"].update(auditor_seed="ab" * 32, auditor_seed_origin="drawn")
    assert ("Segments were drawn from a seed this verifier drew at random when it ran (abababab…abab; "
            "replay.beacon.auditor_seed of the JSON report holds it whole: pass it as --beacon to repeat the draw)."
            ) in render_html(report)


def test_the_replay_environment_is_described() -> None:
    replay = sample_report()["replay"]
    lines = words.environment_lines(replay)
    assert lines[0] == "Bit-for-bit replay is possible on this machine."
    assert ("The replay worker ran with the run's recorded settings: profile portable, CPU kernels AVX2, 2 threads, "
            "cpu float32, ATEN_CPU_CAPABILITY=avx2.") in lines
    assert "Package versions match the run's: opacus 1.6.0, torch 2.13.0." in lines
    replay["environment"]["here"]["versions"]["torch"] = "2.12.0"
    replay["environment"]["bitwise_possible"] = False
    lines = words.environment_lines(replay)
    assert lines[0].startswith("Bit-for-bit replay is NOT possible")
    assert "Package versions differ: torch 2.13.0 recorded, 2.12.0 here." in lines
