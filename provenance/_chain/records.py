"""Records the registry client returns, the value conversions at the chain boundary (run ids, micro-ε), and the
record hashes the contract stores (recomputed here to check events against storage).
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
    chain and returns the original transaction instead of sending a new one."""

    tx_hash: str
    block_number: int
    gas_used: int
    already_committed: bool = False


@dataclass(frozen=True)
class RunRecord:
    """A registered run: its commitments (from the RunRegistered event, checked against the stored hash) and its
    current head (from storage)."""

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

    @property
    def committer(self) -> str:
        return self.owner

    @property
    def epsilon(self) -> float:
        return epsilon_from_micro(self.epsilon_micro)


@dataclass(frozen=True)
class CheckpointRecord:
    """A committed checkpoint, reconstructed from its CheckpointCommitted event and checked against the record
    hash the registry stores."""

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

    @property
    def epsilon(self) -> float:
        return epsilon_from_micro(self.epsilon_micro)

    def data_tuple(self) -> tuple[Any, ...]:
        """The contract's `CheckpointData` struct for this record (as `verifyInclusion` takes it)."""
        return (self.weights_digest.value, self.checkpoint_digest.value, self.log_size, self.log_root.value,
                self.epsilon_micro, self.manifest_cid, self.committer)


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
    """The 24-byte record hash ProvenanceRegistry stores for a checkpoint (see its NatSpec)."""
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
    """The 24-byte record hash ProvenanceRegistry stores for a run registration."""
    from eth_utils import keccak

    return _hash24(
        ["bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
        [run_id, owner, manifest_digest, base_model_digest, dataset_root, noise_seed_commitment,
         keccak(text=manifest_cid)],
    )
