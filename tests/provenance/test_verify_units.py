"""Pure parts of the verifier: committer timeline, beacon and segment choice, divergence, determinism settings,
per-checkpoint ε, the cheap pass over every step, claim selection, verdicts and levels, public report fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from provenance import batches, determinism
from provenance._verify import claims as claimsmod
from provenance._verify.checks import CheckFailed, CheckInconclusive, Checks, Status
from provenance._verify.data import check_steps
from provenance._verify.lineage import check_committers, check_history
from provenance._verify.pipeline import Evidence
from provenance._verify.privacy import check_privacy, recompute_epsilon
from provenance._verify.replay import (
    catch_probability,
    choose_segments,
    default_count,
    drawn_seed,
    exact_divergence,
    first_divergence,
    make_beacon,
)
from provenance._verify.reporting import level_of, public_rpc, public_store
from provenance._verify.subject import load_subject
from provenance.errors import FormatError
from provenance.hashing import Digest
from provenance.records import StepRecord, stats_commitment
from provenance.sampler import poisson_indices
from provenance.schedule import lr_of_manifest
from provenance.secrets import Secrets
from provenance.verify import decide
from tests.fixtures.records import rec

OWNER, WRITER = "0x" + "aa" * 20, "0x" + "bb" * 20
RUN = b"\x01" * 32


@dataclass
class Rec:
    index: int
    committer: str
    block_number: int
    run_id: bytes = RUN
    log_size: int = 0
    epsilon_micro: int = 0

    @property
    def epsilon(self) -> float:
        return self.epsilon_micro / 1e6


@dataclass
class Ev:
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int = 0


@dataclass
class Run:
    run_id: bytes = RUN
    owner: str = OWNER


def test_owner_only_never_fetches_events() -> None:
    def boom() -> list[Any]:
        raise AssertionError("fetched")

    assert check_committers([Rec(0, OWNER, 3), Rec(1, OWNER.upper().replace("0X", "0x"), 4)], boom, run=Run()) == 0


def test_writer_authorised_then_revoked() -> None:
    events = [Ev("WriterAuthorized", {"runId": RUN, "writer": WRITER}, 5),
              Ev("WriterRevoked", {"runId": RUN, "writer": WRITER}, 8)]
    assert check_committers([Rec(0, OWNER, 3), Rec(1, WRITER, 6)], lambda: events, run=Run()) == 1
    with pytest.raises(CheckFailed, match="checkpoint 2"):
        check_committers([Rec(0, OWNER, 3), Rec(1, WRITER, 6), Rec(2, WRITER, 9)], lambda: events, run=Run())
    other_run = [Ev("WriterAuthorized", {"runId": b"\x02" * 32, "writer": WRITER}, 5)]
    with pytest.raises(CheckFailed):
        check_committers([Rec(0, WRITER, 6)], lambda: other_run, run=Run())


def test_history_requires_an_empty_checkpoint_zero_and_reports_zero_step_checkpoints() -> None:
    good = [Rec(0, OWNER, 1, log_size=0), Rec(1, OWNER, 2, log_size=5), Rec(2, OWNER, 3, log_size=5, epsilon_micro=1)]
    assert check_history(good, run=Run()) == [2]
    with pytest.raises(CheckFailed, match="checkpoint 0 must be the adapter before any training step"):
        check_history([Rec(0, OWNER, 1, log_size=3)], run=Run())
    with pytest.raises(CheckFailed, match="ε decreased"):
        check_history([Rec(0, OWNER, 1, epsilon_micro=9), Rec(1, OWNER, 2, log_size=1, epsilon_micro=3)], run=Run())


def test_segment_choice_is_a_deterministic_function_of_the_seed() -> None:
    candidates = list(range(1, 101))
    a = choose_segments(b"\x00" * 32, candidates, 5)
    assert a == choose_segments(b"\x00" * 32, candidates, 5) and len(set(a)) == 5 and set(a) <= set(candidates)
    assert a != choose_segments(b"\x01" + b"\x00" * 31, candidates, 5)
    assert choose_segments(b"x", candidates, None) == candidates
    assert choose_segments(b"x", [3], 4) == [3]
    picked = {c for s in range(200) for c in choose_segments(s.to_bytes(4, "big"), list(range(1, 11)), 1)}
    assert picked == set(range(1, 11))


def test_sampled_replay_always_includes_the_files_own_last_segment() -> None:
    # Over many seeds and sizes, the subject's own last segment is in every draw, the draw has `count` distinct
    # members, and every other segment is still reachable (the rest is a fair draw, not a fixed set).
    for n in (1, 2, 3, 7, 20):
        candidates = list(range(1, n + 1))
        for own in (n, max(1, n // 2)):
            others_seen: set[int] = set()
            for s in range(300):
                count = default_count(n)
                drawn = choose_segments(s.to_bytes(4, "big"), candidates, count, always=own)
                assert own in drawn and len(set(drawn)) == len(drawn) == min(count, n) and set(drawn) <= set(candidates)
                others_seen |= set(drawn) - {own}
            assert others_seen == set(candidates) - {own} or default_count(n) == 1
    assert choose_segments(b"x", [1, 2, 3], 1, always=3) == [3]
    assert choose_segments(b"x", [1, 2, 3], 1, always=9) != []  # not a candidate: an ordinary draw
    # the last plus half the others, rounded up: a forged earlier segment is caught with probability >= 1/2
    assert [default_count(n) for n in (0, 1, 2, 3, 4, 5, 30)] == [0, 1, 2, 2, 3, 3, 16]
    for n in range(2, 60):
        assert catch_probability(default_count(n), n, forced=True) >= 0.5
    # worst case over a forged segment the trainer places anywhere but the always-drawn one
    assert catch_probability(1, 3, forced=True) == 0.0
    assert catch_probability(2, 3, forced=True) == pytest.approx(0.5)
    assert catch_probability(3, 3, forced=True) == 1.0
    assert catch_probability(1, 3) == pytest.approx(1 / 3)


def test_beacon_mixes_block_and_auditor_seed_and_says_where_it_came_from() -> None:
    block = (12, b"\x07" * 32)
    chain = make_beacon(block=block, auditor_seed=None, confirmations=2)
    both = make_beacon(block=block, auditor_seed="my seed", confirmations=2)
    auditor = make_beacon(block=None, auditor_seed="my seed", confirmations=2)
    assert len({chain.seed, both.seed, auditor.seed}) == 3
    assert (chain.source, both.source, auditor.source) == ("chain", "chain+auditor", "auditor")
    assert both.to_json()["hash"] == "0x" + "07" * 32 and both.to_json()["block"] == 12
    assert catch_probability(2, 30) == pytest.approx(2 / 30) and catch_probability(0, 0) is None
    drawn = make_beacon(block=block, auditor_seed=drawn_seed(), confirmations=2, seed_origin="drawn")
    assert drawn.to_json()["auditor_seed_origin"] == "drawn" and len(drawn.to_json()["auditor_seed"]) == 64
    assert chain.to_json()["auditor_seed_origin"] is None


def test_a_drawn_seed_is_fresh_randomness_every_time() -> None:
    """Without --beacon the verifier draws 32 bytes from the operating system: the trainer cannot know them."""
    seeds = {drawn_seed() for _ in range(50)}
    assert len(seeds) == 50 and all(len(s) == 64 and int(s, 16) >= 0 for s in seeds)


def test_divergence_names_step_and_field_and_separates_exact_fields() -> None:
    logged = [rec(i) for i in range(5)]
    assert first_divergence(logged, list(logged), ["batch", "stats"]) is None
    changed = list(logged)
    changed[3] = replace(changed[3], stats=Digest.of(b"other"))
    assert first_divergence(logged, changed, ["batch", "stats"])["field"] == "stats"
    assert exact_divergence(logged, changed) is None  # statistics depend on floating point
    changed[2] = replace(changed[2], examples=99)
    assert exact_divergence(logged, changed) == {"step": 2, "field": "examples", "expected": str(logged[2].examples),
                                                 "found": "99"}
    assert first_divergence(logged, logged[:4], ["batch"])["field"] == "steps"


def test_subject_reads_metadata_and_refuses_truncation(tmp_path: Path) -> None:
    path = tmp_path / "adapter_model.safetensors"
    save_file({"w": np.ones(4, dtype=np.float32)}, str(path), metadata={"prov.run_id": "ab"})
    subject = load_subject(path)
    assert subject.kind == "adapter" and subject.metadata["prov.run_id"] == "ab"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FormatError, match="truncated"):
        load_subject(path)


# --- determinism -------------------------------------------------------------------------------------------------

AVX512_CPU = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl\n"
AVX2_CPU = "flags\t\t: fpu sse2 avx avx2 fma\n"


def recorded(**changes: Any) -> determinism.Recorded:
    base = determinism.Recorded(capability="AVX2", threads=2, device="cpu", dtype="float32", profile="portable",
                                env={"MKL_CBWR": "AVX2"}, versions={"torch": "2.13.0", "opacus": "1.6.0"})
    return replace(base, **changes)


def test_impossible_determinism_settings_are_named() -> None:
    assert determinism.invalid_settings(recorded()) == []
    bogus = recorded(capability="AVX9000", threads=0, device="tpu", versions={"torch": "banana"})
    problems = " | ".join(determinism.invalid_settings(bogus))
    for word in ("AVX9000", "thread count 0", "tpu", "banana"):
        assert word in problems


def test_a_lower_capability_is_always_available_and_versions_must_match() -> None:
    caps = determinism.machine_capabilities(AVX512_CPU)
    assert {"DEFAULT", "AVX2", "AVX512"} <= caps
    assert determinism.machine_capabilities(AVX2_CPU) >= {"AVX2"} and "AVX512" not in \
        determinism.machine_capabilities(AVX2_CPU)
    here = {"torch": "2.13.0", "opacus": "1.6.0"}
    assert determinism.unmatched(recorded(), here=here, capabilities=caps) == []
    assert determinism.unmatched(recorded(capability="AVX512"), here=here, capabilities={"DEFAULT", "AVX2"})
    off = determinism.unmatched(recorded(), here={"torch": "2.12.0", "opacus": "1.6.0"}, capabilities=caps)
    assert off and "torch==2.13.0" in off[0]
    assert determinism.unmatched(recorded(device="cuda"), here=here, capabilities=caps, gpu=None)


def test_replay_environment_sets_the_recorded_kernels_and_threads() -> None:
    env = determinism.replay_environment(recorded(), base={"OMP_NUM_THREADS": "8", "PATH": "/bin"})
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "AVX2"
    assert env["OMP_NUM_THREADS"] == "2" and env["PATH"] == "/bin"


def test_a_recorded_capability_this_cpu_lacks_starts_the_worker_with_the_best_one_it_has() -> None:
    """AVX512 recorded, an AVX2 machine: forcing avx512 would kill the worker with SIGILL before it checks
    anything, so it runs avx2 (checkpoint 0 and exact fields still checked) while `unmatched` keeps the weights
    inconclusive. A recorded ATEN_CPU_CAPABILITY variable is treated the same; a runnable one is kept."""
    avx2, avx512 = determinism.machine_capabilities(AVX2_CPU), determinism.machine_capabilities(AVX512_CPU)
    lacking = recorded(capability="AVX512", env={"ATEN_CPU_CAPABILITY": "avx512"})
    assert determinism.replay_environment(lacking, base={}, capabilities=avx2)["ATEN_CPU_CAPABILITY"] == "avx2"
    assert determinism.replay_environment(lacking, base={}, capabilities={"DEFAULT", "NO AVX"})[
        "ATEN_CPU_CAPABILITY"] == "default"
    assert determinism.replay_environment(lacking, base={}, capabilities=avx512)["ATEN_CPU_CAPABILITY"] == "avx512"
    assert determinism.replay_environment(recorded(), base={}, capabilities=avx512)["ATEN_CPU_CAPABILITY"] == "avx2"
    assert determinism.unmatched(lacking, here={"torch": "2.13.0", "opacus": "1.6.0"}, capabilities=avx2)
    assert determinism.best_capability(avx512) == "AVX512" and determinism.best_capability(avx2) == "AVX2"


# --- privacy -----------------------------------------------------------------------------------------------------

DP = {"mode": "dp", "noise_multiplier": "1.0", "sample_rate": "0.05", "delta": "1e-05", "accountant": "rdp"}


def states(sizes: list[int], eps: list[float] | None = None) -> list[dict[str, Any]]:
    eps = eps or [0.0] * len(sizes)
    return [{"log_size": n, "epsilon": repr(e),
             "accountant": {"name": "rdp", "history": [["1.0", "0.05", n]] if n else []}}
            for n, e in zip(sizes, eps, strict=True)]


def micro(values: list[float]) -> list[int]:
    from provenance._chain.records import epsilon_to_micro

    return [epsilon_to_micro(v) for v in values]


def honest(sizes: list[int]) -> list[float]:
    """What an honest RDP-accounted run commits: dp-accounting's RDP bound (opacus' RDP ε is equal up to 1e-4
    relative, measured)."""
    from provenance._verify.accounting import rdp_bounds

    return rdp_bounds(q=0.05, sigma=1.0, steps=sizes, delta=1e-5)


def test_epsilon_is_recomputed_and_checked_for_every_checkpoint() -> None:
    sizes = [0, 10, 20, 30]
    eps = honest(sizes)
    manifest = {"training": {"dp": DP, "dataset_size": 256}}
    result = check_privacy(manifest=manifest, states=states(sizes, eps), committed_micro=micro(eps))
    assert "at all 4 checkpoints" in result.summary and "dp-accounting" in result.summary
    # The bound is PLD's for the last checkpoint (tighter than the RDP claim), and no checkpoint's bound exceeds its
    # claim; earlier checkpoints whose claim is already above RDP's bound need no PLD evaluation.
    assert result.bounds[-1]["accountant"] == "pld" and result.recomputed[-1] < eps[-1]
    assert all(r <= e + 1e-6 for r, e in zip(result.recomputed, eps, strict=True))
    lied = list(eps)
    lied[1] = eps[1] / 4  # a tiny ε committed (and recorded) for an earlier checkpoint
    with pytest.raises(CheckFailed, match="checkpoint 1: the committed ε is lower"):
        check_privacy(manifest=manifest, states=states(sizes, lied), committed_micro=micro(lied))
    # The state.json of each checkpoint must record the ε its commitment carries.
    with pytest.raises(CheckFailed, match=r"checkpoint 2: the ε in its state\.json is not the ε committed"):
        check_privacy(manifest=manifest, states=states(sizes, eps), committed_micro=micro([*eps[:2], 9.0, eps[3]]))
    # The shortcut for RDP gives exactly opacus' own accountant value (the opacus cross-check's number).
    pytest.importorskip("opacus", reason="the opacus cross-check needs opacus (the train extra)")
    from opacus.accountants import create_accountant

    acc = create_accountant("rdp")
    acc.history = [(1.0, 0.05, 30)]
    assert recompute_epsilon("rdp", ((1.0, 0.05, 30),), 1e-5) == float(acc.get_epsilon(delta=1e-5))


@pytest.mark.parametrize("field_name, value", [("delta", "0.0"), ("delta", "nan"), ("delta", "1.5"),
                                                ("noise_multiplier", "0.0"), ("noise_multiplier", "inf"),
                                                ("sample_rate", "0"), ("accountant", "gdp")])
def test_dp_parameters_that_make_epsilon_meaningless_fail(field_name: str, value: str) -> None:
    """δ = 0 once made the recomputed ε infinite and every comparison vacuous: such parameters now fail."""
    dp = dict(DP, **{field_name: value})
    with pytest.raises(CheckFailed, match="cannot describe a DP-SGD run"):
        check_privacy(manifest={"training": {"dp": dp, "dataset_size": 256}}, states=states([0, 10], [0.0, 0.5]),
                      committed_micro=micro([0.0, 0.5]))


def test_a_delta_of_at_least_one_over_n_is_no_guarantee() -> None:
    """δ = 0.1 makes RDP report ε ≈ 0.1 for a run that may publish a record with probability 0.1; the verifier
    fails it (the trainer refuses to record it)."""
    dp = dict(DP, delta="0.1")
    eps = [0.0, 0.12]  # what RDP reports at δ = 0.1; the rule needs no opacus
    with pytest.raises(CheckFailed, match="δ is at least 1/N"):
        check_privacy(manifest={"training": {"dp": dp, "dataset_size": 256}}, states=states([0, 10], eps),
                      committed_micro=micro(eps))
    for size in ("256", None, 0, True):  # δ is judged against a size that must be a real count
        with pytest.raises(CheckFailed, match="dataset_size is not a whole number"):
            check_privacy(manifest={"training": {"dp": dp, "dataset_size": size}}, states=states([0, 10], eps),
                          committed_micro=micro(eps))
    fine = honest([0, 10])
    result = check_privacy(manifest={"training": {"dp": DP, "dataset_size": 256}}, states=states([0, 10], fine),
                           committed_micro=micro(fine))
    assert result.private


def test_accountant_history_must_cover_the_log_and_use_the_manifest_parameters() -> None:
    eps = honest([0, 10])
    bad = states([0, 10], eps)
    bad[1]["accountant"]["history"] = [["1.0", "0.05", 9]]
    with pytest.raises(CheckFailed, match="does not cover every logged step"):
        check_privacy(manifest={"training": {"dp": DP, "dataset_size": 256}}, states=bad, committed_micro=micro(eps))
    other = states([0, 10], eps)
    other[1]["accountant"]["history"] = [["2.0", "0.05", 10]]
    with pytest.raises(CheckFailed, match="other DP parameters"):
        check_privacy(manifest={"training": {"dp": DP, "dataset_size": 256}}, states=other, committed_micro=micro(eps))


def test_without_opacus_privacy_is_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """ε is bounded with dp-accounting: no opacus needed (the opacus cross-check says it was not run)."""
    import provenance._verify.privacy as privacy

    monkeypatch.setattr(privacy, "opacus_available", lambda: False)
    eps = honest([0, 10])
    manifest = {"training": {"dp": DP, "dataset_size": 256}}
    result = check_privacy(manifest=manifest, states=states([0, 10], eps), committed_micro=micro(eps))
    assert result.private
    crossed = privacy.cross_check_opacus(result, manifest=manifest, states=states([0, 10], eps), opacus_version="1")
    assert crossed.opacus is None and "opacus is not installed here" in crossed.summary
    monkeypatch.setattr(privacy.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckInconclusive, match="dp-accounting is not installed"):
        check_privacy(manifest=manifest, states=states([0, 10], eps), committed_micro=micro(eps))


# --- every step, no training --------------------------------------------------------------------------------------

def synthetic_run(steps: int = 12) -> tuple[dict[str, Any], list[StepRecord], Secrets, batches.TokenizedDataset]:
    secrets = Secrets(bytes(range(32)), bytes(range(32, 64)))
    n = 40
    ids = np.arange(n * 6, dtype=np.int64).reshape(n, 6) % 97
    tokenized = batches.TokenizedDataset(ids, np.ones_like(ids), 6)
    training = {"dataset_size": n, "steps": steps, "world_size": 2,
                "dp": {"sample_rate": "0.1"}, "optimizer": {"lr": "0.001"},
                "schedule": {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": "0.1"}}
    manifest = {"training": training, "dataset": {"size": n}}
    records = []
    for k in range(steps):
        idx = poisson_indices(secrets.noise_seed, k, n, 0.1)
        digest = batches.batch_digest(secrets.batch_key(), step=k, indices=idx, tensors=tokenized.batch(idx),
                                      world_size=2)
        records.append(StepRecord(step=k, batch=digest, examples=len(idx), lr=lr_of_manifest(training, k),
                                  noise_index=k, stats=stats_commitment(secrets.stats_key(), step=k, loss=1.0 + k,
                                                                        clipped_fraction=0.5)))
    return manifest, records, secrets, tokenized


def test_every_step_is_recomputed_and_the_first_mismatch_is_named() -> None:
    from provenance.records import StepStats

    manifest, records, secrets, tokenized = synthetic_run()
    stats = {k: StepStats(k, 1.0 + k, 0.5) for k in range(12)}
    result = check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=tokenized, stats=stats)
    assert result.full and result.loss == [1.0 + k for k in range(12)] and result.loss_status == "checked"
    partial = check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=None, stats=None)
    assert not partial.full and partial.loss is None and partial.loss_status == "withheld"
    for field_name, value in (("examples", 99), ("lr", 0.5), ("noise_index", 3), ("batch", Digest.of(b"x"))):
        bad = list(records)
        bad[7] = replace(bad[7], **{field_name: value})
        with pytest.raises(CheckFailed, match="step 7"):
            check_steps(manifest=manifest, steps=bad, secrets=secrets, tokenized=tokenized, stats=None)
    wrong = dict(stats)
    wrong[4] = StepStats(4, 123.0, 0.5)
    with pytest.raises(CheckFailed, match="step 4: the statistics given do not open"):
        check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=tokenized, stats=wrong)


# --- claims ------------------------------------------------------------------------------------------------------

@dataclass
class Claimed:
    run_key: bytes
    run_id: bytes
    index: int
    block_number: int
    committer: str
    manifest_cid: str = "cidC"  # the stored checkpoint, holding FAKE_ADAPTER
    weights_digest: Digest = field(default_factory=lambda: Digest.of(FAKE_ADAPTER))
    tensor_digest: Digest | None = None


FAKE_ADAPTER = b"adapter bytes"


@dataclass
class Registration:
    owner: str
    manifest_cid: str
    manifest_digest: Digest


@dataclass
class History:
    registration: Registration
    checkpoints: list[Any] = field(default_factory=list)
    writers: list[Any] = field(default_factory=list)
    finalization: Any = None


class FakeRegistry:
    def __init__(self, runs: dict[bytes, History]) -> None:
        self.runs = runs

    def run(self, run_key: bytes) -> History:
        return self.runs[run_key]


class FakeStore:
    spec = "local"

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def get_bytes(self, cid: str, *, max_size: int | None = None) -> bytes:
        return {"cidA": FAKE_ADAPTER, **self.blobs}[cid]

    def list_directory(self, cid: str) -> dict[str, str]:
        return {"adapter_model.safetensors": "cidA", "state.json": "cidS"}


def manifest_bytes(owner: str | None) -> bytes:
    """A run manifest naming `owner` (v1 shape plus the owner field); its run id is its content hash."""
    from provenance.manifest import encode_run_manifest, run_id_of
    from tests.fixtures.golden import run_manifest

    doc = dict(run_manifest())
    if owner is not None:
        doc["owner"] = owner
    doc["run_id"] = run_id_of(doc)
    return encode_run_manifest(doc)


def run_id_in(data: bytes) -> bytes:
    import json

    return bytes.fromhex(json.loads(data)["run_id"])


def test_a_copied_registration_is_rejected_when_the_manifest_names_its_owner() -> None:
    honest, thief = "0x" + "11" * 20, "0x" + "22" * 20
    data = manifest_bytes(honest)
    registry = FakeRegistry({b"H" * 32: History(Registration(honest, "cidM", Digest.of(data))),
                             b"T" * 32: History(Registration(thief, "cidM", Digest.of(data)))})
    store = FakeStore({"cidM": data})
    rid = run_id_in(data)
    found = [claimsmod.Claim(Claimed(b"T" * 32, rid, 3, 10, thief), "weights"),
             claimsmod.Claim(Claimed(b"H" * 32, rid, 3, 11, honest), "weights")]
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=store, expected_run=None)
    assert chosen.record.run_key == b"H" * 32
    assert f"registered by {thief}" in found[0].note and found[1].selected


def test_without_an_owner_in_the_manifest_two_registrations_are_an_announced_ambiguity() -> None:
    a, b = "0x" + "11" * 20, "0x" + "22" * 20
    data = manifest_bytes(None)
    registry = FakeRegistry({b"A" * 32: History(Registration(a, "cidM", Digest.of(data))),
                             b"B" * 32: History(Registration(b, "cidM", Digest.of(data)))})
    rid = run_id_in(data)
    found = [claimsmod.Claim(Claimed(b"A" * 32, rid, 3, 10, a), "weights"),
             claimsmod.Claim(Claimed(b"B" * 32, rid, 3, 11, b), "weights")]
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=FakeStore({"cidM": data}),
                              expected_run=None)
    assert chosen.record.run_key == b"A" * 32 and chosen.warnings and b in chosen.warnings[0]


def test_the_claim_the_file_metadata_names_comes_first() -> None:
    owner = "0x" + "11" * 20
    data, other = manifest_bytes(None), manifest_bytes(owner)
    registry = FakeRegistry({b"A" * 32: History(Registration(owner, "cidO", Digest.of(other))),
                             b"B" * 32: History(Registration(owner, "cidM", Digest.of(data)))})
    found = [claimsmod.Claim(Claimed(b"A" * 32, run_id_in(other), 1, 5, owner), "weights"),
             claimsmod.Claim(Claimed(b"B" * 32, run_id_in(data), 2, 9, owner), "weights")]
    meta = {"prov.run_id": run_id_in(data).hex(), "prov.checkpoint": "2"}
    chosen = claimsmod.select(found, metadata=meta, registry=registry,
                              store=FakeStore({"cidM": data, "cidO": other}), expected_run=None)
    assert chosen.record.run_key == b"B" * 32


def test_a_manifest_forged_to_borrow_a_run_id_is_rejected() -> None:
    """A forger registers its own manifest (σ = 50) under the honest run's id and claims the honest weights."""
    import json

    from provenance.manifest import encode_run_manifest

    honest = manifest_bytes(None)
    forged_doc = json.loads(honest)
    forged_doc["training"]["dp"]["noise_multiplier"] = "50.0"
    forged = encode_run_manifest(forged_doc)  # same run_id field, other content
    owner = "0x" + "11" * 20
    registry = FakeRegistry({b"F" * 32: History(Registration(owner, "cidF", Digest.of(forged))),
                             b"H" * 32: History(Registration(owner, "cidH", Digest.of(honest)))})
    rid = run_id_in(honest)
    found = [claimsmod.Claim(Claimed(b"F" * 32, rid, 3, 4, owner), "weights"),
             claimsmod.Claim(Claimed(b"H" * 32, rid, 3, 9, owner), "weights")]
    chosen = claimsmod.select(found, metadata={}, registry=registry,
                              store=FakeStore({"cidF": forged, "cidH": honest}), expected_run=None)
    assert chosen.record.run_key == b"H" * 32 and "not the hash of its manifest" in found[0].note


