"""The anchoring outbox against the real in-process chain (py-evm) and the real local store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance import canonical, chain
from provenance.anchor import Outbox
from provenance.chain import connect
from provenance.errors import UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import MANIFEST_NAME, encode_run_manifest, hash_directory
from provenance.safetensors import tensor_digest
from provenance.steplog import StepLog
from provenance.store import open_store
from tests.fixtures.chainvalues import adapter_bytes
from tests.fixtures.golden import run_manifest
from tests.fixtures.records import rec


def make_run(tmp_path: Path, *, checkpoints: int = 3, steps_each: int = 4) -> tuple[Path, bytes]:
    """A run directory shaped as the trainer writes it (run.json, steps.jsonl, checkpoints/<i>/...)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    doc = run_manifest()
    run_id = bytes.fromhex("ab" * 32)
    doc["run_id"] = run_id.hex()
    (run_dir / "run.json").write_bytes(encode_run_manifest(doc))
    log = StepLog.open(run_dir)
    for index in range(checkpoints):
        start = log.size
        if index:
            for _ in range(steps_each):
                log.append(rec(log.size))
        ck = run_dir / "checkpoints" / f"{index:06d}"
        ck.mkdir(parents=True)
        (ck / "adapter_model.safetensors").write_bytes(adapter_bytes(index))
        (ck / "steps.jsonl").write_bytes(log.segment(start, log.size))
        (ck / "state.json").write_bytes(canonical.encode({
            "log_size": log.size, "log_root": log.root().hex(), "epsilon": repr(0.5 * index), "step": log.size}))
        (ck / MANIFEST_NAME).write_bytes(hash_directory(ck).encode())
    log.close()
    return run_dir, run_id


@pytest.fixture
def clients(tmp_path: Path):
    registry = connect("tester")
    registry.deploy()
    return registry, open_store(f"local:{tmp_path / 'store'}")


def test_outbox_registers_and_commits_in_order(tmp_path: Path, clients) -> None:
    registry, store = clients
    run_dir, run_id = make_run(tmp_path)
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        for i in range(3):
            box.enqueue_checkpoint(index=i, checkpoint_dir=run_dir / "checkpoints" / f"{i:06d}")
        box.enqueue_checkpoint(index=1, checkpoint_dir=run_dir / "checkpoints" / "000001")  # duplicate: ignored
        assert len(box.jobs()) == 4
        assert box.flush(timeout=60)
        assert box.status_line() == "anchored 4/4"
    key = registry.run_key(run_id)  # the outbox's signer registered the run: its key, recorded in every job
    assert {j.run_key for j in box.jobs()} == {key.hex()}
    history = registry.run(key)
    run = history.registration
    assert run.checkpoint_count == 3 and run.manifest_digest == Digest.of((run_dir / "run.json").read_bytes())
    for i, record in enumerate(history.checkpoints):
        ck = run_dir / "checkpoints" / f"{i:06d}"
        assert record.weights_digest == hash_file(ck / "adapter_model.safetensors")
        assert record.tensor_digest == tensor_digest(ck / "adapter_model.safetensors")
        assert record.checkpoint_digest == hash_directory(ck).digest()
        assert store.list_directory(record.manifest_cid).keys() >= {"state.json", "steps.jsonl"}
    assert history.checkpoints[-1].log_size == 8


def test_outbox_survives_restart_and_never_sends_twice(tmp_path: Path, clients) -> None:
    registry, store = clients
    run_dir, run_id = make_run(tmp_path)
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        box.enqueue_checkpoint(index=0, checkpoint_dir=run_dir / "checkpoints" / "000000")
        assert box.flush(timeout=60)
    # Simulate a crash after sending checkpoint 1 but before recording it done: send it behind the outbox's back.
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_checkpoint(index=1, checkpoint_dir=run_dir / "checkpoints" / "000001")
        job_file = sorted((run_dir / "outbox" / "jobs").glob("*.json"))[-1]
        assert box.step() is True
        doc = json.loads(job_file.read_bytes())
        doc["state"] = "pending"
        job_file.write_bytes(canonical.encode(doc))
    with Outbox.open(run_dir, reuse_target=True, registry_client=registry, store_client=store) as box:
        assert [j.state for j in box.jobs()] == ["done", "done", "pending"]
        assert box.flush(timeout=60)
        key = registry.run_key(run_id)
        assert box.jobs()[-1].tx == registry.run(key).checkpoints[1].tx_hash  # the original transaction
    assert registry.run_state(key).checkpoint_count == 2


def test_outbox_retries_an_unreachable_chain_without_raising(tmp_path: Path) -> None:
    run_dir, run_id = make_run(tmp_path, checkpoints=1)
    with Outbox.open(run_dir, chain="http://127.0.0.1:9", registry="0x" + "11" * 20,
                     store=f"local:{tmp_path / 'store'}") as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        box.start()
        assert box.wait_registered(timeout=1.0) is False
        assert box.flush(timeout=1.0) is False
        assert "retrying" in box.status_line()
        assert box.jobs()[0].state == "pending" and box.jobs()[0].attempts >= 1


def test_a_second_process_cannot_work_the_same_outbox(tmp_path: Path) -> None:
    run_dir, _ = make_run(tmp_path, checkpoints=1)
    with Outbox.open(run_dir, store=f"local:{tmp_path / 'store'}"), \
            pytest.raises(UsageError, match="another prov process"):
        Outbox.open(run_dir, store=f"local:{tmp_path / 'store'}")


