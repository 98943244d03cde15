"""Keys fixed after registration (`prov.keys.v1`, issue #23): the sampler's and the noise's per-step keys derive
from the run's noise seed and the hash of the block that included its registration; everything else keeps the
seed alone. Known answers pin the byte layout (docs/formats.md, "Key derivations")."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from provenance.errors import FormatError, UsageError
from provenance.sampler import poisson_indices
from provenance.secrets import (
    ANCHORED_FORMATS,
    Secrets,
    keys_anchored,
    load_anchor,
    run_secrets,
    save_anchor,
)

SEED, KEY, BLOCK = bytes(range(32)), bytes(32), bytes(range(32, 64))


def test_known_answer() -> None:
    s = Secrets(SEED, KEY).anchored(BLOCK)
    expected = "d8547fe4d61b1c587184ed215a982977cdaf84520dfe3301acfcb155b5b0d86f"
    assert s.sample_secret.hex() == expected
    assert s.sample_secret == hmac.new(SEED, b"prov.keys.v1" + BLOCK, hashlib.sha256).digest()
    assert s.noise_key(3).hex() == "3d64a917b6e52731a371e967cf35a7b3"
    assert poisson_indices(s.sample_secret, 0, 64, 0.1) == [8, 11, 23, 46]


def test_only_the_sampler_and_the_noise_move() -> None:
    old, new = Secrets(SEED, KEY), Secrets(SEED, KEY).anchored(BLOCK)
    assert old.sample_secret == SEED and new.sample_secret != SEED
    assert old.noise_key(0) != new.noise_key(0)
    assert other_block_differs(new)
    assert (old.stats_key(), old.batch_key(), old.dropout_seed(5)) == (new.stats_key(), new.batch_key(),
                                                                       new.dropout_seed(5))
    assert old.commitments() == new.commitments()  # the anchor is public and never in secrets.json
    assert new.anchored(None) == old
    with pytest.raises(FormatError, match="32 bytes"):
        old.anchored(b"short")


def other_block_differs(s: Secrets) -> bool:
    return s.anchored(bytes(32)).sample_secret != s.sample_secret


def test_manifest_formats_decide() -> None:
    assert keys_anchored({"formats": dict(ANCHORED_FORMATS)})
    assert not keys_anchored({"formats": {"noise": "prov.noise.v2"}})
    assert not keys_anchored({"format": "prov.run.v1"})


def test_keys_json_round_trip_and_refusals(tmp_path: Path) -> None:
    assert load_anchor(tmp_path) is None
    save_anchor(tmp_path, block_hash=BLOCK, block_number=17)
    assert load_anchor(tmp_path) == (BLOCK, 17)
    doc = json.loads((tmp_path / "keys.json").read_bytes())
    assert doc == {"block_hash": "0x" + BLOCK.hex(), "block_number": 17, "format": "prov.keys.v1"}
    (tmp_path / "keys.json").write_text('{"block_hash":"0x12","block_number":17,"format":"prov.keys.v1"}')
    with pytest.raises(FormatError, match=r"keys\.json: needs block_hash"):
        load_anchor(tmp_path)


def test_run_secrets_needs_the_recorded_block(tmp_path: Path) -> None:
    secrets = Secrets(SEED, KEY)
    secrets.save(tmp_path / "secrets.json")
    manifest = {"formats": dict(ANCHORED_FORMATS), "secrets": secrets.commitments()}
    with pytest.raises(UsageError, match=r"no keys\.json"):
        run_secrets(tmp_path, manifest)
    save_anchor(tmp_path, block_hash=BLOCK, block_number=3)
    assert run_secrets(tmp_path, manifest).sample_secret == secrets.anchored(BLOCK).sample_secret
    assert run_secrets(tmp_path, {"formats": {}, "secrets": secrets.commitments()}).anchor is None


def test_replay_request_carries_the_anchor() -> None:
    pytest.importorskip("torch", reason="the replay worker is in the train extra")
    from training.replay import parse_request

    base = {"format": "prov.replay-request.v1", "manifest": "m", "base_model": "b", "data": None, "secrets": None,
            "segments": []}
    assert parse_request(base).keys_anchor is None
    assert parse_request(base | {"keys_anchor": "0x" + BLOCK.hex()}).keys_anchor == BLOCK
    with pytest.raises(FormatError, match="keys_anchor"):
        parse_request(base | {"keys_anchor": "0x1234"})


def test_the_keys_anchor_is_the_registration_logs_block_or_the_node_is_not_trusted() -> None:
    """The verifier reads the registration block's hash from the chain; a node whose block disagrees with the block
    hash its own registration log gave is contradicting itself: a chain error (could not verify), never a FAILED
    steps check on an honest run (found in review)."""
    from types import SimpleNamespace

    from provenance._chain.reader import BlockInfo
    from provenance._verify.auditor import _keys_anchor
    from provenance.errors import ChainError
    from provenance.secrets import ANCHORED_FORMATS

    manifest = {"formats": dict(ANCHORED_FORMATS)}
    logged = b"\x11" * 32

    class Node:
        def __init__(self, block_hash: bytes) -> None:
            self.block_hash = block_hash

        def block(self, number: int) -> BlockInfo:
            return BlockInfo(number, self.block_hash, 0)

    ev = SimpleNamespace(manifest=manifest, run=SimpleNamespace(block_number=7, block_hash=logged))
    assert _keys_anchor(ev, Node(logged)) == logged  # type: ignore[arg-type]
    with pytest.raises(ChainError, match="registration log"):
        _keys_anchor(ev, Node(b"\x22" * 32))  # type: ignore[arg-type]
    older = SimpleNamespace(manifest=manifest, run=SimpleNamespace(block_number=7, block_hash=None))
    assert _keys_anchor(older, Node(b"\x22" * 32)) == b"\x22" * 32  # type: ignore[arg-type]
