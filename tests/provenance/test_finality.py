"""Finality of the outbox's jobs (provenance/finality.py, provenance/anchor.py) on the in-process py-evm chain:
the rule each chain gets, "sent" until settled, and a reorganisation (a py-evm snapshot reverted: the blocks after
it are gone) found by re-checking what the registry stores, then re-sent in order. The same on a real anvil with
`anvil_reorg`: tests/provenance/test_anchor_reorg.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provenance.anchor import Outbox
from provenance.chain import connect
from provenance.finality import DEFAULT_CONFIRMATIONS, Finality, policy
from provenance.store import open_store
from tests.provenance.test_anchor import make_run


class Node:
    """A stand-in node: its client version and whether it answers the `finalized` tag."""

    def __init__(self, version: str, finalized: int | None) -> None:
        self.client_version, self._finalized = version, finalized
        self.eth = self

    def get_block(self, tag: str) -> dict[str, int]:
        assert tag == "finalized"
        if self._finalized is None:
            raise ValueError("unknown block tag")
        return {"number": self._finalized}


def test_the_rule_each_chain_gets() -> None:
    assert policy(Node("anvil/v1.7.1", 0), chain_id=31337) == Finality(0, False, "development chain")
    assert policy(Node("anvil/v1.7.1", 0), chain_id=31337, confirmations=3) == Finality(3, False, "configured")
    assert policy(Node("x", None), chain_id=1, in_process=True).confirmations == 0
    tagged = policy(Node("Geth/v1.14", 100), chain_id=1)
    assert tagged.tag and tagged.is_final(100, latest=130, finalized=100)
    assert not tagged.is_final(101, latest=130, finalized=100)
    assert policy(Node("anvil/v1.7.1", 0), chain_id=10).tag  # anvil posing as OP mainnet: not a dev chain
    untagged = policy(Node("bor/v1", None), chain_id=8453)
    assert not untagged.tag and untagged.confirmations == DEFAULT_CONFIRMATIONS
    assert untagged.is_final(100, latest=100 + DEFAULT_CONFIRMATIONS, finalized=None)
    assert not untagged.is_final(100, latest=99 + DEFAULT_CONFIRMATIONS, finalized=None)
    assert policy(Node("bor/v1", 5), chain_id=137).confirmations == 128  # Polygon PoS: deep reorgs, no tag
    with pytest.raises(ValueError):
        policy(Node("x", None), chain_id=1, confirmations=-1)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Any, Any, Path, bytes]:
    registry = connect("tester", use_config=False)
    registry.deploy()
    run_dir, run_id = make_run(tmp_path, checkpoints=3)
    return registry, open_store(f"local:{tmp_path / 'store'}"), run_dir, run_id


def enqueue_all(box: Outbox, run_dir: Path, run_id: bytes, upto: int) -> None:
    box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
    for i in range(upto):
        box.enqueue_checkpoint(index=i, checkpoint_dir=run_dir / "checkpoints" / f"{i:06d}")


def test_jobs_are_sent_until_enough_blocks_settle_them(world: tuple[Any, Any, Path, bytes]) -> None:
    registry, store, run_dir, run_id = world
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store, confirmations=2) as box:
        enqueue_all(box, run_dir, run_id, 3)
        assert box.flush(timeout=60)
        assert [j.final for j in box.jobs()] == [False] * 4  # sent at the receipt, not final
        assert "awaiting 2 confirmations (configured)" in box.status_line()
        box.recheck()
        assert [j.final for j in box.jobs()] == [True, True, False, False]  # 3 and 2 blocks on top, 1, 0
        registry.web3.provider.ethereum_tester.mine_blocks(2)
        box.recheck()
        assert [j.final for j in box.jobs()] == [True] * 4 and box.status_line() == "anchored 4/4"


def test_a_reorganisation_is_found_by_what_the_registry_stores_and_resent(world: tuple[Any, Any, Path, bytes]) -> None:
    registry, store, run_dir, run_id = world
    tester = registry.web3.provider.ethereum_tester
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        enqueue_all(box, run_dir, run_id, 1)
        assert box.flush(timeout=60)
        fork = tester.take_snapshot()
        enqueue_all(box, run_dir, run_id, 3)
        assert box.flush(timeout=60) and box.status_line() == "anchored 4/4"
        assert [j.final for j in box.jobs()] == [True] * 4  # a development chain: final at the receipt
        tester.revert_to_snapshot(fork)  # checkpoints 1 and 2 are no longer on this chain
        dropped = box.recheck()
        assert [j.name for j in dropped] == ["checkpoint 1", "checkpoint 2"]
        assert [j.state for j in box.jobs()] == ["done", "done", "dropped", "dropped"]
        assert box.status_line().startswith("anchored 2/4; 2 dropped by a chain reorganisation")
        assert box.flush(timeout=60)  # re-sent in order
        assert box.recheck() == [] and [j.state for j in box.jobs()] == ["done"] * 4
        assert [j.drops for j in box.jobs()] == [0, 0, 1, 1]
    history = registry.run(bytes.fromhex(box.jobs()[0].run_key))
    assert [c.index for c in history.checkpoints] == [0, 1, 2]


def test_an_outbox_written_before_finality_still_reads(world: tuple[Any, Any, Path, bytes]) -> None:
    """Job files without `final`/`drops` (prov before this change) load; a recheck settles them."""
    import json

    registry, store, run_dir, run_id = world
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        enqueue_all(box, run_dir, run_id, 2)
        assert box.flush(timeout=60)
        for path in sorted(box.jobs_dir.glob("*.json")):
            doc = json.loads(path.read_bytes())
            del doc["final"], doc["drops"]
            path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
        assert [j.final for j in box.jobs()] == [False] * 3
        box.recheck()
        assert [j.final for j in box.jobs()] == [True] * 3


def test_an_outbox_on_the_vanished_in_process_chain_is_not_rechecked(world: tuple[Any, Any, Path, bytes]) -> None:
    """Re-opened in a new process (no live client), an outbox that anchored to `--chain tester` cannot be re-checked:
    a fresh in-process chain would make every job look dropped. It says so instead of re-sending to a new chain."""
    from provenance.errors import ChainError

    registry, store, run_dir, run_id = world
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        enqueue_all(box, run_dir, run_id, 1)
        assert box.flush(timeout=60)
    with Outbox.open(run_dir, reuse_target=True) as box:
        with pytest.raises(ChainError, match="existed only inside the process that trained it"):
            box.recheck()
        assert [j.state for j in box.jobs()] == ["done", "done"]


def test_a_flush_waits_for_the_workers_first_recheck(world: tuple[Any, Any, Path, bytes],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed trainer starts the worker and, with no step left to take, flushes at once: the flush must not call
    the run anchored before the worker's first re-check has found what a reorganisation dropped (and re-sent it)."""
    import threading

    registry, store, run_dir, run_id = world
    tester = registry.web3.provider.ethereum_tester
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        enqueue_all(box, run_dir, run_id, 1)
        assert box.flush(timeout=60)
        fork = tester.take_snapshot()
        enqueue_all(box, run_dir, run_id, 3)
        assert box.flush(timeout=60)
        tester.revert_to_snapshot(fork)
    release = threading.Event()
    slow = Outbox._recheck_quietly

    def recheck_later(self: Outbox) -> None:
        release.wait(timeout=2.0)  # a node slow to answer the resumed worker's first question
        slow(self)

    monkeypatch.setattr(Outbox, "_recheck_quietly", recheck_later)
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.start()
        assert [j.state for j in box.jobs()] == ["done"] * 4  # nothing known dropped yet
        assert box.flush(timeout=60)
        assert [j.drops for j in box.jobs()] == [0, 0, 1, 1] and [j.state for j in box.jobs()] == ["done"] * 4
    assert [c.index for c in registry.run(bytes.fromhex(box.jobs()[0].run_key)).checkpoints] == [0, 1, 2]
