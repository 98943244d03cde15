"""`prov verify` on real runs: an honest run verifies at every level (with whole-checkpoint bitwise replay), and
every tampering in the matrix fails with the right check named. Runs are trained by the real trainer (tiny model),
anchored through the real outbox into the in-process py-evm chain and the local store. The attacks a dishonest
*trainer* would mount with its own code live in tests/adversarial/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the verifier's replay tests need the train extra (scripts/setup installs it)")

from provenance import canonical
from provenance.chain import NotARegistry, Registry, Unauthorized
from tests.fixtures.verify import VerifyEnv, check, data_options, failed, last, reseal, status

pytestmark = pytest.mark.replay


@pytest.fixture
def env(tmp_path: Path) -> VerifyEnv:
    return VerifyEnv(tmp_path)


@pytest.fixture
def anchored(env: VerifyEnv, tiny_run: Any) -> Path:
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    return run


def test_honest_run_verifies_fully_replayed(env: VerifyEnv, anchored: Path, tiny_model_dir: Path) -> None:
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all",
                        **data_options(anchored, tiny_model_dir))
    assert report["verdict"] == "verified" and report["exit_code"] == 0, failed(report)
    assert set(status(report).values()) == {"passed"}
    assert report["level"]["name"] == "full" and report["level"]["text"].startswith("VERIFIED (fully replayed)")
    assert [s["status"] for s in report["replay"]["segments"]] == ["passed"] * 4  # checkpoint 0 and 3 segments
    assert all(s["bitwise"] and s["expected"] == s["found"] for s in report["replay"]["segments"])
    assert len(report["lineage"]) == 4 and report["lineage"][-1]["is_subject"]
    # The verifier's own bound (dp-accounting PLD) lies below opacus' committed PRV ε by about PRV's eps_error (0.01).
    dp = report["dp"]
    assert dp["epsilon_committed"] - 0.012 < dp["epsilon_recomputed"] <= dp["epsilon_committed"]
    assert report["dp"]["epsilon_checked"] == 4
    assert report["series"]["loss_status"] == "checked" and len(report["series"]["loss"]) == 6


def test_each_level_says_what_was_proven(env: VerifyEnv, anchored: Path, tiny_model_dir: Path) -> None:
    adapter = last(anchored) / "adapter_model.safetensors"
    plain = env.verify(adapter)
    assert plain["level"]["name"] == "commitments" and plain["series"]["loss_status"] == "withheld"
    assert plain["series"]["loss"] is None
    data = env.verify(adapter, replay="0", **data_options(anchored, tiny_model_dir))
    assert data["level"]["text"].startswith("VERIFIED (commitments and data)")
    # Block hashes are the chain runner's to pick (and known to the trainer before it ships): without --beacon the
    # verifier draws its own seed, records it, and the same seed repeats the draw.
    unseeded = env.verify(adapter, replay="1", **data_options(anchored, tiny_model_dir))
    assert unseeded["level"]["name"] == "sampled", unseeded["checks"]
    beacon = unseeded["replay"]["beacon"]
    assert beacon["auditor_seed_origin"] == "drawn" and beacon["source"] == "chain+auditor"
    assert "a seed drawn at random here" in check(unseeded, "replay")["summary"]
    again = env.verify(adapter, replay="1", beacon=beacon["auditor_seed"], **data_options(anchored, tiny_model_dir))
    assert again["replay"]["chosen"] == unseeded["replay"]["chosen"]
    assert again["replay"]["beacon"]["auditor_seed_origin"] == "given"
    sampled = env.verify(adapter, replay="1", beacon="auditor's seed", **data_options(anchored, tiny_model_dir))
    assert sampled["level"]["name"] == "sampled" and sampled["level"]["replayed"] == 1
    # --replay 1 re-runs the file's own last segment only: a forged earlier one is not caught (worst case 0)
    assert sampled["replay"]["chosen"] == [3] and sampled["level"]["catch_probability"] == 0.0
    auto = env.verify(adapter, beacon="auditor's seed", **data_options(anchored, tiny_model_dir))
    chosen = auto["replay"]["chosen"]
    assert auto["replay"]["requested"] == "auto" and len(chosen) == 2 and 3 in chosen
    assert auto["level"]["catch_probability"] == pytest.approx(1 / 2)
    assert sampled["replay"]["beacon"]["source"] == "chain+auditor"
    # The checkpoint directory verifies too, and so does an earlier checkpoint.
    assert env.verify(last(anchored))["verdict"] == "verified"
    earlier = env.verify(anchored / "checkpoints" / "000001" / "adapter_model.safetensors")
    assert earlier["verdict"] == "verified" and len(earlier["lineage"]) == 2


def test_one_byte_changed_in_the_adapter(env: VerifyEnv, anchored: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.safetensors"
    data = bytearray((last(anchored) / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    adapter.write_bytes(bytes(data))
    report = env.verify(adapter)
    assert report["verdict"] == "failed" and failed(report) == ["record"]
    assert report["next_steps"][0].startswith("This file has no valid on-chain record")
    # Later checks say once why they did not run, naming the real cause.
    assert "on-chain record, which failed its check" in check(report, "history")["summary"]


def test_a_re_encoded_copy_is_found_by_its_tensors(env: VerifyEnv, anchored: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load, save

    tensors = load((last(anchored) / "adapter_model.safetensors").read_bytes())
    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(save(dict(reversed(list(tensors.items()))), metadata={"format": "pt", "note": "converted"}))
    report = env.verify(copy)
    assert report["verdict"] == "verified"
    assert [c["match"] for c in report["claims"]] == ["tensors"]
    assert any("re-encoded" in w for w in report["warnings"])


def test_adapter_from_another_run(env: VerifyEnv, anchored: Path, tiny_config: Callable[..., Any],
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
    assert failed(env.verify(swapped)) == ["checkpoint"]


def test_optimizer_state_altered(env: VerifyEnv, tiny_run: Any, tiny_model_dir: Path) -> None:
    from safetensors.numpy import load, save

    # After anchoring: the checkpoint directory no longer matches its commitment.
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    subject = env.copy(last(run), "subject")
    tensors = load((subject / "optimizer.safetensors").read_bytes())
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    (subject / "optimizer.safetensors").write_bytes(save(tensors))
    assert failed(env.verify(subject)) == ["checkpoint"]
    # Before anchoring (resealed): the weights of every checkpoint are honest, only the optimizer state of
    # checkpoint 1 is not; rebuilding the whole checkpoint (not only the weights) catches it.
    env2 = VerifyEnv(env.tmp / "second")
    run2 = env2.copy(tiny_run.run_dir)
    ck = run2 / "checkpoints" / "000001"
    tensors = load((ck / "optimizer.safetensors").read_bytes())
    tensors = {k: (v * 1.5 if v.dtype.kind == "f" and v.ndim else v) for k, v in tensors.items()}
    (ck / "optimizer.safetensors").write_bytes(save(tensors))
    reseal(ck)
    env2.anchor(run2)
    report = env2.verify(last(run2) / "adapter_model.safetensors", replay="all", **data_options(run2, tiny_model_dir))
    assert failed(report) == ["replay"]
    segment = next(s for s in report["replay"]["segments"] if s["to_index"] == 1)
    assert segment["status"] == "failed" and segment["first_divergence"]["field"] == "file optimizer.safetensors"


def _lines(ck: Path) -> list[bytes]:
    return (ck / "steps.jsonl").read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("how", ["altered", "dropped", "duplicated", "reordered", "inserted", "truncated"])
def test_step_log_tampered_before_anchoring(env: VerifyEnv, tiny_run: Any, how: str) -> None:
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


def test_manifest_altered_in_the_store(env: VerifyEnv, anchored: Path) -> None:
    """A store that serves other bytes for the run manifest's CID: the store's own CID check refuses them, so the
    verification cannot be carried out (error, exit 2) and says which content was bad."""
    run_key = env.registry.claims(weights=_weights(anchored))[0].run_key
    cid = env.registry.run(run_key).registration.manifest_cid
    block = next((env.tmp / "store" / "blocks").rglob(cid))
    block.chmod(0o644)
    forged = json.loads(block.read_bytes())
    forged["training"]["dp"]["noise_multiplier"] = "5.0"
    block.write_bytes(canonical.encode(forged))
    report = env.verify(last(anchored) / "adapter_model.safetensors")
    assert report["verdict"] == "error" and report["exit_code"] == 2
    assert cid in check(report, "record")["summary"]


def _weights(run: Path) -> Any:
    from provenance.hashing import hash_file

    return hash_file(last(run) / "adapter_model.safetensors")


def test_a_forged_run_claiming_the_same_weights_is_listed_not_selected(env: VerifyEnv, anchored: Path) -> None:
    """A forger publishes a run manifest of its own (σ = 50, internally consistent) and claims the honest adapter
    in it (v2 allows any number of claims): the verifier selects the claim the adapter's metadata names, lists the
    forger's, and the honest lineage still verifies."""
    from provenance.hashing import Digest
    from provenance.manifest import encode_run_manifest, run_id_of

    forged = json.loads((anchored / "run.json").read_bytes())
    forged["training"]["dp"]["noise_multiplier"] = "50.0"
    forged["run_id"] = run_id_of(forged)
    data = encode_run_manifest(forged)
    cid = env.store.put_bytes(data)
    d = Digest.of(data)
    thief = env.registry.with_signer(env.registry.dev_keys()[2])
    key = thief.register_run(forged["run_id"], manifest_digest=d, base_model_digest=d, dataset_root=d,
                             noise_seed_commitment=d, manifest_cid=cid).run_key
    honest = env.registry.claims(weights=_weights(anchored))[0]
    thief.commit_checkpoint(key, index=0, weights_digest=honest.weights_digest, tensor_digest=honest.tensor_digest,
                            checkpoint_digest=honest.checkpoint_digest, log_size=0, log_root=honest.log_root,
                            epsilon_micro=0, manifest_cid=honest.manifest_cid)
    report = env.verify(last(anchored) / "adapter_model.safetensors")
    assert report["verdict"] == "verified" and report["run"]["run_id"] != forged["run_id"]
    assert len(report["claims"]) == 2 and [c["selected"] for c in report["claims"]].count(True) == 1


