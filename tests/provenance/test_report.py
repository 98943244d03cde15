"""Audit reports: validation, terminal text, the self-contained HTML page, and a real headless-browser render."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from provenance import _report_schema as schema
from provenance import report as rpt
from provenance.errors import FormatError
from provenance.report import privacy_sentence, render_html, render_text, validate_report, write_html
from tests.provenance.report_sample import digest, hexof, sample_report

VERDICTS = ("verified", "failed", "error")
DOC = Path(__file__).resolve().parents[2] / "docs" / "report-schema.md"
PAYLOAD = '<script>alert("owned")</script>'


def lines_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def lineage_block(text: str) -> list[str]:
    lines = lines_of(text)
    start = lines.index("Lineage")
    return lines[start: lines.index("", start)]


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict", VERDICTS)
def test_samples_are_valid_and_survive_json(verdict: str) -> None:
    report = sample_report(verdict)
    validate_report(report)
    validate_report(json.loads(json.dumps(report, allow_nan=False)))


def test_unknown_extra_fields_are_allowed() -> None:
    report = sample_report()
    report["future_field"] = {"anything": 1}
    report["checks"][0]["details"] = "more"
    validate_report(report)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(report: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = report
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return mutate


_DELETE = object()


@pytest.mark.parametrize(("mutate", "field"), [
    (_set("verdict", _DELETE), "'verdict' is missing"),
    (_set("run.base_model.digest", _DELETE), "'run.base_model.digest' is missing"),
    (_set("lineage.2.tx", _DELETE), "'lineage[2].tx' is missing"),
    (_set("replay.segments.0.first_divergence", _DELETE), "'replay.segments[0].first_divergence' is missing"),
    (_set("format", "prov.verify-report.v2"), "'format'"),
    (_set("checks.1.status", "ok"), "'checks[1].status'"),
    (_set("subject.weights_digest", "sha256:XYZ"), "'subject.weights_digest'"),
    (_set("subject.kind", None), "'subject.kind'"),
    (_set("chain.registry", "0x1234"), "'chain.registry'"),
    (_set("lineage.0.block", True), "'lineage[0].block'"),
    (_set("lineage.0.block", "1240"), "'lineage[0].block'"),
    (_set("dp.delta", float("nan")), "'dp.delta'"),
    (_set("dp.mode", "maybe"), "'dp.mode'"),
    (_set("series.epsilon.0", [8]), "'series.epsilon[0]'"),
    (_set("series.loss", [1.0]), "'series.loss'"),
    (_set("generated_at", "2025-13-45T10:00:00Z"), "'generated_at'"),
    (_set("generated_at", "2025-03-04 09:30"), "'generated_at'"),
    (_set("replay.requested", "0"), "'replay.requested'"),
    (_set("replay.segments.0.steps", [8]), "'replay.segments[0].steps'"),
    (_set("not_checked", "nothing"), "'not_checked'"),
    (_set("exit_code", 1), "'exit_code'"),
    (_set("checks.4.status", "failed"), "'verdict'"),
    (_set("lineage.0.is_subject", True), "'lineage'"),
    (_set("checks.1.id", "record"), "'checks'"),
])
def test_validate_names_the_bad_field(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    report = sample_report()
    mutate(report)
    with pytest.raises(FormatError, match=re.escape(field)):
        validate_report(report)


def test_failed_verdict_needs_a_failed_check() -> None:
    report = sample_report("failed")
    for check in report["checks"]:
        check["status"] = "passed"
    with pytest.raises(FormatError, match="'verdict'"):
        validate_report(report)


def test_report_must_be_an_object() -> None:
    with pytest.raises(FormatError, match="'report' must be an object"):
        validate_report([])  # type: ignore[arg-type]


@pytest.mark.parametrize("render", [render_text, render_html])
def test_renderers_refuse_a_malformed_report(render: Callable[[dict[str, Any]], str]) -> None:
    report = sample_report()
    del report["checks"][0]["title"]
    with pytest.raises(FormatError, match=re.escape("'checks[0].title' is missing")):
        render(report)


def _schema_paths(spec: Any, prefix: str = "") -> list[str]:
    """Every field path the validator knows, as the docs write them (`lineage[].tx`)."""
    while isinstance(spec, schema._Opt | schema._List):
        if isinstance(spec, schema._List):
            prefix += "[]"
        spec = spec.inner if isinstance(spec, schema._Opt) else spec.item
    if not isinstance(spec, dict):
        return []
    out = []
    for key, sub in spec.items():
        path = f"{prefix}.{key}" if prefix else key
        out += [path, *_schema_paths(sub, path)]
    return out


def test_docs_describe_every_field_and_their_example_validates() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [p for p in _schema_paths(schema._SCHEMA) if f"`{p}`" not in text]
    assert not missing, f"docs/report-schema.md does not describe {missing}"
    example = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert example is not None
    validate_report(json.loads(example.group(1)))


# --- terminal text ----------------------------------------------------------------------------------------------

def test_text_verified() -> None:
    report = sample_report()
    lines = lines_of(render_text(report))
    assert lines[0] == "VERIFIED — " + report["verdict_text"]
    for check in report["checks"]:
        assert any(line.startswith("  passed ") and check["title"] in line for line in lines), check["title"]
    assert "FAILED" not in "\n".join(lines)
    assert not any(line.lstrip().startswith(("expected", "found")) for line in lines)
    assert privacy_sentence(report["dp"]).split()[0] in "\n".join(lines)
    nc = lines.index("Not checked:")
    assert lines[nc + 1:] == [f"  - {item}" for item in report["not_checked"]]


def test_text_failed_shows_expected_and_found() -> None:
    report = sample_report("failed")
    lines = lines_of(render_text(report))
    assert lines[0].startswith("FAILED — 2 of 10 checks failed")
    assert "10 checks: 8 passed, 2 failed, 0 skipped" in lines
    at = next(i for i, line in enumerate(lines) if line.startswith("  FAILED   Step log"))
    evidence = [line for line in lines[at + 1: at + 5] if line.lstrip().startswith(("expected", "found"))]
    assert evidence == [f"           expected  {hexof('root3')}", f"           found     {hexof('tampered-root3')}"]
    replay = next(i for i, line in enumerate(lines) if line.startswith("  FAILED   Replay"))
    assert lines[replay + 1].startswith("           ")  # the summary, on its own indented line
    evidence = [line.split() for line in lines[replay + 1: replay + 6]
                if line.lstrip().startswith(("expected", "found"))]
    assert evidence == [["expected", digest("weights4")], ["found", digest("replayed-weights4")]]
    assert sum(line.lstrip().startswith("expected ") for line in lines) == 2


def test_text_error_says_why_checks_were_skipped() -> None:
    report = sample_report("error")
    text = render_text(report)
    lines = lines_of(text)
    assert lines[0] == "COULD NOT VERIFY — " + report["verdict_text"]
    at = next(i for i, line in enumerate(lines) if line.startswith("  skipped  Registry record"))
    assert "Could not reach the registry" in lines[at + 1]
    assert sum(line.startswith("  skipped ") for line in lines) == len(report["checks"])
    assert "Lineage: none (no registry record was found for this file)." in lines
    assert "Differential privacy: unknown" in text


@pytest.mark.parametrize("report", [
    sample_report(), sample_report("failed"), sample_report("error"), sample_report(checkpoints=100, every=10),
    sample_report(private=False),
])
def test_text_lines_fit_a_terminal(report: dict[str, Any]) -> None:
    report["subject"]["path"] = "/very/long/" + "directory-name/" * 12 + "adapter_model.safetensors"
    report["checks"][0]["summary"] = "word " * 60
    too_long = [line for line in lines_of(render_text(report)) if len(line) > rpt.WIDTH]
    assert not too_long


@pytest.mark.parametrize("render", [render_text, render_html])
def test_untrusted_text_cannot_drive_the_terminal_or_reorder_text(render: Callable[[dict[str, Any]], str]) -> None:
    report = sample_report("failed")
    report["verdict_text"] = "x\x1b[2J\x1b[H\nVERIFIED — all good"
    report["run"]["base_model"]["name"] = "Qwen\u202efdp.exe"
    report["checks"][4]["summary"] = "bell\x07 and\rcarriage"
    out = render(report)
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    assert "x\\x1b[2J\\x1b[H\\nVERIFIED" in out and "Qwen\\u202efdp.exe" in out
    if render is render_text:
        assert [line for line in lines_of(out) if line.startswith("VERIFIED")] == []


def test_text_color_only_when_asked() -> None:
    report = sample_report("failed")
    assert "\033[" not in render_text(report)
    colored = render_text(report, color=True)
    assert colored.startswith("\033[1;31mFAILED\033[0m — ")
    assert "\033[1;31mFAILED \033[0m  Step log" in colored


def test_lineage_is_compact_with_100_checkpoints() -> None:
    block = lineage_block(render_text(sample_report(checkpoints=100, every=10)))
    assert len(block) == 8  # heading, base model, checkpoint 0, gap, last four
    assert block[1].startswith("  base model  Qwen/Qwen2.5-0.5B (")
    assert block[2].startswith("  → checkpoint  0  step   10")
    assert block[3] == "  … 95 more …"
    assert block[-1].startswith("  → checkpoint 99  step 1000") and block[-1].endswith("← this file")


def test_lineage_always_shows_the_subject() -> None:
    block = lineage_block(render_text(sample_report(checkpoints=100, every=10, subject_index=50)))
    gaps = [int(line.split()[1]) for line in block if line.startswith("  … ")]
    assert gaps == [49, 45]
    assert sum("← this file" in line for line in block) == 1
    assert next(line for line in block if "this file" in line).startswith("  → checkpoint 50 ")


def test_lineage_short_lists_everything_and_names_an_unlisted_subject() -> None:
    report = sample_report(checkpoints=3)
    for c in report["lineage"]:
        c["is_subject"] = False
    block = lineage_block(render_text(report))
    assert [line.split()[2] for line in block[2:5]] == ["0", "1", "2"]
    assert block[-1] == "  → this file  " + report["subject"]["weights_digest"]


def test_lineage_text_omits_epsilon_when_not_private() -> None:
    block = lineage_block(render_text(sample_report(private=False)))
    assert all("ε" not in line for line in block)


# --- privacy sentence -------------------------------------------------------------------------------------------

def test_privacy_sentence_dp() -> None:
    assert privacy_sentence(sample_report()["dp"]) == (
        "Differential privacy: (ε = 3.21, δ = 1e-05)-DP for each training example, PRV accountant, noise "
        "multiplier 1.1, clipping 1.0, sample rate 0.05 over 40 steps. Budget 8.0: within budget.")


def test_privacy_sentence_not_private() -> None:
    assert privacy_sentence(sample_report(private=False)["dp"]) == (
        "Not private: trained without differential privacy.")


def test_privacy_sentence_over_budget_and_disagreement() -> None:
    dp = sample_report()["dp"] | {"epsilon_budget": 2.0, "epsilon_recomputed": 3.5}
    text = privacy_sentence(dp)
    assert text.startswith("Differential privacy: (ε = 3.5, δ = 1e-05)-DP")
    assert "The trainer committed ε = 3.21; recomputed from its parameters: 3.5." in text
    assert text.endswith("Budget 2.0: OVER BUDGET.")


def test_privacy_sentence_partial_information() -> None:
    dp = sample_report()["dp"] | {"epsilon_budget": None, "epsilon_recomputed": None, "sample_rate": None,
                                  "accountant": None}
    assert privacy_sentence(dp) == (
        "Differential privacy: (ε = 3.21, δ = 1e-05)-DP for each training example, noise multiplier 1.1, "
        "clipping 1.0, 40 steps. No ε budget was set.")
    assert privacy_sentence(None).startswith("Differential privacy: unknown")


# --- HTML -------------------------------------------------------------------------------------------------------

def _poison(report: dict[str, Any]) -> dict[str, Any]:
    """Put a script tag in every free-text field the HTML shows, and an attribute breaker where titles go."""
    report = copy.deepcopy(report)
    report["verdict_text"] = report["prov_version"] = PAYLOAD
    report["subject"]["path"] = f"/tmp/{PAYLOAD}.safetensors"
    report["run"]["base_model"]["name"] = report["run"]["manifest_cid"] = PAYLOAD
    report["chain"]["rpc_url"] = report["store"]["backend"] = PAYLOAD
    report["checks"][4].update(title=PAYLOAD, summary=PAYLOAD, expected=PAYLOAD, found=PAYLOAD)
    report["not_checked"].append(PAYLOAD)
    report["replay"]["segments"][-1]["first_divergence"] = {"step": 3, "field": PAYLOAD, "expected": PAYLOAD,
                                                            "found": PAYLOAD}
    report["lineage"][1]["manifest_cid"] = '" onmouseover="alert(1)" data-x="' + "a" * 40
    return report


def test_html_escapes_everything_from_the_report() -> None:
    out = render_html(_poison(sample_report("failed")))
    assert "<script" not in out.lower()
    assert out.count("&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;") >= 12
    assert '" onmouseover="' not in out
    assert 'title="&quot; onmouseover=&quot;alert(1)&quot; data-x=&quot;' in out


def _external_references(out: str) -> list[str]:
    patterns = [r"""\b(?:src|href|action|poster|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", r"<script",
                r"<link\b", r"<img\b", r"<iframe\b", r"@import", r"url\s*\("]
    return [m.group(0) for p in patterns for m in re.finditer(p, out, re.I)]


