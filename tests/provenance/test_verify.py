"""`prov verify` on real runs: an honest run verifies (with bitwise replay), and every tampering in the matrix
fails with the right check named. Runs are trained by the real trainer (tiny model), anchored through the real
outbox into the in-process py-evm chain and the local store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the verifier's replay tests need the train extra (scripts/setup installs it)")

from provenance import canonical
from provenance.anchor import Outbox
from provenance.chain import NotARegistry, Registry, Unauthorized, WeightsAlreadyCommitted, connect
from provenance.manifest import MANIFEST_NAME, hash_directory
from provenance.store import open_store
from provenance.verify import VerifyOptions, verify

pytestmark = pytest.mark.replay


class Env:
    """One in-process chain + local store, and helpers to anchor runs into it and verify files against it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.registry = connect("tester")
        self.registry.deploy()
        self.store = open_store(f"local:{tmp / 'store'}")

    def copy(self, run_dir: Path, name: str = "run") -> Path:
        dest = self.tmp / name
        shutil.copytree(run_dir, dest)
        return dest

    def anchor(self, run_dir: Path) -> None:
        run_id = bytes.fromhex(json.loads((run_dir / "run.json").read_bytes())["run_id"])
        with Outbox.open(run_dir, chain="tester", registry_client=self.registry, store_client=self.store) as box:
            box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
            for ck in sorted((run_dir / "checkpoints").iterdir()):
                box.enqueue_checkpoint(index=int(ck.name), checkpoint_dir=ck)
            assert box.flush(timeout=120), box.status_line()

    def verify(self, path: Path, **options: Any) -> dict[str, Any]:
        return verify(path, registry=self.registry, store=self.store, options=VerifyOptions(**options))


