"""Strangers on an open registry cannot flip an honest verdict (#21, #20 "Claims"), on a real anvil.

Anyone can register a run and claim any digest. Here strangers (anvil's dev accounts 1 and 2, through the project's
own registry client) register runs whose stored manifests are malformed — not UTF-8, nested 200,000 deep, fields
missing — and commit checkpoints claiming the honest adapter's weights and tensors; another registers a consistent
run of its own and commits the victim's tensor digest over a checkpoint that does not hold it. `prov verify` in a
fresh process must still say VERIFIED for the honest file and for a metadata-stripped re-save of it (as
`save_pretrained` writes), against the victim's run, listing each stranger's claim as rejected with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from provenance import canonical
from provenance._chain.keys import dev_signer
from provenance.hashing import Digest, hash_file
from provenance.manifest import encode_run_manifest, hash_directory, run_id_of
from provenance.safetensors import tensor_digest
from provenance.store import open_store
from tests.fixtures.adversary import Lab, check_of, last_adapter

pytestmark = [pytest.mark.chain, pytest.mark.slow]

MALFORMED = {
    "not UTF-8": b'{"format": "prov.run.v2", "run_id": "\xff\xfe"}',
    "200,000 deep": b"[" * 200_000 + b"]" * 200_000,
    "fields missing": canonical.encode({"format": "prov.run.v2", "run_id": "00" * 32}),
}


def stranger(lab: Lab, index: int) -> Any:
    return lab.registry.with_signer(bytes(dev_signer(index).account.key))


def stripped_copy(adapter: Path, dest: Path) -> Path:
    """The adapter re-saved as `save_pretrained` does: same tensors, metadata only {"format": "pt"}."""
    from safetensors.torch import load_file, save_file

    dest.mkdir()
    out = dest / "adapter_model.safetensors"
    save_file(load_file(str(adapter)), str(out), metadata={"format": "pt"})
    assert hash_file(out) != hash_file(adapter) and tensor_digest(out) == tensor_digest(adapter)
    return out


def claim(registry: Any, run_key: bytes, *, index: int, weights: Digest, tensors: Digest, checkpoint_dir: Path,
          cid: str, log_size: int = 0) -> None:
    registry.commit_checkpoint(run_key, index=index, weights_digest=weights, tensor_digest=tensors,
                               checkpoint_digest=hash_directory(checkpoint_dir).digest(), log_size=log_size,
                               log_root=Digest.of(b""), epsilon_micro=0, manifest_cid=cid)


def test_malformed_stranger_claims_are_rejected_and_the_honest_file_verifies(lab: Lab, tmp_path: Path) -> None:
    run = lab.train("honest")
    adapter = last_adapter(run)
    weights, tensors = hash_file(adapter), tensor_digest(adapter)
    store = open_store(lab.store_spec)
    checkpoint_cid = store.put_directory(adapter.parent)  # the honest checkpoint: the claims even hold the file
    for i, (what, manifest) in enumerate(MALFORMED.items()):
        spam = stranger(lab, 1 + i % 2)
        run_id = Digest.of(what.encode()).value
        info = spam.register_run(run_id, manifest_digest=Digest.of(manifest), base_model_digest=Digest.of(b"b"),
                                 dataset_root=Digest.of(b"d"), noise_seed_commitment=Digest.of(b"n"),
                                 manifest_cid=store.put_bytes(manifest))
        claim(spam, info.run_key, index=0, weights=weights if i == 0 else Digest.of(b"other"), tensors=tensors,
              checkpoint_dir=adapter.parent, cid=checkpoint_cid)
    lab.mine(2)

    code, report = lab.verify(adapter)  # its metadata names the honest run: checked first, the search ends there
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    assert sum(c["selected"] for c in report["claims"]) == 1 and len(report["claims"]) == 4

    copy = stripped_copy(adapter, tmp_path / "shipped")  # names no run: every claim is examined
    code, report = lab.verify(copy)
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    selected = next(c for c in report["claims"] if c["selected"])
    assert selected["run_id"] == report["run"]["run_id"] == canonical.load_json(
        (run / "run.json").read_bytes(), source="run.json")["run_id"]
    rejected = [c["note"] for c in report["claims"] if not c["selected"]]
    assert len(rejected) == 3 and all(n.startswith("rejected: its run manifest is malformed") for n in rejected)
    assert check_of(report, "record")["status"] == "passed"


def test_a_claim_whose_checkpoint_does_not_hold_the_file_is_dropped(lab: Lab, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """#20: the victim trains with anchoring off; before it anchors, a stranger registers a consistent run of its
    own (its manifest names it as owner) and commits the victim's tensor digest over a checkpoint that holds
    another adapter. The victim then anchors. A metadata-stripped copy of the victim's adapter matches both claims
    by tensors only and the stranger's is earlier and owner-bound: it must be dropped, not selected."""
    from training.config import AnchorConfig
    from training.trainer import resume

    run = lab.train("victim", **{"anchor.enabled": False})
    adapter = last_adapter(run)
    tensors = tensor_digest(adapter)
    thief = stranger(lab, 1)
    doc = canonical.load_json((run / "run.json").read_bytes(), source="run.json")
    doc["owner"] = thief.signer.address
    doc["run_id"] = run_id_of(doc)
    manifest = encode_run_manifest(doc)
    store = open_store(lab.store_spec)
    info = thief.register_run(bytes.fromhex(doc["run_id"]), manifest_digest=Digest.of(manifest),
                              base_model_digest=Digest.parse(doc["base_model"]["digest"]),
                              dataset_root=Digest.parse(doc["dataset"]["root"]),
                              noise_seed_commitment=Digest.parse(doc["secrets"]["noise_seed_commitment"]),
                              manifest_cid=store.put_bytes(manifest))
    own = run / "checkpoints" / "000000"  # holds checkpoint 0's adapter, not the final one
    claim(thief, info.run_key, index=0, weights=hash_file(own / "adapter_model.safetensors"), tensors=tensors,
          checkpoint_dir=own, cid=store.put_directory(own))

    monkeypatch.setenv("PROV_HOME", str(lab.home / ".prov"))
    assert resume(run, quiet=True, anchor=AnchorConfig(enabled=True, flush_timeout=120.0)).anchored
    lab.mine(2)

    copy = stripped_copy(adapter, tmp_path / "shipped")
    code, report = lab.verify(copy)
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    assert report["run"]["run_id"] != doc["run_id"]  # the victim's run, not the thief's
    thief_claim = next(c for c in report["claims"] if not c["selected"])
    assert "does not hold the adapter it claims" in thief_claim["note"]
    assert os.path.exists(copy)


