"""Audit reports: validation (v2, and v1 for stored reports), terminal text, and the publishable copy without
secrets, local paths or per-step loss. The HTML page and its browser render are tested in test_report_html.py."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provenance import _report_schema as schema
from provenance import report as rpt
from provenance.errors import FormatError
from provenance.report import (
    level_text,
    privacy_sentence,
    publishable,
    render_html,
    render_public,
    render_text,
    upgrade,
    validate_report,
)
from tests.fixtures.report import (
    CATCH,
    NO_RECORD,
    STORIES,
    VERDICTS,
    address,
    digest,
    hexof,
    sample_report,
    sample_report_v1,
    txhash,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "report-schema.md"


def lines_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def lineage_block(text: str) -> list[str]:
    lines = lines_of(text)
    start = lines.index("Lineage")
    return lines[start: lines.index("", start)]


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("story", STORIES)
def test_samples_are_valid_and_survive_json(story: str) -> None:
    report = sample_report(story)
    validate_report(report)
    validate_report(json.loads(json.dumps(report, allow_nan=False)))
    assert report["exit_code"] == schema.EXIT_CODES[VERDICTS[story]]


@pytest.mark.parametrize("level", ["commitments", "data", "sampled", "full"])
def test_every_level_is_valid(level: str) -> None:
    report = sample_report(level=level)
    validate_report(report)
    assert report["level"]["name"] == level


def test_level_texts() -> None:
    assert level_text("verified", "commitments") == "VERIFIED (commitments)"
    assert level_text("verified", "data") == "VERIFIED (commitments and data)"
    assert level_text("verified", "sampled", replayed=2, segments=30) == "VERIFIED (replayed 2/30 segments)"
    assert level_text("verified", "full", replayed=30, segments=30) == "VERIFIED (fully replayed)"
    assert [level_text(v, None) for v in ("failed", "inconclusive", "error")] == [
        "FAILED", "INCONCLUSIVE", "COULD NOT VERIFY"]
    assert level_text("failed", None, dev_chain="anvil/Hardhat (31337)") == "FAILED — local development chain"


def test_unknown_extra_fields_are_allowed() -> None:
    report = sample_report()
    report["future_field"] = {"anything": 1}
    report["checks"][0]["details"] = "more"
    validate_report(report)


def test_the_verifier_object_is_accepted() -> None:
    class Report:
        def to_json(self) -> dict[str, Any]:
            return sample_report("failed")

    validate_report(Report())
    assert render_text(Report()).startswith("FAILED — local development chain\n")


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


def _swap_checks(report: dict[str, Any]) -> None:
    report["checks"][1], report["checks"][2] = report["checks"][2], report["checks"][1]


def _second_selected_claim(report: dict[str, Any]) -> None:
    report["claims"].append(dict(report["claims"][0], run_key=hexof("other-key")))


def _attestation_without_revoked(report: dict[str, Any]) -> None:
    report["attestations"] = [{"number": 1, "tx": txhash("att"), "block": 1500, "report_cid": None, "signers": [
        {"auditor": address("alice"), "name": "alice"}], "valid": True, "reason": None}]


@pytest.mark.parametrize(("mutate", "field"), [
    (_set("verdict", _DELETE), "'verdict' is missing"),
    (_set("run.base_model.digest", _DELETE), "'run.base_model.digest' is missing"),
    (_set("lineage.2.tx", _DELETE), "'lineage[2].tx' is missing"),
    (_set("replay.segments.0.first_divergence", _DELETE), "'replay.segments[0].first_divergence' is missing"),
    (_set("format", "prov.verify-report.v3"), "'format'"),
    (_set("checks.1.status", "skipped"), "'checks[1].status'"),
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
    (_set("replay.requested", "some"), "'replay.requested'"),
    (_set("replay.segments.0.steps", [8]), "'replay.segments[0].steps'"),
    (_set("not_checked", "nothing"), "'not_checked'"),
    (_set("next_steps", "do this"), "'next_steps'"),
    (_set("exit_code", 1), "'exit_code'"),
    (_set("exit_code", 3), "'exit_code'"),
    (_set("checks.4.status", "failed"), "'verdict'"),
    (_set("checks.12.status", "inconclusive"), "'verdict'"),
    (_set("checks.0.status", "not_run"), "'verdict'"),
    (_set("lineage.0.is_subject", True), "'lineage'"),
    (_set("checks.1.id", "record"), "'checks'"),
    (_swap_checks, "'checks' must be every check id in the order"),
    (_set("level.text", "VERIFIED"), "'level.text'"),
    (_set("chain.dev_chain", None), "'level.text'"),
    (_set("level.name", None), "'level.name'"),
    (_set("level.name", "full"), "'level.replayed'"),
    (_set("level.replayed", 31), "'level.replayed'"),
    (_set("level.catch_probability", 1.5), "'level.catch_probability'"),
    (_set("replay", None), "'replay'"),
    (_set("chain.rpc", "https://mainnet.example.org/v3/KEY"), "'chain.rpc'"),
    (_set("chain.rpc", "https://user:pw@node.example.org"), "'chain.rpc'"),
    (_set("chain.registry_version", 4), "'chain.registry_version'"),
    (_set("subject.path", "/home/alice/adapter_model.safetensors"), "'subject.path'"),
    (_set("subject.kind", "merged-ish"), "'subject.kind'"),
    (_set("series.loss_status", "withheld"), "'series.loss'"),
    (_set("series.loss_status", "public-v1"), "'series.loss_status'"),
    (_set("claims.0.match", "name"), "'claims[0].match'"),
    (_second_selected_claim, "'claims'"),
    (_set("replay.beacon.auditor_seed", None), "'replay.beacon.auditor_seed'"),
    (_set("replay.beacon.hash", None), "'replay.beacon'"),
    (_set("replay.beacon.auditor_seed_origin", "guessed"), "'replay.beacon.auditor_seed_origin'"),
    (_set("replay.environment.recorded", [1]), "'replay.environment.recorded'"),
    (_set("dp.epsilon_checked", _DELETE), "'dp.epsilon_checked' is missing"),
    (_set("run.formats.step", 2), "'run.formats.step'"),
    (_attestation_without_revoked, "'attestations[0].revoked' is missing"),
])
def test_validate_names_the_bad_field(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    report = sample_report()
    mutate(report)
    with pytest.raises(FormatError, match=re.escape(field)):
        validate_report(report)


def test_a_report_stored_before_a_field_was_added_still_validates() -> None:
    """`replay.beacon.auditor_seed_origin` came after v2 reports were stored: one without it still loads."""
    report = sample_report()
    del report["replay"]["beacon"]["auditor_seed_origin"]
    validate_report(report)
    del report["replay"]["beacon"]["auditor_seed"]
    with pytest.raises(FormatError, match=r"'replay\.beacon\.auditor_seed' is missing"):
        validate_report(report)


@pytest.mark.parametrize(("story", "mutate"), [
    ("failed", lambda r: [c.update(status="passed", expected=None, found=None) for c in r["checks"]]),
    ("inconclusive", lambda r: r["checks"][3].update(status="failed")),
    ("inconclusive", lambda r: [c.update(status="passed") for c in r["checks"]]),
    ("error", lambda r: r["checks"][1].update(status="failed")),
])
def test_the_verdict_must_agree_with_the_checks(story: str, mutate: Callable[[dict[str, Any]], Any]) -> None:
    report = sample_report(story)
    mutate(report)
    with pytest.raises(FormatError, match="'verdict'"):
        validate_report(report)


def test_report_must_be_an_object() -> None:
    with pytest.raises(FormatError, match="'report' must be an object"):
        validate_report([])


@pytest.mark.parametrize("render", [render_text, render_html, render_public, publishable])
def test_renderers_refuse_a_malformed_report(render: Callable[[Any], Any]) -> None:
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


@pytest.mark.parametrize("spec", [schema._SCHEMA, schema._SCHEMA_V1], ids=["v2", "v1"])
def test_docs_describe_every_field(spec: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [p for p in _schema_paths(spec) if f"`{p}`" not in text]
    assert not missing, f"docs/report-schema.md does not describe {missing}"


def test_docs_example_validates_and_check_ids_are_listed() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert example is not None
    report = json.loads(example.group(1))
    validate_report(report)
    assert report["format"] == schema.FORMAT
    assert all(f"`{i}`" in text for i in schema.CHECK_IDS)


# --- old reports ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict", ["verified", "failed", "error"])
def test_v1_reports_still_validate_render_and_upgrade(verdict: str) -> None:
    old = sample_report_v1(verdict)
    validate_report(old)
    new = upgrade(copy.deepcopy(old))
    validate_report(rpt.prepared(new))
    assert new["verdict"] == verdict and new["exit_code"] == old["exit_code"]
    text = render_text(old)
    assert lines_of(text)[0] == {"verified": "VERIFIED (commitments)", "failed": "FAILED",
                                 "error": "COULD NOT VERIFY"}[verdict]
    assert lines_of(text)[1].startswith("→ Verify the file again with this version of prov")
    assert "support-bot-v3" not in text and "SECRETKEY123" not in text and "/home/alice" not in text
    assert "SECRETKEY123" not in render_html(old)


def test_v1_upgrade_claims_no_more_than_v1_checked() -> None:
    new = rpt.prepared(sample_report_v1())
    status = {c["id"]: c["status"] for c in new["checks"]}
    assert [i for i, s in status.items() if s == "not_run"] == ["chain", "steps", "checkpoint_zero"]
    assert new["level"]["name"] == "commitments" and new["series"]["loss_status"] == "public-v1"
    assert new["subject"]["path"] == "adapter_model.safetensors"
    assert new["chain"]["rpc"] == "https://eth.example.org" and new["store"]["backend"] == "local"
    old = sample_report_v1()
    old["replay"]["requested"] = "0"  # v1 never allowed a replay of no segments
    with pytest.raises(FormatError, match=re.escape("'replay.requested'")):
        validate_report(old)


# --- terminal text ----------------------------------------------------------------------------------------------

def test_text_verified() -> None:
    report = sample_report()
    lines = lines_of(render_text(report))
    text = "\n".join(lines)
    assert lines[0] == report["level"]["text"] == "VERIFIED (replayed 2/30 segments) — local development chain"
    assert lines[1] == report["verdict_text"]
    for check in report["checks"]:
        assert sum(check["title"] in line for line in lines) == 1, check["title"]
    assert "FAILED" not in text
    assert not any(line.lstrip().startswith(("expected", "found")) for line in lines)
    assert "  " + CATCH in lines
    assert privacy_sentence(report["dp"]).split()[0] in text
    assert "ε was recomputed from the recorded parameters for 31 of 31 checkpoints." in lines
    assert " ".join(text.split()).count("its timestamps and block hashes are controlled by whoever runs it") == 1
    nc = lines.index("Not checked:")
    assert lines[nc + 1:] == [f"  - {item}" for item in report["not_checked"]]


def test_text_leads_with_what_to_do() -> None:
    report = sample_report(level="commitments")
    lines = lines_of(render_text(report))
    assert lines[0] == "VERIFIED (commitments) — local development chain"
    assert lines[1].startswith("→ For a stronger verdict, obtain the training data")
    assert "Training loss: withheld (private): the run publishes only salted commitments" in " ".join(lines)


def test_text_failed_shows_expected_and_found() -> None:
    report = sample_report("failed")
    lines = lines_of(render_text(report))
    assert lines[0] == "FAILED — local development chain"
    assert lines[1].startswith("→ Do not rely on this file's claimed lineage")
    assert "13 checks: 11 passed, 2 failed, 0 not run" in lines
    at = next(i for i, line in enumerate(lines) if line.startswith("  FAILED   Training-step log"))
    evidence = [line for line in lines[at + 1: at + 5] if line.lstrip().startswith(("expected", "found"))]
    assert evidence == [f"           expected  {hexof('root3')}", f"           found     {hexof('tampered-root3')}"]
    replay = next(i for i, line in enumerate(lines) if line.startswith("  FAILED   Re-running"))
    split = [line.split() for line in lines[replay + 1: replay + 6] if line.lstrip().startswith(("expected", "found"))]
    assert split == [["expected", digest("batch221")], ["found", digest("other-batch221")]]
    assert sum(line.lstrip().startswith("expected ") for line in lines) == 2
    assert any("first difference: step 221, batch" in line for line in lines)


def test_text_no_record_says_it_once() -> None:
    report = sample_report("no_record")
    text = render_text(report)
    lines = lines_of(text)
    assert lines[1].startswith("→ This file has no valid on-chain record on registry")
    assert "  not run  12 checks not run: the file has no on-chain record" in lines
    assert text.count(NO_RECORD) == 1
    assert "Not checked: nothing beyond the checks above." in lines
    assert "Lineage: none (no registry record was found for this file)." in lines


def test_text_error_says_why_each_check_did_not_run() -> None:
    report = sample_report("error")
    text = render_text(report)
    lines = lines_of(text)
    assert lines[0] == "COULD NOT VERIFY — local development chain"
    at = next(i for i, line in enumerate(lines) if line.startswith("  not run  Run manifest matches"))
    assert "could not run: the Kubo node at http://127.0.0.1:5001 did not answer" in lines[at + 1]
    assert "  not run  10 checks not run: needs the run manifest, which could not be read from the store" in lines
    assert NO_RECORD not in text
    assert "Differential privacy: unknown" in text


def test_text_inconclusive() -> None:
    lines = lines_of(render_text(sample_report("inconclusive")))
    assert lines[0] == "INCONCLUSIVE — local development chain"
    assert "13 checks: 11 passed, 0 failed, 2 inconclusive, 0 not run" in lines
    assert sum(line.startswith("  INCONCLUSIVE  ") for line in lines) == 2 + 3  # two checks, three segments
    assert "  - Bit-for-bit replay is NOT possible on this machine: differences are information only." in lines
    assert any(line.endswith("checkpoint 4, steps 32–39: weight distance 3.1e-08") for line in lines)


def test_text_lists_claims_by_other_runs() -> None:
    report = sample_report()
    report["claims"].append({"run_key": hexof("other-key"), "run_id": hexof("other-run"), "owner": address("mallory"),
                             "index": 2, "block": 1270, "time": None, "tx": txhash("other"), "match": "tensors",
                             "selected": False, "note": "owner does not match the file's metadata"})
    lines = lines_of(render_text(report))
    at = lines.index("Also claimed by")
    assert lines[at + 1].startswith(f"  - also claimed by run {hexof('other-run')[:6]}")
    said = " ".join(" ".join(lines[at + 1: at + 3]).split())
    assert "checkpoint 2 at block 1270 (tensors match): owner does not match" in said


@pytest.mark.parametrize("report", [
    sample_report(), sample_report("failed"), sample_report("error"), sample_report("inconclusive"),
    sample_report(checkpoints=100, every=10), sample_report(private=False), sample_report_v1(),
    sample_report("no_record"), sample_report(level="commitments"),
])
def test_text_lines_fit_a_terminal(report: dict[str, Any]) -> None:
    report["checks"][0]["summary"] = "word " * 60
    report["verdict_text"] = "long " * 40
    for c in report["checks"][1:]:
        if c["status"] in ("not_run", "skipped"):
            c["summary"] = "needs " + "a long shared reason " * 8
    too_long = [line for line in lines_of(render_text(report)) if len(line) > rpt.WIDTH]
    assert not too_long


@pytest.mark.parametrize("render", [render_text, render_html])
def test_untrusted_text_cannot_drive_the_terminal_or_reorder_text(render: Callable[[Any], str]) -> None:
    report = sample_report("failed")
    report["verdict_text"] = "x\x1b[2J\x1b[H\nVERIFIED — all good"
    report["run"]["base_model"]["name"] = "Qwen\u202efdp.exe"
    report["checks"][4]["summary"] = "bell\x07 and\rcarriage"
    report["run"]["formats"]["step\u202e\x1b[2J"] = "prov.step.v3"  # keys are the trainer's too
    out = render(report)
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    assert "x\\x1b[2J\\x1b[H\\nVERIFIED" in out and "Qwen\\u202efdp.exe" in out
    if render is render_text:
        assert [line for line in lines_of(out) if line.startswith("VERIFIED")] == []


def test_text_color_only_when_asked() -> None:
    report = sample_report("failed")
    assert "\033[" not in render_text(report)
    colored = render_text(report, color=True)
    assert colored.startswith("\033[1;31mFAILED — local development chain\033[0m\n")
    assert "\033[1;31mFAILED \033[0m  Training-step log" in colored


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
    report = sample_report(checkpoints=3, level="data")
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
        "multiplier 1.1, clipping 1.0, sample rate 0.05 over 248 steps. Budget 8.0: within budget.")


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
        "clipping 1.0, 248 steps. No ε budget was set.")
    assert privacy_sentence(None).startswith("Differential privacy: unknown")


# --- nothing secret or local in what is shown or published -------------------------------------------------------

SECRETS = ("0123456789abcdef", "SECRETAPIKEY", "apikey", "/home/alice", "user:hunter2", "f00dfeedf00dfeed",
           "secret-project", "Users", "/venv/")


def poisoned(story: str = "verified") -> dict[str, Any]:
    """A report carrying what must never be shown or published: an RPC URL with an API key in its path, query and
    user info, absolute local paths, and secret-named fields in free-form objects."""
    report = sample_report(story)
    report["chain"]["rpc"] = "https://user:hunter2@mainnet.infura.io/v3/0123456789abcdef?apikey=SECRETAPIKEY"
    report["subject"]["path"] = "/home/alice/secret-project/adapter_model.safetensors"
    report["store"]["backend"] = "local:/home/alice/.prov/store"
    report["checks"][0]["summary"] = ("found via https://mainnet.infura.io/v3/0123456789abcdef, data at "
                                      "/home/alice/data/train-private.jsonl and C:\\Users\\alice\\train-private.jsonl")
    report["not_checked"].append("the copy in ~/secret-project/run/checkpoints")
    if report["replay"] is not None:
        report["replay"]["environment"]["recorded"] |= {"api_key": "f00dfeedf00dfeed", "noise_seed": "f00dfeedf00dfeed",
                                                        "python": "/home/alice/venv/bin/python"}
    return report


@pytest.mark.parametrize("render", [render_text, render_html, render_public,
                                    lambda r: json.dumps(publishable(r), ensure_ascii=False)])
@pytest.mark.parametrize("story", ["verified", "failed"])
def test_no_secret_or_local_path_is_rendered_or_published(render: Callable[[Any], str], story: str) -> None:
    out = render(poisoned(story))
    assert [s for s in SECRETS if s in out] == []
    assert "https://mainnet.infura.io" in out  # scheme and host stay: the auditor needs to know which node
    assert "adapter_model.safetensors" in out and "…/train-private.jsonl" in out  # file names stay, not directories


def test_publishable_drops_the_loss_and_keeps_the_rest() -> None:
    report = sample_report()
    public = publishable(report)
    assert public["series"]["loss"] is None and public["series"]["loss_status"] == "checked"
    assert public["series"]["step"] == report["series"]["step"] and public["checks"] == report["checks"]
    validate_report(public)
    page = render_public(report)
    assert "checked by the auditor; the values are left out of this published report" in page
    assert page.count("<polyline") == 1  # ε only
    assert str(report["series"]["loss"][5]) not in json.dumps(public)
    assert render_html(report).count("<polyline") == 2  # the auditor's own page shows the checked loss


def test_multiaddrs_and_plain_text_are_not_mistaken_for_paths() -> None:
    report = sample_report()
    report["store"]["backend"] = "kubo /ip4/127.0.0.1/tcp/5001"
    report["checks"][0]["summary"] = "sample rate 1/32 over 30 steps, and/or 2/30 segments"
    public = publishable(report)
    assert public["store"]["backend"] == "kubo /ip4/127.0.0.1/tcp/5001"
    assert public["checks"][0]["summary"] == report["checks"][0]["summary"]
