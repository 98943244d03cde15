"""Trainer-supplied strings never drive the auditor's terminal (#22): control and bidi characters come out as
visible escapes, --json output stays valid JSON, and a FIFO where a file is expected is refused at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from provenance.attestations import load_trusted
from provenance.canonical import dumps_for_terminal, escape_controls, escape_strings
from provenance.errors import UsageError
from tests.hostile.child import assert_bounded, run_prov

HOSTILE = "EU AI Office\u202e(accredited)\x1b[2J\r\u2066x\u2069\x9b"


def test_escape_controls_leaves_nothing_that_moves_the_cursor() -> None:
    shown = escape_controls(HOSTILE)
    assert all(ch not in shown for ch in "\u202e\x1b\r\u2066\u2069\x9b")
    assert "\\u202e" in shown and "\\x1b" in shown and shown.startswith("EU AI Office")
    assert escape_controls("ε ≥ 1.0 — ok") == "ε ≥ 1.0 — ok"  # ordinary text is untouched


def test_json_for_the_terminal_is_valid_json_with_escapes() -> None:
    doc = {"name": HOSTILE, "nested": [{"k\u202e": "v\x85"}]}
    text = dumps_for_terminal(doc)
    assert json.loads(text) == doc  # the same value, round-tripped
    assert all(ch not in text for ch in "\u202e\x1b\r\u2066\u2069\x9b\x85")


def test_escape_strings_reaches_keys_and_nested_values() -> None:
    out = escape_strings({"a\x1b": [HOSTILE, 3, None]})
    assert list(out) == ["a\\x1b"] and "\x1b" not in out["a\\x1b"][0] and out["a\\x1b"][1:] == [3, None]


def test_a_fifo_as_the_adapter_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "adapter_model.safetensors"
    os.mkfifo(fifo)
    line = assert_bounded(run_prov("verify", str(fifo), "--rpc", "http://127.0.0.1:9", "--registry",
                                   "0x" + "11" * 20, cwd=tmp_path), wall=20)
    assert "not a regular file" in line and str(fifo) in line


@pytest.mark.parametrize("content", [b"{", b'{"a": 1}', b'["not-hex"]', b"[" * 100_000 + b"]" * 100_000])
def test_a_bad_trust_list_is_one_usage_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "trusted.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        load_trusted(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_trust_list_is_read_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps(["0xABCDEF0000000000000000000000000000000001"]))
    assert load_trusted(path) == frozenset({"0xabcdef0000000000000000000000000000000001"})