@pytest.mark.parametrize("verdict", VERDICTS)
def test_html_is_self_contained(verdict: str) -> None:
    report = sample_report(verdict)
    report["chain"]["rpc_url"] = "https://rpc.example.org/v1"
    out = render_html(report)
    assert _external_references(out) == []
    assert "Content-Security-Policy" in out and "default-src 'none'" in out
    assert "https://rpc.example.org/v1" in out  # shown as text, never as a link
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


@pytest.mark.parametrize("verdict", VERDICTS)
def test_html_is_well_formed(verdict: str) -> None:
    parser = _Balance()
    parser.feed(render_html(_poison(sample_report(verdict)) if verdict != "error" else sample_report(verdict)))
    assert parser.stack == []


def test_html_sections_and_tables() -> None:
    report = sample_report("failed")
    out = render_html(report)
    assert '<header class="banner failed"' in out and "<h1 class=\"word\">FAILED</h1>" in out
    assert out.count('<tr class="check ') - out.count('<tr class="check passed">') - 1 == 2  # +1 replay row
    assert out.count('<tr class="subject">') == 1
    subject_row = out.split('<tr class="subject">')[1].split("</tr>")[0]
    assert ">1264<" in subject_row and "this file" in subject_row
    assert "<th>Expected</th>" in out and hexof("tampered-root3") in out
    assert "step 35, batch" in out and digest("other-batch35") in out
    assert f'title="{report["lineage"][0]["weights_digest"]}"' in out
    assert "within budget" in out and "Generated 2025-03-04 09:30:00 UTC by prov 0.1.0" in out
    for item in report["not_checked"]:
        assert f"<li>{item.replace(chr(39), '&#x27;')}</li>" in out


