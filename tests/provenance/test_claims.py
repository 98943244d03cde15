"""Claim selection that strangers cannot poison (provenance/_verify/claims.py): a candidate whose manifest is
malformed or whose stored checkpoint does not hold the file is rejected with its reason and never decides the verdict
on another claim; the claim the file's metadata names ends the search; spam is bounded; reach problems are raised
(the verdict is then "could not verify"), never turned into FAILED. The end-to-end versions run on a real anvil in
tests/adversarial/test_strangers.py."""

from __future__ import annotations

import pytest

from provenance._verify import claims as claimsmod
from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.errors import StoreUnavailable
from provenance.hashing import Digest
from tests.provenance.test_verify_units import (
    Claimed,
    FakeRegistry,
    FakeStore,
    History,
    Registration,
    manifest_bytes,
    run_id_in,
)

HONEST, STRANGER = "0x" + "11" * 20, "0x" + "22" * 20


class ExplodingStore(FakeStore):
    """Raises on any CID in `bad` (an unreachable store for those), counts reads."""

    def __init__(self, blobs: dict[str, bytes], bad: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__(blobs)
        self.bad, self.reads = bad, 0

    def get_bytes(self, cid: str, *, max_size: int | None = None) -> bytes:
        self.reads += 1
        if cid in self.bad:
            raise StoreUnavailable(f"{cid}: store timed out")
        return super().get_bytes(cid, max_size=max_size)


def world(stranger_manifest: bytes, *, n: int = 1) -> tuple[list[claimsmod.Claim], FakeRegistry, dict[str, bytes]]:
    """`n` stranger claims (blocks 5..) with `stranger_manifest`, then the honest claim (block 50)."""
    honest = manifest_bytes(HONEST)
    runs = {b"H" * 32: History(Registration(HONEST, "cidH", Digest.of(honest)))}
    found = []
    for i in range(n):
        key = bytes([i + 1]) * 32
        runs[key] = History(Registration(STRANGER, "cidS", Digest.of(stranger_manifest)))
        found.append(claimsmod.Claim(Claimed(key, b"\x07" * 32, 0, 5 + i, STRANGER), "weights"))
    found.append(claimsmod.Claim(Claimed(b"H" * 32, run_id_in(honest), 3, 50, HONEST), "weights"))
    return found, FakeRegistry(runs), {"cidH": honest, "cidS": stranger_manifest}


class TwoRunsStore(ExplodingStore):
    """The stores of two runs' checkpoints: `ckS` (the stranger's) holds adapter `adS`, `ckH` (the honest run's)
    holds `adH`; CIDs in `too_large` are refused as larger than the fetch limit."""

    too_large: frozenset[str] = frozenset()

    def list_directory(self, cid: str) -> dict[str, str]:
        return {"adapter_model.safetensors": {"ckS": "adS", "ckH": "adH"}[cid]}

    def get_bytes(self, cid: str, *, max_size: int | None = None) -> bytes:
        if cid in self.too_large:
            from provenance.store import ContentTooLarge

            raise ContentTooLarge(f"{cid}: larger than {max_size} bytes")
        return super().get_bytes(cid, max_size=max_size)


def two_runs(adapters: dict[str, bytes], *, bad: frozenset[str] = frozenset(),
             too_large: frozenset[str] = frozenset()) -> tuple[list[claimsmod.Claim], FakeRegistry, TwoRunsStore]:
    """A stranger's claim (block 5) and the honest run's (block 9), both by the tensor digest of the honest stored
    adapter `adapters["adH"]`, each run consistent and binding its owner."""
    from provenance.safetensors import tensor_digest_of_bytes

    tensors = tensor_digest_of_bytes(adapters["adH"])
    honest, stranger = manifest_bytes(HONEST), manifest_bytes(STRANGER)
    registry = FakeRegistry({b"S" * 32: History(Registration(STRANGER, "cidS", Digest.of(stranger))),
                             b"H" * 32: History(Registration(HONEST, "cidH", Digest.of(honest)))})
    store = TwoRunsStore({"cidS": stranger, "cidH": honest, **adapters}, bad=set(bad))
    store.too_large = too_large
    found = [claimsmod.Claim(Claimed(b"S" * 32, run_id_in(stranger), 1, 5, STRANGER, manifest_cid="ckS",
                                     tensor_digest=tensors), "tensors"),
             claimsmod.Claim(Claimed(b"H" * 32, run_id_in(honest), 3, 9, HONEST, manifest_cid="ckH",
                                     tensor_digest=tensors), "tensors")]
    return found, registry, store


@pytest.mark.parametrize(("manifest", "reason"), [
    (b"\xff\xfe not utf-8 {", "malformed"),
    (b"[" * 200_000 + b"]" * 200_000, "malformed"),  # deeper than any parser's stack: refused by a linear scan
    (b'{"format": "prov.run.v2"}', "malformed"),  # fields missing
    (b"[]", "malformed"),
])
def test_a_malformed_stranger_manifest_is_rejected_and_the_honest_claim_selected(manifest: bytes, reason: str) -> None:
    found, registry, blobs = world(manifest)
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=FakeStore(blobs), expected_run=None)
    assert chosen.record.run_key == b"H" * 32 and found[-1].selected
    assert found[0].note.startswith("rejected:") and reason in found[0].note