# --- verdicts and levels --------------------------------------------------------------------------------------------

def evidence(**statuses: Status) -> Evidence:
    ev = Evidence(subject=None, tensor_digest=None)  # type: ignore[arg-type]
    for check_id in ("record", "run_manifest", "checkpoint", "history", "step_log", "committers", "chain",
                     "privacy"):
        ev.checks.set(check_id, Status.PASSED, "ok")
    for check_id, status in statuses.items():
        ev.checks.set(check_id, status, "x")
    return ev


def test_verdicts() -> None:
    assert decide(evidence()) == ("verified", 0)
    assert decide(evidence(replay=Status.FAILED, privacy=Status.INCONCLUSIVE)) == ("failed", 1)
    assert decide(evidence(replay=Status.INCONCLUSIVE)) == ("inconclusive", 3)
    assert decide(evidence(privacy=Status.INCONCLUSIVE)) == ("inconclusive", 3)
    unreachable = evidence(step_log=Status.NOT_RUN)
    unreachable.checks.reach_error = FormatError("store down")
    assert decide(unreachable) == ("error", 2)
    assert decide(evidence(dataset=Status.NOT_RUN, replay=Status.NOT_RUN)) == ("verified", 0)


def test_levels_say_what_was_proven() -> None:
    ev = evidence()
    assert level_of(ev, "verified")["text"] == "VERIFIED (commitments)"
    ev = evidence(dataset=Status.PASSED, steps=Status.PASSED)
    ev.steps_full = True
    assert level_of(ev, "verified")["name"] == "data"
    ev = evidence(dataset=Status.PASSED, steps=Status.PASSED, replay=Status.PASSED, checkpoint_zero=Status.PASSED)
    ev.steps_full = True
    ev.replay = {"candidates": 30, "catch_probability": 2 / 30,
                 "segments": [{"from_index": 3}, {"from_index": 17}, {"from_index": None}]}
    assert level_of(ev, "verified")["text"] == "VERIFIED (replayed 2/30 segments)"
    ev.replay = {"candidates": 2, "catch_probability": 1.0, "segments": [{"from_index": 0}, {"from_index": 1}]}
    ev.chain = {"dev_chain": "anvil/Hardhat (31337)"}
    assert level_of(ev, "verified")["text"] == "VERIFIED (fully replayed) — local development chain"
    assert level_of(ev, "inconclusive")["name"] is None


