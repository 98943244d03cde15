"""Compliance exports: the Hugging Face model card (front matter read back with PyYAML) and EU AI Act Annex IV
(Markdown, HTML, JSON), from sample reports, through the CLI, and from a real run verified on the in-process chain."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenance import canonical, exports
from provenance.cli import cli, main
from provenance.cli.export import export_group
from provenance.exports import NotExportable
from provenance.hashing import Digest, hash_file
from tests.fixtures.report import CATCH, sample_report

SECRET_BITS = ("0123456789abcdef", "SECRETAPIKEY", "/home/alice", "hunter2", "f00dfeed")


def front_matter(card: str) -> dict[str, Any]:
    import yaml  # PyYAML (the train extra): the reader the Hub's tooling uses

    assert card.startswith("---\n")
    head, _, _ = card[4:].partition("\n---\n")
    data = yaml.safe_load(head)
    assert isinstance(data, dict)
    return data


def manifest_for(report: dict[str, Any], **extra: Any) -> tuple[bytes, dict[str, Any]]:
    """A run manifest whose digest the report names (the sample's digest is replaced by the real one)."""
    document: dict[str, Any] = {
        "format": "prov.run.v1", "run_id": report["run"]["run_id"],
        "base_model": {"digest": report["run"]["base_model"]["digest"], "name": "Qwen/Qwen2.5-0.5B"},
        "dataset": {"root": report["run"]["dataset_root"], "size": 1600, "max_length": 128},
        "secrets": {"noise_seed_commitment": "sha256:" + "1" * 64, "dataset_key_commitment": "sha256:" + "2" * 64},
        "software": {"versions": {"torch": "2.13.0", "peft": "0.21.2", "prov": "0.2.0"}},
        "determinism": {"profile": "portable", "cpu_capability": "avx2", "threads": 2, "device": "cpu",
                        "dtype": "float32", "machine": "x86_64"},
        "training": {"steps": 248, "checkpoint_every": 8, "world_size": 1, "loss": "per-sample mean token CE",
                     "batch": {"expected_batch_size": 80},
                     "lora": {"r": 8, "alpha": 16, "dropout": "0.05", "target_modules": ["q_proj", "v_proj"]},
                     "optimizer": {"name": "adamw", "lr": "0.0002", "weight_decay": "0.0"},
                     "schedule": {"name": "constant", "warmup_steps": 0},
                     "dp": {"mode": "dp", "noise_multiplier": "1.1"}},
        **extra,
    }
    data = canonical.encode(document)
    report["run"]["manifest_digest"] = str(Digest.of(data))
    return data, document


# --- model card -------------------------------------------------------------------------------------------------

def test_model_card_front_matter_is_hub_metadata_with_a_prov_block() -> None:
    report = sample_report()
    meta = front_matter(exports.model_card(report))
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation"
    assert {"prov", "lora", "differential-privacy", "dp-sgd"} <= set(meta["tags"])
    prov = meta["prov"]
    subject = report["lineage"][-1]
    assert prov["chain_id"] == 31337 and prov["registry"] == report["chain"]["registry"]
    assert prov["run_id"] == report["run"]["run_id"] and prov["run_key"] == report["run"]["run_key"]
    assert prov["checkpoint"] == 30 and prov["checkpoint_cid"] == subject["manifest_cid"]
    assert prov["run_manifest_cid"] == report["run"]["manifest_cid"]
    assert prov["weights_digest"] == report["subject"]["weights_digest"]
    assert prov["dataset_root"] == report["run"]["dataset_root"]
    assert prov["dp"]["epsilon"] == 3.21 and prov["dp"]["delta"] == 1e-05  # numbers, not strings
    assert prov["level"] == "sampled" and prov["verdict_line"] == report["level"]["text"]
    assert prov["dev_chain"] == "anvil/Hardhat (31337)"


def test_model_card_markdown_section() -> None:
    report = sample_report()
    card = exports.model_card(report)
    body = card.split("\n---\n", 1)[1]
    meta = front_matter(card)
    assert "## Training provenance" in body and "### Differential privacy" in body
    for value in (report["run"]["base_model"]["digest"], report["run"]["dataset_root"], report["run"]["manifest_cid"],
                  report["lineage"][-1]["manifest_cid"], report["run"]["run_id"], report["chain"]["registry"]):
        assert value in body
    assert "e^3.21" in body and "VERIFIED \\(replayed 2/30 segments\\)" not in body
    command = meta["prov"]["verify"]
    assert f"```sh\n{command}\n```" in body
    assert command.startswith("prov verify adapter_model.safetensors --rpc http://127.0.0.1:8545 --registry 0x")
    assert f"--expect-chain-id 31337 --expect-registry {report['chain']['registry']}" in command
    assert "local development chain anvil/Hardhat" in body


def test_model_card_without_dp_or_a_hub_base_model() -> None:
    report = sample_report(private=False)
    report["run"]["base_model"]["name"] = "model"
    card = exports.model_card(report)
    meta = front_matter(card)
    assert "base_model" not in meta and meta["prov"]["base_model_name"] == "model"
    assert "differential-privacy" not in meta["tags"] and meta["prov"]["dp"] == {"mode": "non-private"}
    assert "trained **without** differential privacy" in card


def test_model_card_values_cannot_inject_yaml_or_markdown() -> None:
    report = sample_report()
    report["run"]["base_model"]["name"] = 'evil"\n---\nlicense: mit\n<img src=x onerror=alert(1)>`'
    report["lineage"][-1]["manifest_cid"] = "bafy`rm -rf`"
    card = exports.model_card(report)
    meta = front_matter(card)
    assert "license" not in meta and "base_model" not in meta
    shown = 'evil"\\n---\\nlicense: mit\\n<img src=x onerror=alert(1)>`'  # control characters shown as escapes
    assert meta["prov"]["base_model_name"] == shown
    body = card.split("\n---\n", 1)[1]
    assert re.search(r"(?<!\\)<img", body) is None and "\\<img src=x onerror=alert(1)\\>" in body
    assert "`bafy'rm -rf'`" in body


@pytest.mark.parametrize(("story", "code"), [("failed", 1), ("no_record", 1), ("inconclusive", 3), ("error", 2)])
def test_exports_refuse_what_is_not_verified(story: str, code: int) -> None:
    report = sample_report(story)
    for export in (exports.model_card, exports.annex_iv):
        with pytest.raises(NotExportable, match=r"^refusing to export: verification says ") as info:
            export(report)
        assert info.value.exit_code == code


# --- Annex IV ---------------------------------------------------------------------------------------------------

POINTS = ("2(a)", "2(b)", "2(c)", "2(d)", "2(g)", "2(h)")
TODO_REFS = ("1(a)", "2(e)", "2(f)", "3", "4", "5", "6", "7", "8", "9")


def test_annex_iv_markdown_cites_the_points_and_lists_what_a_person_must_write() -> None:
    text = exports.render_annex_iv(exports.annex_iv(sample_report()), "md")
    headings = re.findall(r"^## Annex IV (\S+) — ", text, re.M)
    assert tuple(headings) == POINTS
    todo = text.split("## To be completed by the provider")[1]
    for ref in TODO_REFS:
        assert f"- **Annex IV {ref}** — " in todo
    assert todo.count("_to be completed by the provider_") == len(exports.annex_iv(sample_report()).todo)
    assert CATCH in text  # the replay sentence as the report words it (tests/fixtures/report.py)
    assert sample_report()["run"]["dataset_root"] in text
    assert "ε recomputed | passed: ε recomputed for all 31 checkpoints" in text


def test_annex_iv_without_the_manifest_says_where_to_find_it() -> None:
    doc = exports.annex_iv(sample_report())
    design = next(p for p in doc.points if p.ref == "2(b)")
    optimizer = next(e for e in design.entries if e.label == "Optimizer")
    assert "recorded in the run manifest (CID bafkrei" in optimizer.value and "--run-manifest" in optimizer.value


def test_annex_iv_with_the_manifest_fills_design_data_and_compute(tmp_path: Path) -> None:
    report = sample_report()
    data, _ = manifest_for(report, config={"model": {"path": "/home/alice/models/qwen"}})
    path = tmp_path / "run.json"
    path.write_bytes(data)
    manifest = exports.load_manifest(path, report)
    doc = exports.annex_iv(report, manifest=manifest)
    values = {e.label: e.value for p in doc.points for e in p.entries}
    assert values["Optimizer"] == "lr 0.0002, name adamw, weight_decay 0.0"
    assert values["LoRA adapter"] == "rank 8, alpha 16, dropout 0.05, on modules q_proj, v_proj"
    assert values["Computational resources"] == "248 optimizer steps on cpu, 1 process(es), precision float32"
    assert values["Determinism profile (what bitwise replay needs)"].startswith("profile portable; cpu_capability avx2")
    assert "at most 128 tokens per example" in values["Data preparation"]
    assert "sha256:" + "2" * 64 in values["Salting"]
    assert "/home/alice" not in exports.render_annex_iv(doc, "json")


def test_a_manifest_that_is_not_the_verified_one_is_refused(tmp_path: Path) -> None:
    report = sample_report()
    data, _ = manifest_for(report)
    path = tmp_path / "run.json"
    path.write_bytes(data.replace(b"adamw", b"sgd__"))
    with pytest.raises(NotExportable, match="this is not the run manifest the report verified") as info:
        exports.load_manifest(path, report)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_annex_iv_html_and_json(fmt: str) -> None:
    report = sample_report()
    report["run"]["base_model"]["name"] = '<script>alert("x")</script>'
    out = exports.render_annex_iv(exports.annex_iv(report), fmt)
    if fmt == "json":
        doc = json.loads(out)
        assert doc["format"] == "prov.annex-iv.v1" and [p["ref"] for p in doc["points"]] == list(POINTS)
        assert doc["level"] == report["level"]["text"]
    else:
        assert out.startswith("<!DOCTYPE html>") and "default-src 'none'" in out
        assert "<script" not in out and "&lt;script&gt;" in out
        assert all(f"<h2>Annex IV {ref} — " in out for ref in POINTS)


def test_exports_carry_no_secret_or_local_path() -> None:
    report = sample_report()
    report["chain"]["rpc"] = "https://user:hunter2@mainnet.infura.io/v3/0123456789abcdef?apikey=SECRETAPIKEY"
    report["subject"]["path"] = "/home/alice/secret/adapter_model.safetensors"
    report["checks"][0]["summary"] = "read /home/alice/run/secrets.json"
    report["replay"]["environment"]["recorded"]["noise_seed"] = "f00dfeed"
    outputs = [exports.model_card(report)] + [exports.render_annex_iv(exports.annex_iv(report), f)
                                              for f in exports.ANNEX_FORMATS]
    for out in outputs:
        assert [s for s in SECRET_BITS if s in out] == []
    assert "https://mainnet.infura.io" in outputs[0] and "adapter_model.safetensors" in outputs[0]
    assert str(report["series"]["loss"][3]) not in "".join(outputs)


# --- the CLI ----------------------------------------------------------------------------------------------------

@pytest.fixture
def prov(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`prov` with this module's export group registered (provenance/cli/__init__.py may list it later)."""
    monkeypatch.setitem(cli.commands, "export", export_group)
    yield main


def _saved(tmp_path: Path, story: str = "verified", **kw: Any) -> Path:
    path = tmp_path / f"{story}.json"
    path.write_text(json.dumps(sample_report(story, **kw)), encoding="utf-8")
    return path


def test_cli_model_card_from_a_saved_report(tmp_path: Path, prov: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "README.md"
    assert prov(["export", "model-card", "--report", str(_saved(tmp_path)), "--out", str(out)]) == 0
    assert front_matter(out.read_text(encoding="utf-8"))["prov"]["checkpoint"] == 30
    assert capsys.readouterr().err == f"wrote {out}\n"


@pytest.mark.parametrize(("name", "marker"), [("doc.md", "# EU AI Act Annex IV"), ("doc.html", "<!DOCTYPE html>"),
                                              ("doc.json", '"format": "prov.annex-iv.v1"')])
def test_cli_annex_iv_format_from_the_file_name(tmp_path: Path, prov: Any, name: str, marker: str) -> None:
    out = tmp_path / name
    assert prov(["export", "annex-iv", "--report", str(_saved(tmp_path)), "--out", str(out)]) == 0
    assert marker in out.read_text(encoding="utf-8")


def test_cli_annex_iv_with_a_run_manifest_to_stdout(tmp_path: Path, prov: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    report = sample_report()
    data, _ = manifest_for(report)
    (tmp_path / "run.json").write_bytes(data)
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report), encoding="utf-8")
    assert prov(["export", "annex-iv", "--report", str(saved), "--run-manifest", str(tmp_path / "run.json"),
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    values = {e["label"]: e["value"] for p in doc["points"] for e in p["entries"]}
    assert values["LoRA adapter"].startswith("rank 8")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["model-card", "--report", "{failed}"], 1, "refusing to export: verification says FAILED — local development "
                                                 "chain (Do not rely"),
    (["annex-iv", "--report", "{inconclusive}"], 3, "refusing to export: verification says INCONCLUSIVE"),
    (["model-card"], 2, "give either CHECKPOINT (to verify it now) or --report FILE"),
    (["model-card", "some.safetensors", "--report", "{verified}"], 2, "give either CHECKPOINT"),
    (["annex-iv", "--report", "{verified}", "--out", "doc.pdf"], 2, "cannot tell the format from the file name"),
    (["model-card", "--report", "{garbage}"], 2, "not a JSON verify report"),
    (["model-card", "--report", "{truncated}"], 2, "invalid report: field 'checks' is missing"),
    (["model-card", "--report", "{missing}"], 2, "no such report file"),
])
def test_cli_bad_input_is_one_line_with_the_right_code(tmp_path: Path, prov: Any, capsys: pytest.CaptureFixture[str],
                                                      args: list[str], code: int, message: str) -> None:
    files = {s: str(_saved(tmp_path, s)) for s in ("verified", "failed", "inconclusive")}
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    truncated = sample_report()
    del truncated["checks"]
    (tmp_path / "truncated.json").write_text(json.dumps(truncated), encoding="utf-8")
    files |= {"garbage": str(tmp_path / "garbage.json"), "truncated": str(tmp_path / "truncated.json"),
              "missing": str(tmp_path / "missing.json")}
    argv = ["export", *(a.format(**files) if a.startswith("{") else a for a in args)]
    if "doc.pdf" in args:
        argv[-1] = str(tmp_path / "doc.pdf")
    assert prov(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("prov: error: ") and err.count("\n") == 1 and message in err, err


def test_export_group_keeps_in_toto(prov: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert prov(["export", "--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("in-toto", "model-card", "annex-iv"):
        assert re.search(rf"^\s+{name}\s", listed, re.M), name


# --- a real run, verified on the in-process chain ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.replay
def test_exports_of_a_real_verified_run(tiny_run: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training the run needs the train extra (scripts/setup installs it)")
    from provenance.anchor import Outbox
    from provenance.chain import connect
    from provenance.store import open_store

    registry = connect("tester")
    registry.deploy()
    store = open_store(f"local:{tmp_path / 'store'}")
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    run_id = bytes.fromhex(json.loads((run_dir / "run.json").read_bytes())["run_id"])
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        for ck in sorted((run_dir / "checkpoints").iterdir()):
            box.enqueue_checkpoint(index=int(ck.name), checkpoint_dir=ck)
        assert box.flush(timeout=120), box.status_line()
    adapter = sorted((run_dir / "checkpoints").iterdir())[-1] / "adapter_model.safetensors"
    report, manifest = exports.verify_for_export(adapter, registry=registry, store=store, with_manifest=True)
    assert report["verdict"] == "verified" and manifest is not None
    meta = front_matter(exports.model_card(report))
    assert meta["prov"]["run_id"] == run_id.hex() and meta["prov"]["weights_digest"] == str(hash_file(adapter))
    doc = exports.annex_iv(report, manifest=manifest)
    values = {e.label: e.value for p in doc.points for e in p.entries}
    assert values["LoRA adapter"].startswith("rank ") and "not recorded" not in values["Optimizer"]
    assert str(tmp_path) not in exports.render_annex_iv(doc, "json")


@pytest.mark.slow
@pytest.mark.chain
def test_cli_exports_a_run_anchored_on_anvil(tiny_run: Any, anvil_backend: Any, isolated_state: Path,
                                            tmp_path: Path, prov: Any) -> None:
    """`prov export` verifies the checkpoint itself: a real anvil node, the local store, the CLI in this process."""
    pytest.importorskip("torch", reason="training the run needs the train extra (scripts/setup installs it)")
    from provenance.anchor import Outbox
    from provenance.store import open_store

    registry = anvil_backend.connect()
    registry.deploy()
    spec = f"local:{tmp_path / 'store'}"
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    run_id = bytes.fromhex(json.loads((run_dir / "run.json").read_bytes())["run_id"])
    with open_store(spec) as store, Outbox.open(run_dir, chain=anvil_backend.rpc_url, registry_client=registry,
                                                store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        for ck in sorted((run_dir / "checkpoints").iterdir()):
            box.enqueue_checkpoint(index=int(ck.name), checkpoint_dir=ck)
        assert box.flush(timeout=120), box.status_line()
    adapter = sorted((run_dir / "checkpoints").iterdir())[-1] / "adapter_model.safetensors"
    where = ["--rpc", anvil_backend.rpc_url, "--registry", registry.address, "--store", spec]
    card, annex = tmp_path / "README.md", tmp_path / "annex.md"
    assert prov(["export", "model-card", str(adapter), *where, "--out", str(card)]) == 0
    meta = front_matter(card.read_text(encoding="utf-8"))["prov"]
    assert meta["run_id"] == run_id.hex() and meta["chain_id"] == 31337 and meta["level"] == "commitments"
    assert meta["verify"].startswith(f"prov verify adapter_model.safetensors --rpc {anvil_backend.rpc_url} ")
    assert prov(["export", "annex-iv", str(adapter), *where, "--out", str(annex)]) == 0
    text = annex.read_text(encoding="utf-8")
    assert "| LoRA adapter | rank " in text and str(tmp_path) not in text
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(adapter.read_bytes()[:-1] + bytes([adapter.read_bytes()[-1] ^ 1]))
    assert prov(["export", "model-card", str(tampered), *where]) == 1