def test_a_claim_whose_stored_checkpoint_does_not_hold_the_file_is_rejected() -> None:
    """#20: a stranger commits the victim's tensor digest over a checkpoint holding its own adapter; the victim's
    metadata-stripped copy matches both by tensors only, and the stranger's claim is earlier."""
    found, registry, store = two_runs({"adS": _safetensors(b"\x02" * 16), "adH": _safetensors(b"\x01" * 16)})
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=store, expected_run=None)
    assert chosen.record.run_key == b"H" * 32
    assert "does not hold the adapter it claims" in found[0].note


def test_the_named_claim_ends_the_search() -> None:
    """Once the claim the file's metadata names is consistent, no other candidate's manifest is fetched."""
    found, registry, blobs = world(manifest_bytes(STRANGER), n=5)
    honest = found[-1].record
    store = ExplodingStore(blobs, bad={"cidS"})
    meta = {"prov.run_id": honest.run_id.hex(), "prov.checkpoint": str(honest.index)}
    chosen = claimsmod.select(found, metadata=meta, registry=registry, store=store, expected_run=None)
    assert chosen.record is honest
    assert all(c.note.startswith("not examined") for c in found[:-1])
    assert store.reads == 2  # the honest manifest and its stored adapter


def test_an_unreadable_candidate_makes_it_undecided_never_failed() -> None:
    """The honest claim's manifest cannot be fetched (store down) and the only other claim is a stranger's malformed
    one: the store error is raised (verdict "could not verify"), not CheckFailed."""
    found, registry, blobs = world(b"\xff")
    with pytest.raises(StoreUnavailable):
        claimsmod.select(found, metadata={}, registry=registry, store=ExplodingStore(blobs, bad={"cidH"}),
                         expected_run=None)


def test_every_candidate_rejected_is_failed_with_each_reason() -> None:
    found, registry, blobs = world(b"\xff", n=2)
    found.pop()
    with pytest.raises(CheckFailed, match="not what it says it is") as info:
        claimsmod.select(found, metadata={}, registry=registry, store=FakeStore(blobs), expected_run=None)
    assert str(info.value.found).count("malformed") == 2


def test_spam_claims_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """More malformed claims than the limit: only MAX_EXAMINED are fetched; with the honest claim beyond the limit
    the verdict is undecided (inconclusive), never FAILED."""
    monkeypatch.setattr(claimsmod, "MAX_EXAMINED", 4)
    found, registry, blobs = world(b"\xff", n=10)
    store = ExplodingStore(blobs)
    with pytest.raises(CheckInconclusive, match="--run"):
        claimsmod.select(found, metadata={}, registry=registry, store=store, expected_run=None)
    assert store.reads == 4
    assert sum(c.note.startswith("not examined") for c in found) == 7