def test_public_report_fields_carry_no_credentials_or_local_paths() -> None:
    assert public_rpc("https://user:pw@eth.example.com:8443/v3/SECRETKEY?token=abc") == "https://eth.example.com:8443"
    assert public_rpc("tester") == "tester"
    assert public_store("local:/home/alice/.prov/store") == "local"
    assert public_store("kubo:http://127.0.0.1:5001/api?key=K") == "kubo http://127.0.0.1:5001"


def test_checks_say_why_a_later_check_did_not_run() -> None:
    checks = Checks()
    checks.not_run("record", "could not run: the store is down")
    assert "could not be read" in checks.why_missing("record", "the on-chain record")
    checks.failed("history", "bad")
    assert "failed its check" in checks.why_missing("history", "the history")


def test_in_memory_tensor_digest_and_reader_agree_with_the_file_versions(tmp_path: Path) -> None:
    from safetensors.numpy import save

    from provenance.safetensors import read_tensors, tensor_digest, tensor_digest_of_bytes

    data = save({"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3, dtype=np.int64)},
                metadata={"x": "y"})
    (tmp_path / "f.safetensors").write_bytes(data)
    assert tensor_digest_of_bytes(data) == tensor_digest(tmp_path / "f.safetensors")
    other = save({"a": np.ones(3, dtype=np.int64), "b": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert tensor_digest_of_bytes(other) == tensor_digest_of_bytes(data)
    assert (read_tensors(data)["b"] == np.arange(6).reshape(2, 3)).all()


# --- run manifest rules -----------------------------------------------------------------------------------------------

def _manifest_evidence(manifest: dict[str, Any], registry_version: int) -> Evidence:
    from types import SimpleNamespace

    ev = Evidence(subject=None, tensor_digest=None)  # type: ignore[arg-type]
    digest = Digest.of(b"x")
    ev.run = SimpleNamespace(run_id=b"\x01" * 32, base_model_digest=digest, dataset_root=digest,
                             noise_seed_commitment=digest)
    ev.manifest = {"run_id": "01" * 32, "base_model": {"digest": str(digest)},
                   "dataset": {"root": str(digest), "size": 256},
                   "secrets": {"noise_seed_commitment": str(digest)}, **manifest}
    ev.chain = {"registry_version": registry_version}
    return ev


@pytest.mark.parametrize(("manifest", "registry_version", "status", "summary"), [
    ({"format": "prov.run.v2", "training": {"world_size": 2, "dataset_size": 256}}, 2, Status.PASSED,
     "registered digest"),
    ({"format": "prov.run.v2", "training": {"world_size": 0, "dataset_size": 256}}, 2, Status.FAILED,
     "world size no run can have"),
    ({"format": "prov.run.v2", "training": {"world_size": 10**9, "dataset_size": 256}}, 2, Status.FAILED,
     "world size"),
    ({"format": "prov.run.v2", "training": {"world_size": True, "dataset_size": 256}}, 2, Status.FAILED,
     "world size"),
    ({"format": "prov.run.v2", "training": {"dataset_size": "256"}}, 2, Status.FAILED, "dataset_size"),
    ({"format": "prov.run.v2", "training": {"dataset_size": 255}}, 2, Status.FAILED, "dataset_size"),
    ({"format": "prov.run.v2", "training": {}}, 2, Status.FAILED, "dataset_size"),
    ({"format": "prov.run.v1", "training": {"dataset_size": 256}}, 1, Status.PASSED, "v1 formats"),
    ({"format": "prov.run.v1", "training": {"dataset_size": 256}}, 2, Status.FAILED,
     "v1 formats registered on a v2 registry"),
])
def test_run_manifest_rules(manifest: dict[str, Any], registry_version: int, status: Status, summary: str) -> None:
    """A world size that would make the verifier build billions of rank leaves, or a v1 run (never replayed) on a
    registry prov 0.1 never wrote to, is the trainer's choice and fails the manifest check."""
    from provenance._verify.pipeline import stage_run_manifest

    ev = _manifest_evidence(manifest, registry_version)
    stage_run_manifest(ev)
    assert ev.checks.status("run_manifest") is status
    assert summary in next(c for c in ev.checks.ordered() if c.id == "run_manifest").summary


@pytest.mark.parametrize(("resource", "status"), [(True, Status.INCONCLUSIVE), (False, Status.FAILED)])
def test_a_segment_this_machine_could_not_finish_is_undecided(resource: bool, status: Status, tmp_path: Path) -> None:
    """Out of memory or disk in the worker leaves replay inconclusive (saying what to free); any other worker
    error for a segment fails it."""
    from types import SimpleNamespace

    from provenance import replay as protocol
    from provenance._verify.judge import judge_segments

    ev = Evidence(subject=None, tensor_digest=None)  # type: ignore[arg-type]
    ev.files, ev.steps = [], []
    ev.lineage = [SimpleNamespace(checkpoint_digest=Digest.of(bytes([i]))) for i in range(2)]
    job = protocol.SegmentJob(tmp_path / "c0", 1, (0, 0), (), tmp_path / "rebuilt-1")
    error = "this machine ran out of memory (MemoryError)" if resource else "cannot replay: RuntimeError: shapes"
    result = protocol.WorkerResult({}, (protocol.SegmentOutcome(1, error=error, resource=resource),))
    judge_segments(ev, None, result, [job], [], {}, zero_pending=False,  # type: ignore[arg-type]
                   replay_pending=True)
    assert ev.checks.status("replay") is status
    summary = next(c for c in ev.checks.ordered() if c.id == "replay").summary
    assert ("free memory or disk" in summary) is resource


def test_a_registered_empty_base_model_digest_commits_to_nothing(tmp_path: Path) -> None:
    """Runs anchored while symbolic links hashed as nothing registered the empty manifest's digest: the check
    says so instead of blaming the model given."""
    from types import SimpleNamespace

    from provenance._verify.pipeline import stage_base_model
    from provenance.manifest import CheckpointManifest

    ev = Evidence(subject=None, tensor_digest=None)  # type: ignore[arg-type]
    ev.run = SimpleNamespace(base_model_digest=CheckpointManifest(()).digest())
    stage_base_model(ev, tmp_path)
    assert ev.checks.status("base_model") is Status.FAILED
    assert "empty file list" in next(c for c in ev.checks.ordered() if c.id == "base_model").summary


def test_a_conservative_epsilon_passes_and_an_understated_one_fails() -> None:
    """The committed ε is judged against dp-accounting's upper bound: above it passes (by any margin), below it by
    more than the stated slack fails, naming the bound; a claim between the fine and the coarse PLD bound is judged
    at the fine interval before it could fail."""
    from provenance._verify import accounting

    manifest = {"training": {"dp": dict(DP, sample_rate="0.01"), "dataset_size": 1000}}
    sizes = [0, 1000]

    def at(claim: float) -> Any:
        found = [{"log_size": n, "epsilon": repr(e), "accountant": {"name": "rdp", "history": [["1.0", "0.01", n]]
                                                                    if n else []}}
                 for n, e in zip(sizes, [0.0, claim], strict=True)]
        return check_privacy(manifest=manifest, states=found, committed_micro=micro([0.0, claim]))

    fine = accounting.pld_bound((0.01, 1.0, 1000, 1e-5, accounting.PLD_INTERVALS[1]))
    coarse = accounting.pld_bound((0.01, 1.0, 1000, 1e-5, accounting.PLD_INTERVALS[0]))
    rdp = accounting.rdp_bounds(q=0.01, sigma=1.0, steps=[1000], delta=1e-5)[0]
    # Both PLD bounds are tighter than RDP's; the finer one is tighter, by more than the slack.
    assert fine + accounting.slack(coarse) < coarse < rdp
    for claim in (2 * rdp, rdp, coarse):
        result = at(claim)
        assert result.committed[-1] == pytest.approx(claim, abs=1e-6) and result.bounds[-1]["pld_interval"] == 1e-3
    between = (fine + coarse) / 2
    result = at(between)
    assert result.bounds[-1]["pld_interval"] == 1e-4 and result.recomputed[-1] == pytest.approx(fine)
    under = fine - 2 * accounting.slack(fine)
    with pytest.raises(CheckFailed, match=r"checkpoint 1: the committed ε is lower .* \(dp-accounting PLD upper"):
        at(under)


def test_honest_opacus_prv_values_pass_the_independent_bound() -> None:
    """opacus' PRV ε (the trainer's default accountant), measured for the demo's parameters (q = 1/32, σ = 1,
    δ = 256^-1.1, 10/20/30 steps: opacus 1.6.0 PRVAccountant.get_epsilon), passes dp-accounting's bound; so does
    the same claim 0.005 lower (PRV's eps_error is 0.01)."""
    dp = dict(DP, sample_rate="0.03125", delta=repr(256 ** -1.1), accountant="prv")
    prv = [0.0, 0.35822, 0.50328, 0.61411]
    sizes = [0, 10, 20, 30]
    for shift in (0.0, -0.005):
        eps = [e + shift if e else 0.0 for e in prv]
        found = [{**s, "accountant": {"name": "prv", "history": [["1.0", "0.03125", n]] if n else []}}
                 for s, n in zip(states(sizes, eps), sizes, strict=True)]
        result = check_privacy(manifest={"training": {"dp": dp, "dataset_size": 256}}, states=found,
                               committed_micro=micro(eps))
        assert result.recomputed[-1] == pytest.approx(0.604, abs=1e-3), result.summary


def test_the_privacy_statement_names_unit_sampler_accountants_and_what_is_not_covered() -> None:
    eps = honest([0, 10])
    manifest = {"training": {"dp": dict(DP, max_grad_norm="1.0"), "dataset_size": 256},
                "formats": {"step": "prov.step.v2"}}
    result = check_privacy(manifest=manifest, states=states([0, 10], eps), committed_micro=micro(eps))
    text = " ".join(result.statement)
    for words in ("one record of the committed dataset (256 records)", "Poisson", "q = 0.05", "C = 1.0",
                  "σ = 1.0", "10 steps", "δ = 1e-05", "PLD", "RDP", "committed by the trainer (rdp, opacus)",
                  "several records", "public schedule", "exact example count"):
        assert words in text, (words, text)
    assert "known limit of this run's formats" in text and "grinding seeds is not excluded" in text  # sampler v1
    anchored = check_privacy(manifest={**manifest, "formats": {"step": "prov.step.v3", "sampler": "prov.poisson.v2"}},
                             states=states([0, 10], eps), committed_micro=micro(eps))
    text = " ".join(anchored.statement)
    assert "the block that included the run's registration (prov.keys.v1)" in text and "known limit" not in text
    assert "exact example count" not in text  # step v3 records publish no count
    # A non-private run states nothing of the kind.
    none = check_privacy(manifest={"training": {"dp": {"mode": "non-private"}}}, states=states([0]),
                         committed_micro=[2**64 - 1])
    assert none.statement == []


def test_the_opacus_cross_check_reports_opacus_number_beside_the_bound() -> None:
    pytest.importorskip("opacus", reason="the opacus cross-check needs opacus (the train extra)")
    from provenance._verify.privacy import cross_check_opacus

    eps = honest([0, 10])
    manifest = {"training": {"dp": DP, "dataset_size": 256}, "software": {"versions": {"opacus": "0.0-other"}}}
    found = states([0, 10], eps)
    result = cross_check_opacus(check_privacy(manifest=manifest, states=found, committed_micro=micro(eps)),
                                manifest=manifest, states=found, opacus_version=None)
    assert result.opacus == pytest.approx(recompute_epsilon("rdp", ((1.0, 0.05, 10),), 1e-5))
    assert "recomputes ε" in result.summary and "the run recorded opacus 0.0-other" in result.summary
    assert "opacus here:" in " ".join(result.statement)


def test_v3_steps_keep_the_count_private_and_the_auditor_still_checks_it() -> None:
    """prov.step.v3 (issue #23): the record has no example count; the statistics commitment (prov.stats.v2) holds
    it, so an auditor with the secrets and stats.jsonl checks it, and a count that is not the sampled one fails."""
    from provenance.records import StepRecordV3, StepStats, step_record_from_json

    manifest, v2, secrets, tokenized = synthetic_run()
    sizes = {r.step: r.examples for r in v2}
    stats = {k: StepStats(k, 1.0 + k, 0.5, examples=sizes[k]) for k in sizes}
    records = [StepRecordV3(step=r.step, batch=r.batch, lr=r.lr, noise_index=r.noise_index,
                            stats=stats[r.step].commitment(secrets.stats_key())) for r in v2]
    assert all("examples" not in r.to_json() for r in records)
    assert step_record_from_json(json.loads(records[3].encode())) == records[3]
    with pytest.raises(FormatError, match="unexpected"):  # a v3 record that publishes its count is malformed
        step_record_from_json({**records[3].to_json(), "examples": 2})
    result = check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=tokenized, stats=stats)
    assert result.full and result.loss_status == "checked"
    assert check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=None, stats=None).loss is None
    lying = dict(stats)
    lying[5] = replace(stats[5], examples=sizes[5] + 1)  # opens a commitment made with another count
    with pytest.raises(CheckFailed, match=r"step 5: .*example count"):
        check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=tokenized, stats=lying)
    old = {k: StepStats(k, 1.0 + k, 0.5) for k in sizes}  # v1 statistics (no count) do not open a v3 commitment
    with pytest.raises(CheckFailed, match="step 0"):
        check_steps(manifest=manifest, steps=records, secrets=secrets, tokenized=tokenized, stats=old)


