"""Auditor key files and the key/export CLI: encrypted at rest, never printed, refused when tampered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from provenance import canonical, keys
from provenance.cli import cli
from tests.fixtures.attest import MANIFEST, check_statement

FAST = 2**10  # scrypt work factor for tests only


def test_new_key_round_trips_and_keeps_the_secret_encrypted(tmp_path: Path) -> None:
    public = keys.new_key("alice", "pw", path=tmp_path / "alice.json", scrypt_n=FAST)
    text = (tmp_path / "alice.json").read_text()
    opened = keys.load_key(tmp_path / "alice.json", "pw")
    assert opened.public == public
    assert hex(opened.scalar)[2:] not in text and str(opened.scalar) not in text
    assert "alice" in repr(opened) and str(opened.scalar) not in repr(opened)
    assert (tmp_path / "alice.json").stat().st_mode & 0o077 == 0
    with pytest.raises(keys.KeyFileError, match="wrong password"):
        keys.load_key(tmp_path / "alice.json", "nope")
    with pytest.raises(keys.KeyFileError, match="already exists"):
        keys.new_key("alice", "pw", path=tmp_path / "alice.json", scrypt_n=FAST)


def test_a_swapped_public_key_is_detected(tmp_path: Path) -> None:
    keys.new_key("a", "pw", path=tmp_path / "a.json", scrypt_n=FAST)
    keys.new_key("b", "pw", path=tmp_path / "b.json", scrypt_n=FAST)
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["prov"]["pk1"] = json.loads((tmp_path / "b.json").read_text())["prov"]["pk1"]
    doc["prov"]["pk2"] = json.loads((tmp_path / "b.json").read_text())["prov"]["pk2"]
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(keys.KeyFileError, match="does not match"):
        keys.load_key(tmp_path / "c.json", "pw")


def test_cli_keys_new_and_show_never_print_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(keys.ENV_PASSWORD, "correct horse")
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "new", "auditor1"])
    assert created.exit_code == 0, created.output
    shown = runner.invoke(cli, ["keys", "show", "auditor1", "--json"])
    assert shown.exit_code == 0, shown.output
    secret = keys.load_key("auditor1").scalar
    for out in (created.output, shown.output):
        assert str(secret) not in out and f"{secret:x}" not in out
    assert json.loads(shown.output)["key_id"] == keys.show_key("auditor1").key_id


def test_cli_export_in_toto_offline(tmp_path: Path) -> None:
    ck = tmp_path / "run" / "checkpoints" / "000"
    ck.mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_bytes(canonical.encode(MANIFEST))
    (ck / "adapter_model.safetensors").write_bytes(b"w")
    result = CliRunner().invoke(cli, ["export", "in-toto", str(ck), "--offline", "--model-signing",
                                      str(tmp_path / "files.json")])
    assert result.exit_code == 0, result.output
    check_statement(json.loads(result.stdout), "slsa-provenance-v1.schema.json")
    assert "not checked against the chain" in result.stderr  # --offline: the trainer's unchecked claim, said so
    check_statement(json.loads((tmp_path / "files.json").read_text()), "model-signing-v1.schema.json")