def test_a_node_hiding_the_honest_claim_is_could_not_verify_never_failed(lab: Lab, rpc_proxy: Any) -> None:
    """The node (through the fault-injecting proxy) leaves the honest checkpoint's CheckpointCommitted log out of
    every eth_getLogs answer, while a stranger's malformed claim of the same weights is there: the verdict is
    "could not verify" (exit 2) naming the node, never FAILED."""
    run = lab.train("hidden")
    adapter = last_adapter(run)
    weights = hash_file(adapter)
    store = open_store(lab.store_spec)
    spam = stranger(lab, 2)
    info = spam.register_run(Digest.of(b"hidden spam").value, manifest_digest=Digest.of(b"\xff"),
                             base_model_digest=Digest.of(b"b"), dataset_root=Digest.of(b"d"),
                             noise_seed_commitment=Digest.of(b"n"), manifest_cid=store.put_bytes(b"\xff"))
    claim(spam, info.run_key, index=0, weights=weights, tensors=tensor_digest(adapter), checkpoint_dir=adapter.parent,
          cid=store.put_directory(adapter.parent))
    lab.mine(2)
    topic = "0x" + lab.registry.event_reader.topic("CheckpointCommitted").hex()
    honest_key = "0x" + lab.registry.run_key(bytes.fromhex(canonical.load_json(
        (run / "run.json").read_bytes(), source="run.json")["run_id"])).hex()

    def hides(log: dict[str, Any]) -> bool:
        topics = [t.lower() for t in log.get("topics", [])]
        return len(topics) > 2 and topics[0] == topic and topics[1] == honest_key and topics[2] == "0x" + weights.hex

    rpc_proxy.omit_logs(hides)
    lab.rpc_url = rpc_proxy.url
    code, report = lab.verify(adapter)
    assert code == 2 and report["verdict"] == "error", report["checks"]
    assert check_of(report, "record")["status"] == "not_run"
    assert "omitted" in check_of(report, "record")["summary"] or "node" in check_of(report, "record")["summary"]
    assert "failed" not in [c["status"] for c in report["checks"]]
    rpc_proxy.omit_logs(None)
    code, report = lab.verify(adapter)
    assert code == 0 and report["verdict"] == "verified", report["checks"]