@pytest.mark.parametrize("step_format, stats_format, status", [
    ("prov.step.v3", "prov.stats.v2", "passed"),  # what the trainer writes since #23
    ("prov.step.v2", "prov.stats.v1", "passed"),  # older runs
    ("prov.step.v3", "prov.stats.v1", "failed"),  # a v3 record whose count no commitment would hold
    ("prov.step.v2", "prov.stats.v2", "failed"),
    ("prov.step.v4", "prov.stats.v2", "inconclusive"),  # unknown to this version
])
def test_the_run_manifest_pairs_step_and_statistics_formats(step_format: str, stats_format: str,
                                                            status: str) -> None:
    from types import SimpleNamespace

    from provenance._verify import pipeline

    digest = str(Digest.of(b"x"))
    manifest = {"run_id": "ab" * 32, "base_model": {"digest": digest}, "dataset": {"root": digest, "size": 10},
                "secrets": {"noise_seed_commitment": digest}, "format": "prov.run.v2",
                "formats": {"batch": "prov.batch.v2", "noise": "prov.noise.v2", "stats": stats_format,
                            "step": step_format, "trainstate": "prov.trainstate.v2"},
                "training": {"world_size": 1, "dataset_size": 10}}
    ev = pipeline.Evidence(None, None)  # type: ignore[arg-type]  # the subject plays no part in this stage
    ev.manifest = manifest
    ev.run = SimpleNamespace(run_id=bytes.fromhex("ab" * 32), base_model_digest=digest, dataset_root=digest,
                             noise_seed_commitment=digest)
    pipeline.stage_run_manifest(ev)
    assert ev.checks.results["run_manifest"].status == status, ev.checks.results["run_manifest"]


