"""The hand-off bundle's parts that need no chain: the coordinates document read at a trust boundary, the pins
against the auditor's own options, the private kit kept apart, and CAR files that are not bundles."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from provenance import canonical
from provenance.bundle import Coordinates, open_bundle, pins_for, write_kit
from provenance.car import write_car
from provenance.cid import DAG_PB, RAW, Cid
from provenance.errors import FormatError, UsageError

CID = str(Cid.of(RAW, b"x"))
COORDS = Coordinates(chain_id=31337, genesis_hash="0x" + "ab" * 32, registry="0x" + "12" * 20, run_id="cd" * 32,
                     rpc_hint="http://127.0.0.1:8545", run_manifest=CID, checkpoints=(CID,))


def test_coordinates_round_trip_and_malformed_fields_are_named() -> None:
    assert Coordinates.from_json(canonical.decode(canonical.encode(COORDS.to_json())), source="b") == COORDS
    for key, value, message in (("format", "prov.bundle.v0", "not a prov.bundle.v1"),
                                ("chain_id", True, "chain_id"), ("genesis_hash", "0x12", "genesis_hash"),
                                ("registry", "nope", "registry"), ("checkpoints", [], "checkpoints"),
                                ("run_manifest", "not-a-cid", "CID"), ("rpc_hint", 5, "rpc_hint"),
                                ("rpc_hint", "http://x\x1b[2J\u202e", "rpc_hint")):
        with pytest.raises(FormatError, match=message):
            Coordinates.from_json({**COORDS.to_json(), key: value}, source="b")


def test_pins_refuse_an_auditor_option_that_names_another_chain() -> None:
    pins = pins_for(COORDS, chain_id=None, genesis_hash=None, registry=None, expected_registry=None)
    assert (pins.chain_id, pins.registry) == (31337, COORDS.registry)
    same = pins_for(COORDS, chain_id=31337, genesis_hash=COORDS.genesis_hash.upper().replace("0X", "0x"),
                    registry=None, expected_registry=COORDS.registry.upper().replace("0X", "0x"))
    assert same == pins
    with pytest.raises(UsageError, match="--expect-chain-id 1 differs from the bundle's 31337"):
        pins_for(COORDS, chain_id=1, genesis_hash=None, registry=None, expected_registry=None)
    with pytest.raises(UsageError, match="--registry"):
        pins_for(COORDS, chain_id=None, genesis_hash=None, registry="0x" + "34" * 20, expected_registry=None)


def test_the_private_kit_is_its_own_marked_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "secrets.json").write_text("{}")
    (run / "stats.jsonl").write_text("")
    files = write_kit(run, tmp_path / "kit")
    assert sorted(p.name for p in files) == ["PRIVATE-AUDITOR-KIT.txt", "secrets.json", "stats.jsonl"]
    assert stat.S_IMODE((tmp_path / "kit").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert "Never publish it" in (tmp_path / "kit" / "PRIVATE-AUDITOR-KIT.txt").read_text()
    with pytest.raises(UsageError, match="not empty"):
        write_kit(run, tmp_path / "kit")
    (run / "data.jsonl").write_text('{"text":"a"}\n')  # a run trained with canaries: its training set goes too
    files = write_kit(run, tmp_path / "kit-canaries")
    assert sorted(p.name for p in files) == ["PRIVATE-AUDITOR-KIT.txt", "data.jsonl", "secrets.json", "stats.jsonl"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    (run / "secrets.json").unlink()
    with pytest.raises(UsageError, match=r"no secrets\.json"):
        write_kit(run, tmp_path / "kit2")


def test_a_car_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    block = b"\x0a\x02\x08\x01"  # a dag-pb node: not a coordinates document
    plain = tmp_path / "plain.car"
    write_car(plain, [Cid.of(DAG_PB, block)], [(Cid.of(DAG_PB, block), block)])
    with pytest.raises(FormatError, match="not a prov bundle"):
        open_bundle(plain, tmp_path / "s1")
    doc = canonical.encode({**COORDS.to_json(), "checkpoints": [str(Cid.of(RAW, b"y"))]})
    lying = tmp_path / "lying.car"
    write_car(lying, [Cid.of(RAW, doc), Cid.of(RAW, b"x")], [(Cid.of(RAW, doc), doc), (Cid.of(RAW, b"x"), b"x")])
    with pytest.raises(FormatError, match="other artifacts than the CAR's roots"):
        open_bundle(lying, tmp_path / "s2")
    with pytest.raises(UsageError, match="no such bundle"):
        open_bundle(tmp_path / "missing.car", tmp_path / "s3")