def last(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").iterdir())[-1]


def status(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def failed(report: dict[str, Any]) -> list[str]:
    return [c["id"] for c in report["checks"] if c["status"] == "failed"]


def reseal(checkpoint: Path) -> None:
    """Rewrite a checkpoint's manifest after tampering, as a dishonest trainer would before anchoring."""
    (checkpoint / MANIFEST_NAME).write_bytes(hash_directory(checkpoint).encode())


def data_options(run_dir: Path, tiny_model_dir: Path) -> dict[str, Any]:
    from training.runinfo import read_local

    _, data, _ = read_local(run_dir)
    return {"base_model": tiny_model_dir, "data": data, "secrets": run_dir / "secrets.json"}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def anchored(env: Env, tiny_run: Any) -> Path:
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    return run


def test_honest_run_verifies_with_bitwise_replay(env: Env, anchored: Path, tiny_model_dir: Path) -> None:
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all",
                        **data_options(anchored, tiny_model_dir))
    assert report["verdict"] == "verified" and report["exit_code"] == 0, failed(report)
    assert set(status(report).values()) == {"passed"}
    assert [s["status"] for s in report["replay"]["segments"]] == ["passed"] * 3
    assert all(s["bitwise"] for s in report["replay"]["segments"])
    assert len(report["lineage"]) == 4 and report["lineage"][-1]["is_subject"]
    assert report["dp"]["epsilon_recomputed"] == pytest.approx(report["dp"]["epsilon_committed"], rel=1e-3)
    # The checkpoint directory verifies too, and so does an earlier checkpoint.
    assert env.verify(last(anchored))["verdict"] == "verified"
    earlier = env.verify(anchored / "checkpoints" / "000001" / "adapter_model.safetensors")
    assert earlier["verdict"] == "verified" and len(earlier["lineage"]) == 2


def test_one_byte_changed_in_the_adapter(env: Env, anchored: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.safetensors"
    data = bytearray((last(anchored) / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    adapter.write_bytes(bytes(data))
    report = env.verify(adapter)
    assert report["verdict"] == "failed" and failed(report) == ["record"]


def test_adapter_from_another_run(env: Env, anchored: Path, tiny_config: Callable[..., Any],
                                  isolated_state: Path) -> None:
    from provenance.secrets import Secrets
    from training.trainer import train

    other = train(tiny_config(env.tmp / "other"), secrets=Secrets(bytes(32 * [7]), bytes(32 * [9])), quiet=True)
    assert other.run_dir is not None
    env.anchor(other.run_dir)
    mine = json.loads((anchored / "run.json").read_bytes())["run_id"]
    foreign = last(other.run_dir) / "adapter_model.safetensors"
    report = env.verify(foreign, expected_run=bytes.fromhex(mine))
    assert failed(report) == ["record"]
    swapped = env.copy(last(anchored), "swapped")
    shutil.copy(foreign, swapped / "adapter_model.safetensors")
    assert failed(env.verify(swapped)) == ["checkpoint_manifest"]


def test_optimizer_state_altered(env: Env, tiny_run: Any, tiny_model_dir: Path) -> None:
    from safetensors.numpy import load, save

    # After anchoring: the checkpoint directory no longer matches its commitment.
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    subject = env.copy(last(run), "subject")
    tensors = load((subject / "optimizer.safetensors").read_bytes())
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    (subject / "optimizer.safetensors").write_bytes(save(tensors))
    assert failed(env.verify(subject)) == ["checkpoint_manifest"]
    # Before anchoring (a dishonest trainer resealed it): only replay from that checkpoint can tell.
    env2 = Env(env.tmp / "second")
    run2 = env2.copy(tiny_run.run_dir)
    ck = run2 / "checkpoints" / "000001"
    tensors = load((ck / "optimizer.safetensors").read_bytes())
    tensors = {k: (v * 1.5 if v.dtype.kind == "f" and v.ndim else v) for k, v in tensors.items()}
    (ck / "optimizer.safetensors").write_bytes(save(tensors))
    reseal(ck)
    env2.anchor(run2)
    report = env2.verify(last(run2) / "adapter_model.safetensors", replay="all", **data_options(run2, tiny_model_dir))
    assert failed(report) == ["replay"]
    segment = next(s for s in report["replay"]["segments"] if s["from_index"] == 1)
    assert segment["status"] == "failed" and segment["first_divergence"] is not None


def _lines(ck: Path) -> list[bytes]:
    return (ck / "steps.jsonl").read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("how", ["altered", "dropped", "duplicated", "reordered", "inserted", "truncated"])
def test_step_log_tampered_before_anchoring(env: Env, tiny_run: Any, how: str) -> None:
    run = env.copy(tiny_run.run_dir)
    ck = run / "checkpoints" / "000002"
    lines = _lines(ck)
    if how == "altered":
        lines[0] = lines[0].replace(b'"noise_index":2', b'"noise_index":9')
    elif how == "dropped":
        del lines[0]
    elif how == "duplicated":
        lines.insert(1, lines[0])
    elif how == "reordered":
        lines.reverse()
    elif how == "inserted":
        lines.insert(1, _lines(run / "checkpoints" / "000001")[0])
    else:
        lines = lines[:-1]
    (ck / "steps.jsonl").write_bytes(b"".join(lines))
    reseal(ck)
    env.anchor(run)
    report = env.verify(last(run) / "adapter_model.safetensors")
    assert failed(report) == ["step_log"], report["checks"]


def test_manifest_altered_in_the_store(env: Env, anchored: Path) -> None:
    run_record = env.registry.get_run(json.loads((anchored / "run.json").read_bytes())["run_id"])
    cid = run_record.manifest_cid
    block = next((env.tmp / "store" / "blocks").rglob(cid))
    block.chmod(0o644)
    forged = json.loads(block.read_bytes())
    forged["training"]["dp"]["noise_multiplier"] = "5.0"
    block.write_bytes(canonical.encode(forged))
    report = env.verify(last(anchored) / "adapter_model.safetensors")
    assert failed(report) == ["run_manifest"]
    assert cid in next(c for c in report["checks"] if c["id"] == "run_manifest")["summary"]


def test_self_consistent_forgery_cannot_claim_the_adapter(env: Env, anchored: Path) -> None:
    """A forger publishes a run manifest of their own (a different CID, internally consistent) and tries to
    attach the honest adapter to it: the registry refuses a second claim on the same weights, and the honest
    lineage still verifies."""
    from provenance.hashing import Digest, hash_file

    forged = json.loads((anchored / "run.json").read_bytes())
    forged["run_id"] = "ee" * 32
    forged["training"]["dp"]["noise_multiplier"] = "50.0"
    data = canonical.encode(forged)
    cid = env.store.put_bytes(data)
    d = Digest.of(data)
    env.registry.register_run(forged["run_id"], manifest_digest=d, base_model_digest=d, dataset_root=d,
                              noise_seed_commitment=d, manifest_cid=cid)
    record = env.registry.find_by_weights(hash_file(last(anchored) / "adapter_model.safetensors"))
    with pytest.raises(WeightsAlreadyCommitted):
        env.registry.commit_checkpoint(forged["run_id"], index=0, weights_digest=record.weights_digest,
                                       checkpoint_digest=d, log_size=0, log_root=d, epsilon_micro=0, manifest_cid=cid)
    report = env.verify(last(anchored) / "adapter_model.safetensors")
    assert report["verdict"] == "verified" and report["run"]["run_id"] != forged["run_id"]


def test_wrong_base_model(env: Env, anchored: Path, tmp_path: Path) -> None:
    from training.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other-model", seed=1)
    report = env.verify(last(anchored) / "adapter_model.safetensors", base_model=other)
    assert failed(report) == ["base_model"]


def test_claimed_epsilon_lower_than_recomputed(env: Env, tiny_run: Any) -> None:
    run = env.copy(tiny_run.run_dir)
    final, before = last(run), run / "checkpoints" / "000002"
    state = json.loads((final / "state.json").read_bytes())
    state["epsilon"] = json.loads((before / "state.json").read_bytes())["epsilon"]  # ε "stopped growing"
    (final / "state.json").write_bytes(canonical.encode(state))
    reseal(final)
    env.anchor(run)
    report = env.verify(final / "adapter_model.safetensors")
    assert failed(report) == ["privacy"]
    assert "lower than" in next(c for c in report["checks"] if c["id"] == "privacy")["summary"]


def test_replay_with_different_data(env: Env, anchored: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = data_options(anchored, tiny_model_dir)
    changed = tmp_path / "data.txt"
    text = Path(options["data"]).read_text()
    changed.write_text("\n".join(line + " (edited)" for line in text.splitlines()) + "\n")
    options["data"] = changed
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all", **options)
    assert set(failed(report)) == {"dataset", "replay"}
    divergences = [s["first_divergence"] for s in report["replay"]["segments"] if s["status"] == "failed"]
    assert divergences and divergences[0]["field"] == "batch"


def test_wrong_noise_seed(env: Env, anchored: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = data_options(anchored, tiny_model_dir)
    secrets = json.loads(Path(options["secrets"]).read_bytes())
    secrets["noise_seed"] = "11" * 32
    options["secrets"] = tmp_path / "secrets.json"
    options["secrets"].write_bytes(canonical.encode(secrets))
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="1", **options)
    assert failed(report) == ["replay"] and status(report)["dataset"] == "passed"


def test_commit_by_an_unauthorised_account_is_impossible(env: Env, anchored: Path) -> None:
    from provenance.hashing import Digest

    run_id = json.loads((anchored / "run.json").read_bytes())["run_id"]
    intruder = env.registry.with_signer(env.registry.dev_keys()[3])
    d = Digest.of(b"intruder")
    with pytest.raises(Unauthorized):
        intruder.commit_checkpoint(run_id, index=4, weights_digest=d, checkpoint_digest=d, log_size=99,
                                   log_root=d, epsilon_micro=10**9, manifest_cid="bafkreiintruder")
    assert env.verify(last(anchored) / "adapter_model.safetensors")["verdict"] == "verified"


def test_registry_address_that_is_not_our_contract(env: Env, anchored: Path) -> None:
    # Deploy some other contract (a bare STOP) on the same chain and point the verifier at it.
    w3 = env.registry.web3
    tx = env.registry.transport.transact(w3.eth.contract(abi=[], bytecode="0x6001600c60003960016000f300"
                                                         ).constructor(), what="deploy other")
    with pytest.raises(NotARegistry):
        Registry(env.registry.transport, tx["contractAddress"])


def test_unmatchable_determinism_reports_weight_distance(env: Env, anchored: Path, tiny_model_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU cannot be changed in a test, so the determinism check is made to report a mismatch (what it does
    on a machine whose CPU kernels differ from the recorded ones): replay still runs, but reports the weight
    distance instead of a bitwise verdict, and the check says why."""
    from training import determinism

    monkeypatch.setattr(determinism, "check", lambda manifest: ["cpu_capability: recorded AVX512, here AVX2"])
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="1",
                        **data_options(anchored, tiny_model_dir))
    replay = next(c for c in report["checks"] if c["id"] == "replay")
    assert replay["status"] == "skipped" and "cannot match the recorded determinism" in replay["summary"]
    [segment] = report["replay"]["segments"]
    assert segment["bitwise"] is False and segment["weight_distance"] == pytest.approx(0.0, abs=1e-12)
    assert report["verdict"] == "verified"  # nothing failed; the replay is reported as not bitwise


def test_unreadable_attestation_registry_does_not_abort_verification(env: Env, anchored: Path) -> None:
    # An address with no contract: the attestation list cannot be read, the lineage verdict still stands.
    report = env.verify(last(anchored) / "adapter_model.safetensors", attestations="0x" + "12" * 20)
    assert report["verdict"] == "verified" and report["attestations"] is None
    assert any(line.startswith("attestations: could not be read") for line in report["not_checked"])
