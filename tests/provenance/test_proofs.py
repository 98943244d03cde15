"""`prov prove-example` / `prov check-example`: proofs that one record was used, on runs of the project's trainer
anchored on the in-process chain (and once on a real anvil node), for every dataset kind and a world size of 2; the
tamper matrix and bad input through the CLI; and that a proof reveals nothing about other records."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provenance import batches, canonical, merkle
from provenance.basemodel import base_model_manifest, load_tokenizer
from provenance.cli import main
from provenance.dataset import example_salt, load_records
from provenance.errors import ProofError, UsageError, VerificationError
from provenance.hashing import Digest
from provenance.proofs import NEVER_PROVEN, DatasetOpening, ExampleProof, check_example, check_step_opening
from provenance.proving import open_step, prove_example
from provenance.records import StepRecord
from provenance.secrets import Secrets
from tests.fixtures.proofs import HandBuiltRun, constant_tokens, edit, flip_hex, where_sampled
from tests.fixtures.verify import VerifyEnv

pytest.importorskip("torch", reason="training the runs needs the train extra (scripts/setup installs it)")


def _train(tiny_config: Callable[..., Any], out: Path, secrets: Secrets, **overrides: Any) -> Path:
    from training.trainer import train

    old = os.environ.get("PROV_HOME")
    os.environ["PROV_HOME"] = str(out.parent / "prov-home")
    try:
        run_dir = train(tiny_config(out, **overrides), secrets=secrets, quiet=True).run_dir
        assert run_dir is not None
        return Path(run_dir)
    finally:
        if old is None:
            os.environ.pop("PROV_HOME", None)
        else:
            os.environ["PROV_HOME"] = old


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> VerifyEnv:
    return VerifyEnv(tmp_path_factory.mktemp("proofs"))


@pytest.fixture(scope="module")
def text_run(env: VerifyEnv, tiny_run: Any) -> Path:
    """The shared 6-step text run, anchored (registered, 4 checkpoints, finalised) on the in-process chain."""
    run_dir = env.copy(Path(tiny_run.run_dir), "text-run")
    env.anchor(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def other_run(env: VerifyEnv, tiny_config: Callable[..., Any]) -> Path:
    """A second run (other secrets, so another run id and dataset root) anchored on the same registry."""
    run_dir = _train(tiny_config, env.tmp / "other-run", Secrets(bytes(range(64, 96)), bytes(range(96, 128))))
    env.anchor(run_dir)
    return run_dir


def _pick(run_dir: Path) -> tuple[int, int]:
    """(a record sampled in at least two steps if there is one, else one; a record never sampled)."""
    steps = where_sampled(run_dir)
    sampled = max(steps, key=lambda i: (min(len(steps[i]), 2), -i))
    assert steps[sampled], "no record was sampled in this run"
    return sampled, next(i for i, s in steps.items() if not s)


@pytest.fixture
def prov_here(monkeypatch: pytest.MonkeyPatch, env: VerifyEnv) -> Callable[..., int]:
    """`prov ...` in this process, its commands reading the module's in-process registry (no --rpc needed)."""
    import provenance.cli.proofs as cli_proofs

    monkeypatch.setattr(cli_proofs, "_registry", lambda rpc_url, registry: env.registry)
    return main


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("prov: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- honest proofs on real runs --------------------------------------------------------------------------------------


def test_a_sampled_record_is_proven_with_its_steps_and_tokens(text_run: Path, env: VerifyEnv, tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    index, _ = _pick(text_run)
    proof = prove_example(text_run, index=index, registry=env.registry)
    assert [s.record.step for s in proof.steps] == where_sampled(text_run)[index] and proof.log_size == 6
    path = tmp_path / "proof.json"
    proof.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert ExampleProof.read(path) == proof
    result = check_example(ExampleProof.read(path), registry=env.registry, base_model=tiny_model_dir)
    records = load_records(json.loads((text_run / "local.json").read_bytes())["data"])
    assert result.record == records[index] and result.index == index and result.size == len(records)
    assert result.steps == tuple(where_sampled(text_run)[index]) and result.tokens_checked
    assert len(result.proves) == 3 and "tokens" in result.proves[2]
    assert result.not_proven == NEVER_PROVEN  # nothing else is left unproven
    unchecked = check_example(proof, registry=env.registry)
    assert not unchecked.tokens_checked and "not compared" in unchecked.not_proven[0]


def test_a_never_sampled_record_gets_a_proof_without_step_openings_that_says_so(text_run: Path,
                                                                               env: VerifyEnv) -> None:
    _, never = _pick(text_run)
    proof = prove_example(text_run, index=never, registry=env.registry)
    assert proof.steps == () and "sampled in 0 of the 6 committed steps" in proof.describe()
    result = check_example(proof, registry=env.registry)
    assert result.steps == () and not result.tokens_checked and "no step opened" in result.summary
    assert result.not_proven[0].startswith("that it influenced training: the trainer opened no step")


def _chat(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Question {i}: what colour is lantern {i}?"},
                         {"role": "assistant", "content": f"Lantern {i} is {('red', 'blue', 'green')[i % 3]}."}]}


DATA = {
    "prompt_completion": lambda i: {"prompt": f"Where is map {i}?", "completion": f" Map {i} is at the station."},
    "chat": _chat,
}


@pytest.mark.parametrize("kind", sorted(DATA))
def test_prompt_completion_and_chat_records_are_proven(kind: str, env: VerifyEnv, tiny_config: Callable[..., Any],
                                                       fixed_secrets: Secrets, tiny_model_dir: Path) -> None:
    data = env.tmp / f"{kind}.jsonl"
    data.write_text("".join(json.dumps(DATA[kind](i)) + "\n" for i in range(40)), encoding="utf-8")
    run_dir = _train(tiny_config, env.tmp / f"{kind}-run", fixed_secrets,
                     **{"data.path": str(data), "data.max_length": 96})  # the chat template's turns fit
    env.anchor(run_dir)
    index, never = _pick(run_dir)
    proof = prove_example(run_dir, index=index, registry=env.registry)
    assert proof.dataset.kind == kind and proof.dataset.record == DATA[kind](index)
    labels = proof.steps[0].tensors["labels"]
    assert labels[0] == batches.IGNORE_INDEX and any(t != batches.IGNORE_INDEX for t in labels)  # loss masked
    result = check_example(proof, registry=env.registry, base_model=tiny_model_dir)
    assert result.tokens_checked and result.steps == tuple(where_sampled(run_dir)[index])
    assert check_example(prove_example(run_dir, index=never, registry=env.registry), registry=env.registry).steps == ()


def test_a_record_in_rank_1_of_a_two_process_run_is_proven(env: VerifyEnv, tiny_config: Callable[..., Any],
                                                           fixed_secrets: Secrets, tiny_model_dir: Path) -> None:
    """`training.world_size = 2` in one process computes both rank shards and commits a 2-rank batch root."""
    run_dir = _train(tiny_config, env.tmp / "world-2", fixed_secrets, **{"training.world_size": 2})
    env.anchor(run_dir)
    proofs = [prove_example(run_dir, index=i, registry=env.registry) for i, s in where_sampled(run_dir).items() if s]
    ranks = {(o.ranks, o.rank) for p in proofs for o in p.steps}
    assert ranks == {(2, 0), (2, 1)}
    in_rank_1 = next(p for p in proofs if any(o.rank == 1 for o in p.steps))
    assert check_example(in_rank_1, registry=env.registry, base_model=tiny_model_dir).tokens_checked


# --- the step opening, by hand ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("world", "indices"), [(1, [2, 5, 9]), (2, [1, 3, 4, 8, 9]), (3, [4, 6])])
def test_every_example_of_a_batch_opens_on_any_world_size(world: int, indices: list[int]) -> None:
    """commit_batch(world_size=W) and open_step agree for every example, including next to an empty rank (W=3, 2
    examples); a changed node, rank or position breaks the opening."""
    tokens = constant_tokens(10, 4)
    tensors = tokens.batch(indices)
    key = bytes(32)
    commitment = batches.commit_batch(key, step=3, indices=indices, tensors=tensors, world_size=world)
    records = [StepRecord(step=k, batch=commitment.digest if k == 3 else Digest.of(b"%d" % k), examples=len(indices),
                          lr=0.001, noise_index=k, stats=Digest.of(b"s")) for k in range(5)]
    leaves = [r.leaf_hash() for r in records]
    roots = {5: merkle.root(leaves)}
    for index in indices:
        opening = open_step(commitment, record=records[3], index=index, tensors=tensors, world_size=world,
                            batch_key=key, log_leaves=leaves)
        check_step_opening(opening, index=index, log_roots=roots)
        assert opening.ranks == world
        with pytest.raises(ProofError):
            check_step_opening(opening, index=index + 1, log_roots=roots)  # the index is in the example's bytes
        if opening.rank_path:
            bad = (bytes(32), *opening.rank_path[1:])
            with pytest.raises(ProofError, match="batch commitment"):
                check_step_opening(_replace(opening, rank_path=bad), index=index, log_roots=roots)
        if world > 1:
            with pytest.raises(ProofError):
                check_step_opening(_replace(opening, rank=(opening.rank + 1) % world), index=index, log_roots=roots)
        with pytest.raises(ProofError, match="step log of size"):
            check_step_opening(opening, index=index, log_roots={4: merkle.root(leaves[:4])})


def _replace(opening: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(opening, **changes)


def test_tensors_that_are_not_the_records_tokens_are_caught_only_with_the_base_model(
        env: VerifyEnv, tiny_model_dir: Path) -> None:
    """A dishonest trainer commits batches of made-up tensors for a real record: every path holds, so without the
    base model the proof says the tokens were not compared; with it, the check fails."""
    records = [{"text": f"record number {i} of a hand-built run"} for i in range(6)]
    digest = base_model_manifest(tiny_model_dir).digest()
    forged = HandBuiltRun(env.registry, tiny_model_dir, digest, records, "text", 16, 2, [[2, 3, 4], [1, 2]],
                          constant_tokens(6, 16))
    proof = forged.proof(2)
    assert [o.rank for o in proof.steps] == [0, 1]
    result = check_example(proof, registry=env.registry)
    assert result.steps == (0, 1) and "not compared" in result.not_proven[0]
    with pytest.raises(VerificationError, match="not this record's tokens"):
        check_example(proof, registry=env.registry, base_model=tiny_model_dir)
    elsewhere = HandBuiltRun(env.registry, tiny_model_dir, digest, records, "text", 16, 2, [[2, 3, 4], [1, 2]],
                             constant_tokens(6, 16), name="old tokenizer", versions={"tokenizers": "0.0.1"})
    with pytest.raises(UsageError, match=r"the run tokenized with tokenizers 0\.0\.1 \(here "):
        check_example(elsewhere.proof(2), registry=env.registry, base_model=tiny_model_dir)  # undecidable: exit 2
    honest = HandBuiltRun(env.registry, tiny_model_dir, digest, records, "text", 16, 2, [[2, 3, 4], [1, 2]],
                          batches.tokenize_records(records, load_tokenizer(tiny_model_dir), max_length=16),
                          name="honest")
    assert check_example(honest.proof(2), registry=env.registry, base_model=tiny_model_dir).tokens_checked


def test_the_proof_encoding_is_pinned() -> None:
    """prov.example-proof.v1 as written: a change here is a format change (new name, docs)."""
    key, rows = bytes(range(32)), constant_tokens(3, 4)
    commitment = batches.commit_batch(key, step=0, indices=[0, 2], tensors=rows.batch([0, 2]), world_size=2)
    record = StepRecord(step=0, batch=commitment.digest, examples=2, lr=0.5, noise_index=0, stats=Digest.of(b"s"))
    leaves = [merkle.hash_leaf(b"%d" % i) for i in range(3)]
    proof = ExampleProof(
        chain_id=31337, registry="0x" + "ab" * 20, run_key=bytes(range(32)), run_id=bytes(32),
        manifest={"format": "prov.run.v2"},
        dataset=DatasetOpening(index=2, size=3, kind="text", max_length=4, record={"text": "hello"},
                               salt=example_salt(key, 2), path=tuple(merkle.inclusion_proof(2, leaves))),
        log_size=1, steps=(open_step(commitment, record=record, index=2, tensors=rows.batch([0, 2]), world_size=2,
                                     batch_key=key, log_leaves=[record.leaf_hash()]),))
    encoded = canonical.encode(proof.to_json())
    assert hashlib.sha256(encoded).hexdigest() == "caa572aa392362b0efac632696a6f0caad420f7689986ac2550c62bb64aad79e"


# --- the CLI: honest use, tampering and bad input --------------------------------------------------------------------


@pytest.fixture
def proof_file(text_run: Path, tmp_path: Path, prov_here: Callable[..., int],
               capsys: pytest.CaptureFixture[str]) -> Path:
    index, _ = _pick(text_run)
    out = tmp_path / "proof.json"
    assert prov_here(["prove-example", str(text_run), "--index", str(index), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"record {index} of 256: sampled in ") and line.endswith(f"proof written to {out}")
    return out


def test_cli_check_example_prints_what_is_proven_and_what_is_not(proof_file: Path, prov_here: Callable[..., int],
                                                                 tiny_model_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert prov_here(["check-example", str(proof_file), "--base-model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("HOLDS: record ") and "\nProven:\n" in out and "\nNot proven:\n" in out
    assert "NOT used" in out and "all the steps" in out
    assert prov_here(["check-example", str(proof_file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["holds"] is True and doc["tokens_checked"] is False and doc["steps"]


def _first_step(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["steps"][0]


def _labels(doc: dict[str, Any]) -> list[Any]:
    return _first_step(doc)["example"]["tensors"]["labels"]


def _set_token(steps: list[dict[str, Any]]) -> None:
    """Token 1 of the record set to another id in every step opening (consistently)."""
    for step in steps:
        ids = step["example"]["tensors"]["input_ids"]
        ids[1] = ids[1] + 1


def _flip_first(nodes: list[str]) -> None:
    nodes[0] = flip_hex(nodes[0])


TAMPER: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "record text": (lambda d: d["dataset"]["record"].update(text=d["dataset"]["record"]["text"] + "!"),
                    "not in this run's committed dataset"),
    "dataset salt": (lambda d: d["dataset"].update(salt=flip_hex(d["dataset"]["salt"])),
                     "not in this run's committed dataset"),
    "dataset path node": (lambda d: _flip_first(d["dataset"]["path"]), "not in this run's committed dataset"),
    "batch salt": (lambda d: _first_step(d)["example"].update(salt=flip_hex(_first_step(d)["example"]["salt"])),
                   "does not lead to the step's batch commitment"),
    "tensor": (lambda d: _set_token(d["steps"]), "does not lead to the step's batch commitment"),
    "one step's tensor": (lambda d: _first_step(d)["example"]["tensors"]["input_ids"].__setitem__(1, 3),
                          "different tensors"),
    "example path node": (lambda d: _flip_first(_first_step(d)["example"]["path"]),
                          "does not lead to the step's batch commitment"),
    "log path node": (lambda d: _flip_first(_first_step(d)["log"]["path"]), "not in the committed step log"),
    "step record lr": (lambda d: _first_step(d)["record"].update(lr="0.5"), "not in the committed step log"),
    "step record batch": (lambda d: _first_step(d)["record"].update(batch="sha256:" + "0" * 64),
                          "does not lead to the step's batch commitment"),
    "step number": (lambda d: d["steps"][-1]["record"].update(step=d["steps"][-1]["record"]["step"] + 1),
                    "batch commitment|distinct"),
    "duplicated step": (lambda d: d["steps"].append(d["steps"][0]), "distinct committed steps"),
    "log size": (lambda d: d.update(log_size=4), "distinct committed steps|another step log"),
    "manifest": (lambda d: d["manifest"]["dataset"].update(max_length=33), "not the one the run registered"),
    "run id": (lambda d: d.update(run_id=flip_hex(d["run_id"])), "another run"),
    "registry": (lambda d: d.update(registry="0x" + "12" * 20), "the proof is for registry 0x1212"),
    "chain id": (lambda d: d.update(chain_id=1), "on chain 1, checked here"),
}


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_cli_a_tampered_proof_fails_with_exit_1_on_one_line(what: str, proof_file: Path,
                                                            prov_here: Callable[..., int],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    change, message = TAMPER[what]
    edit(proof_file, change)
    assert prov_here(["check-example", str(proof_file)]) == 1
    assert re.search(message, _error_line(capsys))


def test_cli_a_proof_moved_to_another_run_fails(proof_file: Path, other_run: Path, env: VerifyEnv,
                                                prov_here: Callable[..., int],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from provenance.chain import run_key_of

    other_id = bytes.fromhex(json.loads((other_run / "run.json").read_bytes())["run_id"])
    other_key = run_key_of(env.registry.signer.address, other_id)
    edit(proof_file, lambda d: d.update(run_key=other_key.hex()))
    assert prov_here(["check-example", str(proof_file)]) == 1
    assert "the proof is for another run" in _error_line(capsys)
    edit(proof_file, lambda d: d.update(run_id=other_id.hex()))  # consistent ids: the manifest gives it away
    assert prov_here(["check-example", str(proof_file)]) == 1
    assert "not the one the run registered" in _error_line(capsys)


def test_a_proof_checked_against_another_registry_fails(proof_file: Path, env: VerifyEnv) -> None:
    from provenance.chain import Registry, UnknownRun

    other = Registry(env.registry.transport)
    other.deploy()
    proof = ExampleProof.read(proof_file)
    with pytest.raises(VerificationError, match=f"the proof is for registry {proof.registry}"):
        check_example(proof, registry=other)
    edit(proof_file, lambda d: d.update(registry=other.address))
    with pytest.raises(UnknownRun) as raised:
        check_example(ExampleProof.read(proof_file), registry=other)
    assert raised.value.exit_code == 1


BAD_INPUT: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing file": (lambda p: p.parent / "nope.json", "no such proof file"),
    "directory": (lambda p: p.parent, "cannot read the proof file"),
    "truncated file": (lambda p: _write(p, p.read_bytes()[: len(p.read_bytes()) // 2]), "malformed JSON"),
    "pickle file": (lambda p: _write(p, pickle.dumps(json.loads(p.read_bytes()))), "pickle"),
    "not JSON": (lambda p: _write(p, b"\xff\xfe not json"), "not UTF-8"),
    "wrong format": (lambda p: edit(p, lambda d: d.update(format="prov.example-proof.v0")),
                     "not a prov.example-proof.v1 document"),
    "extra field": (lambda p: edit(p, lambda d: d.update(note="x")), "malformed example proof"),
    "float in a tensor": (lambda p: edit(p, lambda d: _labels(d).__setitem__(0, 1.5)), "float"),
    "short tensor": (lambda p: edit(p, lambda d: _labels(d).pop()), "int64 values"),
    "bad hex": (lambda p: edit(p, lambda d: d["dataset"].update(salt="zz" * 32)), "64 lowercase hex"),
    "unknown kind": (lambda p: edit(p, lambda d: d["dataset"].update(kind="audio")), "dataset kind"),
    "record of another kind": (lambda p: edit(p, lambda d: d["dataset"].update(kind="chat")),
                               "not a canonical chat record"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("what", sorted(BAD_INPUT))
def test_cli_bad_input_exits_2_on_one_line(what: str, proof_file: Path, prov_here: Callable[..., int],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    make, message = BAD_INPUT[what]
    assert prov_here(["check-example", str(make(proof_file))]) == 2
    assert message in _error_line(capsys)


def test_cli_unreachable_node_exits_2(text_run: Path, env: VerifyEnv, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "proof.json"
    prove_example(text_run, index=0, registry=env.registry).write(path)
    assert main(["check-example", str(path), "--rpc", "http://127.0.0.1:9", "--registry", "0x" + "12" * 20]) == 2
    assert "127.0.0.1:9" in _error_line(capsys)


def test_cli_a_base_model_that_is_not_the_runs_exits_2(proof_file: Path, prov_here: Callable[..., int],
                                                       tiny_model_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "model"
    shutil.copytree(tiny_model_dir, other)
    (other / "generation_config.json").write_text("{}", encoding="utf-8")
    assert prov_here(["check-example", str(proof_file), "--base-model", str(other)]) == 2
    assert "not this run's base model" in _error_line(capsys)


def test_cli_prove_example_refuses_bad_requests(text_run: Path, prov_here: Callable[..., int], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert prov_here(["prove-example", str(text_run), "--index", "256"]) == 2
    assert "the run's dataset has 256 records (0..255)" in _error_line(capsys)
    assert prov_here(["prove-example", str(tmp_path), "--index", "0"]) == 2
    assert "not a run directory" in _error_line(capsys)
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "not the data"}\n', encoding="utf-8")
    assert prov_here(["prove-example", str(text_run), "--index", "0", "--data", str(other)]) == 2
    assert "not the run's data" in _error_line(capsys)


# --- what a proof reveals --------------------------------------------------------------------------------------------


def test_a_proof_reveals_no_other_record_and_no_salt_but_its_own(text_run: Path, env: VerifyEnv,
                                                                 tmp_path: Path) -> None:
    index, _ = _pick(text_run)
    path = tmp_path / "proof.json"
    proof = prove_example(text_run, index=index, registry=env.registry)
    proof.write(path)
    body = path.read_bytes()
    secrets = Secrets.load(text_run / "secrets.json")
    records = load_records(json.loads((text_run / "local.json").read_bytes())["data"])
    mine = records[index]["text"]
    assert json.dumps(mine)[1:-1].encode() in body  # the record itself is there (sanity of the search)
    others = [r["text"] for i, r in enumerate(records) if i != index and r["text"] not in mine]
    assert [t for t in others if json.dumps(t)[1:-1].encode() in body] == []
    salts = [example_salt(secrets.dataset_key, i).hex() for i in range(len(records))]
    salts += [batches.example_salt(secrets.batch_key(), step=o.record.step, index=i).hex()
              for o in proof.steps for i in range(len(records))]
    mine_salts = {proof.dataset.salt.hex(), *(o.salt.hex() for o in proof.steps)}
    assert all(s.encode() in body for s in mine_salts)
    assert [s for s in salts if s.encode() in body and s not in mine_salts] == []
    for secret in (secrets.dataset_key, secrets.noise_seed, secrets.batch_key(), secrets.stats_key()):
        assert secret.hex().encode() not in body


# --- on a real anvil node, through the installed entry point ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.chain
def test_prove_and_check_on_anvil_through_the_entry_point(tiny_run: Any, anvil_backend: Any,
                                                          tmp_path: Path, tiny_model_dir: Path) -> None:
    from provenance.anchor import Outbox
    from provenance.store import open_store

    registry = anvil_backend.connect()
    registry.deploy()
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    run_id = bytes.fromhex(json.loads((run_dir / "run.json").read_bytes())["run_id"])
    with open_store(f"local:{tmp_path / 'store'}") as store, Outbox.open(
            run_dir, chain=anvil_backend.rpc_url, registry_client=registry, store_client=store) as box:
        box.enqueue_run(run_id=run_id, manifest_path=run_dir / "run.json")
        for ck in sorted((run_dir / "checkpoints").iterdir()):
            box.enqueue_checkpoint(index=int(ck.name), checkpoint_dir=ck)
        box.enqueue_finalize()
        assert box.flush(timeout=120), box.status_line()
    where = ["--rpc", anvil_backend.rpc_url, "--registry", registry.address]
    environ = {**os.environ, "PROV_HOME": str(tmp_path / "home")}

    def prov(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "provenance", *args, *where], env=environ, capture_output=True,
                              text=True, timeout=300, check=False)

    index, never = _pick(run_dir)
    proof, empty = tmp_path / "proof.json", tmp_path / "empty.json"
    made = prov("prove-example", str(run_dir), "--index", str(index), "--out", str(proof))
    assert made.returncode == 0, made.stderr
    assert prov("prove-example", str(run_dir), "--index", str(never), "--out", str(empty)).returncode == 0
    checked = prov("check-example", str(proof), "--base-model", str(tiny_model_dir), "--json")
    assert checked.returncode == 0, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["tokens_checked"] and doc["steps"] == where_sampled(run_dir)[index] and doc["chain_id"] == 31337
    none = prov("check-example", str(empty))
    assert none.returncode == 0 and "no step opened" in none.stdout
    edit(proof, TAMPER["tensor"][0])
    failed = prov("check-example", str(proof))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and "batch commitment" in failed.stderr