def test_wrong_base_model(env: VerifyEnv, anchored: Path, tmp_path: Path) -> None:
    from training.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other-model", seed=1)
    report = env.verify(last(anchored) / "adapter_model.safetensors", base_model=other)
    assert failed(report) == ["base_model"]


def test_claimed_epsilon_lower_than_recomputed(env: VerifyEnv, tiny_run: Any) -> None:
    run = env.copy(tiny_run.run_dir)
    final, before = last(run), run / "checkpoints" / "000002"
    state = json.loads((final / "state.json").read_bytes())
    state["epsilon"] = json.loads((before / "state.json").read_bytes())["epsilon"]  # ε "stopped growing"
    (final / "state.json").write_bytes(canonical.encode(state))
    reseal(final)
    env.anchor(run)
    report = env.verify(final / "adapter_model.safetensors")
    assert failed(report) == ["privacy"]
    assert "checkpoint 3: the committed ε is lower than" in check(report, "privacy")["summary"]


def test_verify_with_different_data(env: VerifyEnv, anchored: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = data_options(anchored, tiny_model_dir)
    changed = tmp_path / "data.txt"
    text = Path(options["data"]).read_text()
    changed.write_text("\n".join(line + " (edited)" for line in text.splitlines()) + "\n")
    options["data"] = changed
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all", **options)
    assert failed(report) == ["dataset"]
    assert status(report)["steps"] == "not_run" and status(report)["replay"] == "not_run"


def test_wrong_noise_seed(env: VerifyEnv, anchored: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = data_options(anchored, tiny_model_dir)
    secrets = json.loads(Path(options["secrets"]).read_bytes())
    secrets["noise_seed"] = "11" * 32
    options["secrets"] = tmp_path / "secrets.json"
    options["secrets"].write_bytes(canonical.encode(secrets))
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="1", **options)
    assert failed(report) == ["steps"] and status(report)["dataset"] == "passed"
    assert "noise seed given does not open" in check(report, "steps")["summary"]


def test_commit_by_an_unauthorised_account_is_impossible(env: VerifyEnv, anchored: Path) -> None:
    from provenance.hashing import Digest

    record = env.registry.claims(weights=_weights(anchored))[0]
    intruder = env.registry.with_signer(env.registry.dev_keys()[3])
    d = Digest.of(b"intruder")
    with pytest.raises(Unauthorized):
        intruder.commit_checkpoint(record.run_key, index=4, weights_digest=d, tensor_digest=d, checkpoint_digest=d,
                                   log_size=99, log_root=d, epsilon_micro=10**9, manifest_cid=record.manifest_cid)
    assert env.verify(last(anchored) / "adapter_model.safetensors")["verdict"] == "verified"


def test_registry_address_that_is_not_our_contract(env: VerifyEnv, anchored: Path) -> None:
    # Deploy some other contract (a bare STOP) on the same chain and point the verifier at it.
    w3 = env.registry.web3
    tx = env.registry.transport.transact(w3.eth.contract(abi=[], bytecode="0x6001600c60003960016000f300"
                                                         ).constructor(), what="deploy other")
    with pytest.raises(NotARegistry):
        Registry(env.registry.transport, tx["contractAddress"])


def test_replay_in_another_environment_is_inconclusive_with_the_weight_distance(
        env: VerifyEnv, anchored: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run recorded this CPU's native kernels; the worker is made to run the generic ones instead (what happens
    on a machine that cannot run the recorded kernels). Every exact field still matches, the floating-point state
    does not: the verdict is inconclusive (exit 3), never verified, and the weight distance is shown."""
    from provenance import determinism

    real = determinism.replay_environment
    monkeypatch.setattr(determinism, "replay_environment",
                        lambda rec, base=None: {**real(rec, base), "ATEN_CPU_CAPABILITY": "default"})
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all",
                        **data_options(anchored, tiny_model_dir))
    assert report["verdict"] == "inconclusive" and report["exit_code"] == 3, report["checks"]
    assert check(report, "replay")["status"] == "inconclusive"
    assert "the worker ran with CPU kernels DEFAULT" in check(report, "replay")["summary"]
    assert report["replay"]["environment"]["bitwise_possible"] is False
    segments = [s for s in report["replay"]["segments"] if s["from_index"] is not None]
    assert all(s["status"] == "inconclusive" and 0 < s["weight_distance"] < 1e-4 for s in segments)


def test_kernels_this_cpu_lacks_start_the_worker_with_its_best_and_still_check_exact_fields(
        env: VerifyEnv, anchored: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run recorded AVX2 kernels; this 'CPU' is made to have none (#20). Forcing avx2 there would kill the
    worker with SIGILL before it checked anything: it is started with the best kernels the CPU has (default), so
    checkpoint 0 and every exact field are still decided, and the weights are inconclusive, never verified."""
    from provenance import determinism
    from provenance import replay as protocol

    monkeypatch.setattr(determinism, "machine_capabilities", lambda cpuinfo=None: {"DEFAULT", "NO AVX"})
    seen: list[str | None] = []
    real = protocol.run_worker

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["env"].get("ATEN_CPU_CAPABILITY"))
        return real(**kwargs)

    monkeypatch.setattr(protocol, "run_worker", spy)
    report = env.verify(last(anchored) / "adapter_model.safetensors", replay="all",
                        **data_options(anchored, tiny_model_dir))
    assert seen == ["default"], seen
    assert report["verdict"] == "inconclusive" and check(report, "replay")["status"] == "inconclusive"
    assert check(report, "checkpoint_zero")["status"] in ("passed", "inconclusive"), report["checks"]
    assert "which this CPU cannot run" in " ".join(report["replay"]["environment"]["problems"])
    segments = [s for s in report["replay"]["segments"] if s["from_index"] is not None]
    assert segments and all(s["status"] == "inconclusive" for s in segments), segments


def test_unreadable_attestation_registry_does_not_abort_verification(env: VerifyEnv, anchored: Path) -> None:
    # An address with no contract: the attestation list cannot be read, the lineage verdict still stands.
    report = env.verify(last(anchored) / "adapter_model.safetensors", attestations="0x" + "12" * 20)
    assert report["verdict"] == "verified" and report["attestations"] is None
    assert any(line.startswith("attestations: could not be read") for line in report["not_checked"])