def test_the_deadline_bounds_the_time_spent_on_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(claimsmod.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(claimsmod, "EXAMINE_SECONDS", 250.0)
    found, registry, blobs = world(b"\xff", n=10)
    with pytest.raises(CheckInconclusive):
        claimsmod.select(found, metadata={}, registry=registry, store=ExplodingStore(blobs), expected_run=None)
    assert 2 <= sum(c.note.startswith("rejected") for c in found) <= 4


def _safetensors(payload: bytes) -> bytes:
    import json
    import struct

    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


def test_an_adapter_too_large_to_fetch_here_is_not_a_rejection() -> None:
    """A stored adapter over ADAPTER_LIMIT is not fetched to check the claim (the selected claim's checkpoint is
    still checked in full later): the honest claim of a huge adapter stays a candidate."""
    from provenance.store import ContentTooLarge

    class Store(FakeStore):
        def get_bytes(self, cid: str, *, max_size: int | None = None) -> bytes:
            if cid == "cidA":
                raise ContentTooLarge(f"{cid}: larger than {max_size} bytes")
            return super().get_bytes(cid, max_size=max_size)

    found, registry, blobs = world(b"\xff")
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=Store(blobs), expected_run=None)
    assert chosen.record.run_key == b"H" * 32


def test_claims_the_metadata_names_are_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies registered under the run id the file names (front-running spam) count against the same limit."""
    monkeypatch.setattr(claimsmod, "MAX_EXAMINED", 4)
    found, registry, blobs = world(b"\xff", n=10)
    store = ExplodingStore(blobs)
    with pytest.raises(CheckInconclusive):
        claimsmod.select(found, metadata={"prov.run_id": "07" * 32, "prov.checkpoint": "0"}, registry=registry,
                         store=store, expected_run=None)
    assert store.reads == 4


# --- found in review: what an unreadable or unchecked candidate may not decide -------------------------------------

def test_a_named_claim_that_cannot_be_read_is_not_replaced_by_another() -> None:
    """The run the file's metadata names cannot be read (its store is down); a stranger's consistent claim on the
    same file must not be shown as the file's lineage: the verdict is "could not verify"."""
    adapter = _safetensors(b"\x01" * 16)
    # the stranger's run is consistent and its stored checkpoint holds the same (public) adapter
    found, registry, store = two_runs({"adS": adapter, "adH": adapter}, bad=frozenset({"cidH"}))
    meta = {"prov.run_id": found[1].record.run_id.hex(), "prov.checkpoint": "3"}
    with pytest.raises(StoreUnavailable):
        claimsmod.select(found, metadata=meta, registry=registry, store=store, expected_run=None)
    assert not any(c.selected for c in found)


def test_a_spent_byte_budget_stops_the_search() -> None:
    """Candidates that spend the auditor's byte budget end the search at once (could not verify; raise
    --max-bytes), instead of leaving the honest claim unread behind them."""
    from provenance.limits import BudgetExceeded

    class Spent(FakeStore):
        reads = 0

        def get_bytes(self, cid: str, *, max_size: int | None = None) -> bytes:
            Spent.reads += 1
            raise BudgetExceeded("the verification's byte budget is spent")

    found, registry, blobs = world(b"\xff", n=5)
    with pytest.raises(BudgetExceeded):
        claimsmod.select(found, metadata={}, registry=registry, store=Spent(blobs), expected_run=None)
    assert Spent.reads == 1


def test_a_claim_whose_adapter_was_not_fetched_ranks_after_one_that_was_checked() -> None:
    """A stranger's earlier, owner-binding claim whose stored adapter is too large to fetch for the holds-the-file
    check is not preferred to the honest claim whose stored adapter was checked to hold the file."""
    found, registry, store = two_runs({"adH": _safetensors(b"\x01" * 16)}, too_large=frozenset({"adS"}))
    chosen = claimsmod.select(found, metadata={}, registry=registry, store=store, expected_run=None)
    assert chosen.record.run_key == b"H" * 32
