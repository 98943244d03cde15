"""Canary records and their private document (provenance.canaries): derived from the seed alone, of the dataset's
kind, written under the dataset's own field names, and bound to the run manifest by a commitment."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from provenance import canonical
from provenance.canaries import (
    CANARIES_FORMAT,
    augment,
    check_commitment,
    check_section,
    draw,
    load,
    text_length,
    write_jsonl,
)
from provenance.dataset import Fields, Records, load_committed, project
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.manifest import decode_run_manifest, encode_run_manifest

SEED = bytes(range(32))


def test_canaries_are_a_function_of_the_seed_with_about_half_members() -> None:
    a, b = draw(200, kind="text", max_length=32, seed=SEED), draw(200, kind="text", max_length=32, seed=SEED)
    assert a == b and a.encode() == b.encode()
    assert draw(200, kind="text", max_length=32, seed=bytes(32)) != a
    assert 70 < len(a.members()) < 130
    texts = [c.record["text"] for c in a.canaries]
    assert len(set(texts)) == 200
    assert all(len(t) >= text_length(32) == 128 and set(t) <= set("abcdefghijklmnopqrstuvwxyz ") for t in texts)
    fresh = draw(3, kind="text", max_length=32)
    assert fresh.seed != draw(3, kind="text", max_length=32).seed and len(fresh.seed) == 32


@pytest.mark.parametrize("kind", ["text", "prompt_completion", "chat"])
def test_records_of_each_kind_are_canonical(kind: str) -> None:
    canaries = draw(4, kind=kind, max_length=16, seed=SEED)
    for canary in canaries.canaries:
        assert project(canary.record, kind=kind) == canary.record
    assert canaries.canaries[0].record != canaries.canaries[1].record


def test_augmented_data_round_trips_under_the_datasets_field_names(tmp_path: Path) -> None:
    fields = Fields(prompt="question", completion="answer")
    user = Records("prompt_completion", ({"completion": "four", "prompt": "2+2?"},), fields)
    canaries = draw(10, kind="prompt_completion", max_length=16, seed=SEED)
    data = augment(user, canaries)
    assert list(data) == [user[0], *canaries.members()]
    path = tmp_path / "data.jsonl"
    write_jsonl(path, data)
    assert json.loads(path.read_text().splitlines()[0]) == {"answer": "four", "question": "2+2?"}
    section = {"fields": fields.of("prompt_completion"), "kind": "prompt_completion"}
    assert load_committed(path, section, format="jsonl").items == data.items
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(UsageError, match="kind"):
        augment(user, draw(2, kind="text", max_length=16, seed=SEED))


def test_the_document_is_private_and_checked_against_its_seed_and_the_commitment(tmp_path: Path) -> None:
    canaries = draw(8, kind="text", max_length=16, seed=SEED)
    path = tmp_path / "canaries.json"
    canaries.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path) == canaries
    section = canaries.manifest_section()
    assert section == {"commitment": str(Digest.of(canonical.encode(canaries.to_json()))), "count": 8,
                       "format": CANARIES_FORMAT}
    check_commitment(canaries, {"canaries": section}, source="run")
    doc = json.loads(path.read_bytes())
    doc["canaries"][0]["member"] = not doc["canaries"][0]["member"]  # a flipped membership bit
    path.write_bytes(canonical.encode(doc))
    with pytest.raises(FormatError, match="not those their seed derives"):
        load(path)
    other = draw(8, kind="text", max_length=16, seed=bytes(32))  # well-formed, but not the committed one
    with pytest.raises(FormatError, match="does not match the run manifest's commitment"):
        check_commitment(other, {"canaries": section}, source="run")
    with pytest.raises(UsageError, match="without canaries"):
        check_commitment(canaries, {}, source="run")
    with pytest.raises(UsageError, match="no canaries file"):
        load(tmp_path / "missing.json")
    path.write_bytes(b'{"format":"prov.canaries.v1","seed":7}')
    with pytest.raises(FormatError, match="malformed"):
        load(path)


def test_the_manifest_section_is_optional_and_validated() -> None:
    raw = (Path(__file__).parent / "golden" / "run.v1.json").read_bytes()
    manifest = decode_run_manifest(raw)
    assert "canaries" not in manifest and encode_run_manifest(manifest) == raw
    section = draw(2, kind="text", max_length=16, seed=SEED).manifest_section()
    assert decode_run_manifest(encode_run_manifest({**manifest, "canaries": section}))["canaries"] == section
    for bad in ({**section, "count": 0}, {**section, "format": "x"}, {**section, "extra": 1},
                {**section, "commitment": "sha256:zz"}, []):
        with pytest.raises(FormatError):
            check_section(bad)
        with pytest.raises(FormatError):
            decode_run_manifest(canonical.encode({**manifest, "canaries": bad}))