def test_a_huge_privacy_loss_is_bounded_by_rdp_only_and_never_failed_on_it() -> None:
    """σ is the trainer's choice and a PLD's size grows with the loss (bounded work): above EPSILON_CEILING only RDP
    is computed; a claim at least RDP's bound passes, one below it is undecided (inconclusive), not failed."""
    from provenance._verify import accounting

    dp = dict(DP, noise_multiplier="0.05", sample_rate="1.0")
    rdp = accounting.rdp_bounds(q=1.0, sigma=0.05, steps=[10], delta=1e-5)[0]
    assert rdp > accounting.EPSILON_CEILING

    def at(claim: float) -> Any:
        found = [{"log_size": n, "epsilon": repr(e), "accountant": {"name": "rdp", "history": [["0.05", "1.0", n]]
                                                                    if n else []}}
                 for n, e in zip([0, 10], [0.0, claim], strict=True)]
        return check_privacy(manifest={"training": {"dp": dp, "dataset_size": 256}}, states=found,
                             committed_micro=micro([0.0, claim]))

    result = at(rdp)
    assert result.bounds[-1]["pld"] is None and result.recomputed[-1] == pytest.approx(rdp)
    with pytest.raises(CheckInconclusive, match="does not compute the tighter PLD bound"):
        at(rdp * 0.97)


