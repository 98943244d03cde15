"""Version 2's run keys and head chain, recomputed off chain exactly as ProvenanceRegistry computes them (see the
NatSpec of contracts/IProvenanceRegistry.sol), and the checkpoint content address as it is committed: the 32-byte
sha2-256 digest of a dag-pb CIDv1.

A run's head starts from its registration record and folds in every later record with the sender and block:
`head' = bytes24(keccak256(abi.encode(head, kind, <record>, sender, block)))`. A client that rebuilds a run's history
from events checks it by folding it and comparing the result with the head the registry stores.
"""

from __future__ import annotations

from provenance.cid import DAG_PB, Cid, parse_cid
from provenance.errors import FormatError, UsageError

KIND_REGISTERED = 0
KIND_CHECKPOINT = 1
KIND_WRITER_AUTHORIZED = 2
KIND_WRITER_REVOKED = 3
KIND_FINALIZED = 4
MAX_LOG_SIZE = 2**56 - 1  # the registry stores the log size in 56 bits
ZERO32 = bytes(32)


def _keccak(types: list[str], values: list[object]) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    return bytes(keccak(encode(types, values)))


def run_key_of(owner: str, run_id: bytes) -> bytes:
    """The key a run registered by `owner` as `run_id` lives under: `keccak256(abi.encode(owner, runId))`."""
    return _keccak(["address", "bytes32"], [owner, run_id])


def registration_head(
    *, run_key: bytes, owner: str, run_id: bytes, manifest_digest: bytes, base_model_digest: bytes,
    dataset_root: bytes, noise_seed_commitment: bytes, manifest_cid: str, block_number: int,
) -> bytes:
    """The head a registration starts the run's chain with."""
    from eth_utils import keccak

    return _keccak(
        ["uint8", "bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "uint256"],
        [KIND_REGISTERED, run_key, owner, run_id, manifest_digest, base_model_digest, dataset_root,
         noise_seed_commitment, keccak(text=manifest_cid), block_number],
    )[:24]


def checkpoint_head(
    head: bytes, *, index: int, weights_digest: bytes, tensor_digest: bytes, checkpoint_digest: bytes,
    log_size: int, log_root: bytes, epsilon_micro: int, manifest_cid_digest: bytes, committer: str,
    block_number: int,
) -> bytes:
    """`head` with a checkpoint commit folded in."""
    return _keccak(
        ["bytes24", "uint8", "uint64", "bytes32", "bytes32", "bytes32", "uint64", "bytes32", "uint64", "bytes32",
         "address", "uint256"],
        [head, KIND_CHECKPOINT, index, weights_digest, tensor_digest, checkpoint_digest, log_size, log_root,
         epsilon_micro, manifest_cid_digest, committer, block_number],
    )[:24]


def writer_head(head: bytes, *, writer: str, authorized: bool, by: str, block_number: int) -> bytes:
    """`head` with a writer authorisation (or revocation) folded in."""
    kind = KIND_WRITER_AUTHORIZED if authorized else KIND_WRITER_REVOKED
    return _keccak(["bytes24", "uint8", "address", "address", "uint256"], [head, kind, writer, by, block_number])[:24]


def finalized_head(head: bytes, *, merged_tensor_digest: bytes, by: str, block_number: int) -> bytes:
    """`head` with the run's finalization folded in."""
    return _keccak(["bytes24", "uint8", "bytes32", "address", "uint256"],
                   [head, KIND_FINALIZED, merged_tensor_digest, by, block_number])[:24]


def cid_digest(cid: str) -> bytes:
    """The digest a checkpoint's content address is committed as: the sha2-256 digest of a CIDv1 dag-pb (a
    directory). Other codecs and hashes are refused: the registry stores only the digest, so the rest of the CID
    must be the one fixed kind for it to be rebuilt."""
    try:
        parsed = parse_cid(cid)
    except FormatError as exc:
        raise UsageError(f"checkpoint content address: {exc}") from None
    if parsed.codec != DAG_PB:
        raise UsageError(f"checkpoint content address {cid} is a {parsed.codec_name} CID: a checkpoint is committed "
                         "as the dag-pb CIDv1 (sha2-256) of its directory, as `prov store put` gives it")
    return parsed.digest


def cid_from_digest(digest: bytes) -> str:
    """The CIDv1 dag-pb (base32) a committed content-address digest stands for."""
    return str(Cid(DAG_PB, bytes(digest)))