def test_html_verified_hides_empty_evidence_columns() -> None:
    out = render_html(sample_report())
    assert '<header class="banner verified"' in out and "<th>Expected</th>" not in out
    assert out.count('<tr class="check passed">') == 10 + 2  # ten checks, two replay segments


def test_charts_handle_empty_series_and_missing_sections() -> None:
    out = render_html(sample_report("error"))
    assert "No ε values were recorded." in out and "No loss values were recorded." in out
    assert "<polyline" not in out and "<svg" not in out
    assert "No training steps were replayed." in out
    assert "No checkpoints: no registry record was found for this file." in out


def test_charts_handle_one_point_and_flat_series() -> None:
    report = sample_report(checkpoints=1)
    report["series"] = {"step": [0, 1, 2], "loss": [1.5, 1.5, 1.5], "epsilon": [[8, 0.5]]}
    out = render_html(report)
    assert out.count("<svg") == 2 and out.count("<polyline") == 2
    svgs = re.findall(r"<svg.*?</svg>", out, re.S)
    assert len(svgs) == 2 and not any(re.search(r"nan|inf", svg, re.I) for svg in svgs)
    assert out.count('class="dot"') == 4
    assert 'class="limit"' in out and "budget 8.0" in out


def test_write_html_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "audit.html"
    write_html(sample_report("error"), target)
    write_html(sample_report(), target)
    assert target.read_text(encoding="utf-8") == render_html(sample_report())
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
@pytest.mark.parametrize("verdict", VERDICTS)
def test_headless_chromium_renders_the_report(tmp_path: Path, verdict: str) -> None:
    _chromium()
    report = sample_report(verdict)
    page = tmp_path / "report.html"
    write_html(report, page)

    dom = _browse(tmp_path, "--dump-dom", page.as_uri())
    assert report["verdict_text"] in dom
    rows = re.findall(r'<tr class="check (passed|failed|skipped)">(.*?)</tr>', dom, re.S)
    for check in report["checks"]:
        assert any(status == check["status"] and f"<td>{check['title']}</td>" in row for status, row in rows)

    shot = tmp_path / "report.png"
    _browse(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    width, height, top = _png_top(shot, 140)
    assert (width, height) == (1200, 1600)
    banner = rpt.VERDICT_COLORS[verdict]
    pixels = [p for row in top[10:] for p in row]
    assert sum(_near(p, banner) for p in pixels) > 0.6 * len(pixels), "verdict banner colour missing"
    assert sum(min(p) > 235 for p in pixels) > 500, "no white verdict text on the banner"
    others = [c for v, c in rpt.VERDICT_COLORS.items() if v != verdict]
    assert not any(_near(p, c) for c in others for p in pixels[::7]), "another verdict's colour is showing"


def test_html_says_when_the_replay_seed_was_not_a_later_block() -> None:
    report = sample_report()
    last = max(c["block"] for c in report["lineage"])
    report["replay"]["seed_block"] = last + 1
    assert "a value not known when the checkpoints were committed" in render_html(report)
    report["replay"]["seed_block"] = last
    page = render_html(report)
    assert "no later block existed yet" in page and "a value not known" not in page
