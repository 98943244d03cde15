"""Records the registry client returns (the same for both registry versions), the value conversions at the chain
boundary (run ids, micro-ε), and version 1's record hashes (recomputed to check its events against storage; version
2's head chain is in `provenance._chain.heads`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from provenance.errors import UsageError
from provenance.hashing import Digest

# ε is stored as micro-epsilon in a uint64, rounded up so a claim never understates the privacy spent.
# A non-private run commits EPSILON_NOT_PRIVATE (type(uint64).max): "no DP guarantee", never a number.
EPSILON_NOT_PRIVATE = 2**64 - 1
_MICRO = Decimal(10**6)


def epsilon_to_micro(epsilon: float | None) -> int:
    """ε as uint64 micro-epsilon, rounded up; None or +inf (no DP) gives EPSILON_NOT_PRIVATE."""
    if epsilon is None or epsilon == math.inf:
        return EPSILON_NOT_PRIVATE
    if not isinstance(epsilon, int | float) or math.isnan(epsilon) or epsilon < 0:
        raise UsageError(f"ε must be a non-negative number, got {epsilon!r}")
    micro = int((Decimal(repr(float(epsilon))) * _MICRO).to_integral_value(rounding=ROUND_CEILING))
    if micro >= EPSILON_NOT_PRIVATE:
        raise UsageError(f"ε = {epsilon} is too large to commit (at most {(EPSILON_NOT_PRIVATE - 1) / 1e6:.6g})")
    return micro


def epsilon_from_micro(micro: int) -> float:
    """The ε a micro-epsilon value stands for (+inf for EPSILON_NOT_PRIVATE)."""
    return math.inf if micro == EPSILON_NOT_PRIVATE else micro / 1e6


def new_run_id() -> bytes:
    """A fresh random run id (32 bytes; never zero)."""
    while True:
        value = os.urandom(32)
        if any(value):
            return value


def parse_run_id(value: str | bytes) -> bytes:
    """A run id as 32 raw bytes, from bytes or its text form (64 hex digits, `0x` optional)."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise UsageError(f"a run id is 32 bytes, got {len(value)}")
        return value
    text = value.removeprefix("0x")
    if len(text) != 64:
        raise UsageError(f"a run id is 64 hex digits, got {value!r}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"a run id is 64 hex digits, got {value!r}") from None


@dataclass(frozen=True)
class TxInfo:
    """A mined transaction. `already_committed` is set when an idempotent call found the same values already on
    chain and returns the original transaction instead of sending a new one. `run_key` is set by `register_run`."""

    tx_hash: str
    block_number: int
    gas_used: int
    already_committed: bool = False
    run_key: bytes | None = None


@dataclass(frozen=True)
class RunRecord:
    """A registered run: its commitments (from the RunRegistered event, checked against storage: the v2 head chain
    or the v1 record hash) and its current state (from storage).

    `run_key` is where the run lives on chain: `keccak256(abi.encode(owner, run_id))` on version 2, the run id
    itself on version 1. `head` is the stored head (None on version 1).
    """

    run_id: bytes
    owner: str
    manifest_digest: Digest
    base_model_digest: Digest
    dataset_root: Digest
    noise_seed_commitment: Digest
    manifest_cid: str
    checkpoint_count: int
    log_size: int
    epsilon_micro: int
    finalized: bool
    tx_hash: str
    block_number: int
    block_timestamp: int
    run_key: bytes = b""
    head: bytes | None = None
    block_hash: bytes | None = None  # of the block that included the registration, as its log says (v2 and later)

    def __post_init__(self) -> None:
        if not self.run_key:  # version 1 (and records built by hand): the run id is the key
            object.__setattr__(self, "run_key", self.run_id)

    @property
    def committer(self) -> str:
        return self.owner

    @property
    def epsilon(self) -> float:
        return epsilon_from_micro(self.epsilon_micro)


@dataclass(frozen=True)
class RunState:
    """What version 2 stores about a run (one `getRun` call; nothing checked against events)."""

    run_key: bytes
    owner: str
    run_id: bytes
    registered_block: int
    checkpoint_count: int
    log_size: int
    epsilon_micro: int
    finalized: bool
    head: bytes


@dataclass(frozen=True)
class CheckpointRecord:
    """A committed checkpoint, rebuilt from its CheckpointCommitted event and checked against storage (v2: the run's
    events fold to the stored head; v1: the stored record hash).

    `tensor_digest` is the metadata-independent digest of the adapter's tensors (None on version 1); `head` the
    run's head right after this commit (None on version 1); `log_index` orders records of one block.
    """

    run_id: bytes
    index: int
    weights_digest: Digest
    checkpoint_digest: Digest
    log_size: int
    log_root: Digest
    epsilon_micro: int
    manifest_cid: str
    committer: str
    tx_hash: str
    block_number: int
    block_timestamp: int
    run_key: bytes = b""
    tensor_digest: Digest | None = None
    head: bytes | None = None
    log_index: int = 0

    def __post_init__(self) -> None:
        if not self.run_key:
            object.__setattr__(self, "run_key", self.run_id)

    @property
    def epsilon(self) -> float:
        return epsilon_from_micro(self.epsilon_micro)

    def data_tuple(self) -> tuple[Any, ...]:
        """Version 1's `CheckpointData` struct for this record (as its `verifyInclusion` takes it)."""
        return (self.weights_digest.value, self.checkpoint_digest.value, self.log_size, self.log_root.value,
                self.epsilon_micro, self.manifest_cid, self.committer)


@dataclass(frozen=True)
class WriterChange:
    """The owner authorised (`authorized`) or revoked `writer` on a run. `name` and `args` give it the shape of the
    version 1 event (`RegistryEvent`) too."""

    run_key: bytes
    run_id: bytes
    writer: str
    authorized: bool
    by: str
    tx_hash: str
    block_number: int
    log_index: int
    head: bytes | None = None

    @property
    def name(self) -> str:
        return "WriterAuthorized" if self.authorized else "WriterRevoked"

    @property
    def args(self) -> dict[str, Any]:
        return {"runId": self.run_id, "runKey": self.run_key, "writer": self.writer}


@dataclass(frozen=True)
class Finalization:
    """A run's closing: who closed it, when, after how many checkpoints, and the tensor digest of the merged model
    it committed (None when it committed none, and always on version 1)."""

    run_key: bytes
    run_id: bytes
    by: str
    merged_tensor_digest: Digest | None
    checkpoint_count: int
    log_size: int
    epsilon_micro: int
    tx_hash: str
    block_number: int
    block_timestamp: int
    head: bytes | None = None


@dataclass(frozen=True)
class RunHistory:
    """Everything a run's events say, verified against storage: its registration, every checkpoint in index order,
    the writer authorisations and revocations in chain order, and its finalization (None while open)."""

    registration: RunRecord
    checkpoints: tuple[CheckpointRecord, ...]
    writers: tuple[WriterChange, ...]
    finalization: Finalization | None

    @property
    def run_key(self) -> bytes:
        return self.registration.run_key

    @property
    def run_id(self) -> bytes:
        return self.registration.run_id

    @property
    def last_block(self) -> int:
        """The block of the run's last write (a value chosen after it cannot have been known to the trainer)."""
        blocks = [self.registration.block_number, *(c.block_number for c in self.checkpoints),
                  *(w.block_number for w in self.writers)]
        if self.finalization is not None:
            blocks.append(self.finalization.block_number)
        return max(blocks)


@dataclass(frozen=True)
class RegistryEvent:
    """One event the registry emitted, decoded: `args` by Solidity parameter name."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


def _hash24(types: list[str], values: list[Any]) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(encode(types, values))[:24]


def checkpoint_record_hash(
    run_id: bytes, index: int, *, weights_digest: bytes, checkpoint_digest: bytes, log_size: int, log_root: bytes,
    epsilon_micro: int, manifest_cid: str, committer: str,
) -> bytes:
    """The 24-byte record hash ProvenanceRegistry version 1 stores for a checkpoint (see its NatSpec)."""
    from eth_utils import keccak

    return _hash24(
        ["bytes32", "uint64", "bytes32", "bytes32", "uint64", "bytes32", "uint64", "bytes32", "address"],
        [run_id, index, weights_digest, checkpoint_digest, log_size, log_root, epsilon_micro,
         keccak(text=manifest_cid), committer],
    )


def run_record_hash(
    run_id: bytes, *, owner: str, manifest_digest: bytes, base_model_digest: bytes, dataset_root: bytes,
    noise_seed_commitment: bytes, manifest_cid: str,
) -> bytes:
    """The 24-byte record hash ProvenanceRegistry version 1 stores for a run registration."""
    from eth_utils import keccak

    return _hash24(
        ["bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
        [run_id, owner, manifest_digest, base_model_digest, dataset_root, noise_seed_commitment,
         keccak(text=manifest_cid)],
    )