@pytest.mark.parametrize("q, sigma", [(1 / 32, 1.0), (0.01, 0.8), (0.3, 3.0), (1.0, 5.0)])
def test_the_verifier_composes_plds_exactly_as_dp_accounting_does(q: float, sigma: float) -> None:
    """accounting._self_compose only caches what does not depend on the step count: its ε is dp-accounting's own,
    bit for bit (a truncation bound computed wrongly could drop loss mass and understate ε)."""
    from provenance._verify import accounting

    for steps in (1, 7, 100, 1500):
        ours = accounting._self_compose(q, sigma, 1e-3, steps).get_epsilon_for_delta(1e-5)
        theirs = accounting._one_step(q, sigma, 1e-3).self_compose(steps).get_epsilon_for_delta(1e-5)
        assert ours == theirs, (steps, ours, theirs)


@pytest.mark.parametrize("q, sigma", [(1 / 32, 1.0), (0.001, 0.6), (0.3, 3.0), (1.0, 5.0)])
def test_the_verifier_reads_epsilon_off_a_pld_as_dp_accounting_does(q: float, sigma: float) -> None:
    """accounting.epsilon_for_delta is dp-accounting's walk over the losses, vectorised: the same ε up to the order
    of summation (measured ≤ 1.4e-10 relative), far below the 1e-4 slack a claim is allowed."""
    from provenance._verify import accounting

    for steps in (1, 100, 2500):
        pld = accounting._self_compose(q, sigma, 1e-3, steps)
        for delta in (1e-3, 1e-5, 1e-9):
            assert accounting.epsilon_for_delta(pld, delta) == pytest.approx(pld.get_epsilon_for_delta(delta),
                                                                             rel=1e-9, abs=1e-12)


def test_the_privacy_sentence_reads_a_larger_committed_epsilon_as_conservative() -> None:
    from provenance.report import privacy_sentence

    dp = {"mode": "dp", "epsilon_committed": 0.6141, "epsilon_recomputed": 0.604, "epsilon_budget": None,
          "delta": 0.0022, "accountant": "prv", "noise_multiplier": 1.0, "max_grad_norm": 1.0,
          "sample_rate": 0.03125, "steps": 30, "statement": ["Unit of privacy: one record of the committed dataset."]}
    text = privacy_sentence(dp)
    assert "(ε = 0.604, δ = 0.0022)-DP" in text and "Unit of privacy: one record" in text
    assert "The trainer committed ε = 0.6141, at least the verifier's own bound." in text