def test_a_conflicting_commit_stops_the_queue(tmp_path: Path, clients) -> None:
    registry, store = clients
    run_dir, run_id = make_run(tmp_path, checkpoints=2)
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        box.enqueue_checkpoint(index=0, checkpoint_dir=run_dir / "checkpoints" / "000000")
        assert box.flush(timeout=60)
        # Checkpoint 0's directory changes after it was anchored, and its job is re-sent: the chain already holds
        # other values for index 0, so the outbox must stop with the conflict rather than retry forever.
        (run_dir / "checkpoints" / "000000" / "adapter_model.safetensors").write_bytes(adapter_bytes(99))
        job_file = sorted((run_dir / "outbox" / "jobs").glob("*.json"))[-1]
        doc = json.loads(job_file.read_bytes())
        doc.update(state="pending", cid="")
        job_file.write_bytes(canonical.encode(doc))
        assert box.flush(timeout=30) is False
        assert "anchoring stopped at checkpoint 0" in box.status_line()
        assert "already committed with other values" in box.status_line()


def test_a_stopped_queue_is_retried_once_the_cause_is_fixed(tmp_path: Path, clients) -> None:
    """`prov anchor flush` retries what stopped anchoring (retry_failed): checkpoint 0's directory is restored after
    a conflict stopped the queue, and the re-sent job finds its commitment on chain (idempotent: sent once)."""
    registry, store = clients
    run_dir, run_id = make_run(tmp_path, checkpoints=1)
    adapter = run_dir / "checkpoints" / "000000" / "adapter_model.safetensors"
    honest = adapter.read_bytes()
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        box.enqueue_checkpoint(index=0, checkpoint_dir=run_dir / "checkpoints" / "000000")
        assert box.flush(timeout=60)
        first_tx = box.jobs()[-1].tx
        assert first_tx
        adapter.write_bytes(adapter_bytes(99))
        job_file = sorted((run_dir / "outbox" / "jobs").glob("*.json"))[-1]
        doc = json.loads(job_file.read_bytes())
        job_file.write_bytes(canonical.encode({**doc, "state": "pending", "cid": ""}))
        assert box.flush(timeout=30) is False and box.jobs()[-1].state == "failed"
        assert box.retry_failed() == ["checkpoint 0"]  # retried before the cause is fixed: it stops again
        assert box.flush(timeout=30) is False and box.jobs()[-1].state == "failed"
        adapter.write_bytes(honest)  # the operator fixes the cause
        assert box.retry_failed() == ["checkpoint 0"]
        assert box.flush(timeout=30) is True, box.status_line()
        assert box.jobs()[-1].state == "done" and box.status_line().startswith("anchored 2/2")
    assert box.jobs()[-1].tx == first_tx  # the commitment made before, found again, not a second one


def test_finalize_is_queued_last_and_idempotent(tmp_path: Path, clients) -> None:
    registry, store = clients
    run_dir, run_id = make_run(tmp_path, checkpoints=2)
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        box.enqueue_checkpoint(index=0, checkpoint_dir=run_dir / "checkpoints" / "000000")
        box.enqueue_finalize(Digest.of(b"merged tensors"))
        box.enqueue_finalize()  # queued once
        assert [j.name for j in box.jobs()] == ["registration", "checkpoint 0", "finalization"]
        assert box.flush(timeout=60)
        finalized_in = box.jobs()[-1].block
    history = registry.run(registry.run_key(run_id))
    assert history.finalization is not None and history.finalization.block_number == finalized_in
    assert history.finalization.merged_tensor_digest == Digest.of(b"merged tensors")
    assert finalized_in > history.checkpoints[0].block_number
    with Outbox.open(run_dir, reuse_target=True, registry_client=registry, store_client=store) as box:
        job_file = sorted((run_dir / "outbox" / "jobs").glob("*.json"))[-1]
        doc = json.loads(job_file.read_bytes())
        doc["state"] = "pending"
        job_file.write_bytes(canonical.encode(doc))
        assert box.flush(timeout=60)  # already finalized on chain: done without sending


def test_a_manifest_naming_another_owner_is_not_registered_from_this_key(tmp_path: Path, clients) -> None:
    registry, store = clients
    run_dir, run_id = make_run(tmp_path, checkpoints=1)
    doc = json.loads((run_dir / "run.json").read_bytes())
    other = "0x" + "12" * 20
    doc.update(format="prov.run.v2", formats={}, owner=other)
    (run_dir / "run.json").write_bytes(encode_run_manifest(doc))
    with Outbox.open(run_dir, chain="tester", registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        assert box.flush(timeout=30) is False
        assert f"names {other} as the run's owner, but the outbox signs with {registry.signer.address}" in (
            box.status_line())
    with pytest.raises(chain.UnknownRun):
        registry.run(registry.run_key(run_id))


def test_awaiting_finality_counts_sent_commitments_not_yet_final(tmp_path: Path) -> None:
    """What `prov train` prints after "anchored yes": sent and mined, but not final on a chain with confirmations."""
    from provenance.anchor import Job, awaiting_finality

    assert awaiting_finality(tmp_path) == 0  # no outbox
    jobs = tmp_path / "outbox" / "jobs"
    jobs.mkdir(parents=True)
    for job in (Job(0, "register", -1, "run.json", state="done", final=True),
                Job(1, "checkpoint", 0, "checkpoints/000000", state="done", final=False),
                Job(2, "checkpoint", 1, "checkpoints/000001", state="pending")):
        job.file(jobs).write_bytes(canonical.encode(job.to_json()))
    assert awaiting_finality(tmp_path) == 1
    (jobs / "000003-checkpoint.json").write_bytes(b"\x80 not json")  # unreadable: not counted, never raised
    assert awaiting_finality(tmp_path) == 1
