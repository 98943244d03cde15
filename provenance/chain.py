"""The ProvenanceRegistry client: deploy, register runs, commit checkpoints, finalize, look records up.

Backends: `connect("tester")` runs an in-process py-evm chain (ephemeral, funded accounts, no ports) for tests and
the embedded demo; `connect("http://...")` talks JSON-RPC to anvil, a Hardhat node or a real network.
`connect()` with no URL uses the project config section "chain" (`prov chain up` / `prov chain deploy` write it).

How records are read: the registry stores only what look-ups and its rules need — per checkpoint the block it was
committed in and a 24-byte record hash — and emits the full record in an event. `get_checkpoint` reads the event at
the stored block (one `eth_getLogs`) and checks it against the stored hash, so a node that returns a different
event (a reorg, a lying node) raises InconsistentChain instead of giving a wrong record.

Idempotency (the trainer's outbox retries): `register_run(..., idempotent=True)` and
`commit_checkpoint(..., idempotent=True)` first look at what is on chain; if the same values are already there they
return the original transaction's TxInfo with `already_committed=True` and send nothing; different values raise
CheckpointConflict. Without `idempotent`, a retried commit raises NonSequentialIndex with `already_committed` true.

Errors: every custom error of the contract is a typed subclass of RegistryRevert (decoded from its selector on
every backend); connection and configuration problems are other ChainError subclasses. All are one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provenance import config
from provenance._chain import artifact
from provenance._chain.errors import (
    CheckpointConflict,
    EmptyContentAddress,
    EpsilonDecreased,
    InconsistentChain,
    InsufficientFunds,
    InvalidProof,
    InvalidRunId,
    InvalidWriter,
    LogShrank,
    NoContract,
    NonSequentialIndex,
    NotARegistry,
    OtherRevert,
    RecordMismatch,
    RegistryNotConfigured,
    RegistryRevert,
    RevertDecoder,
    RpcUnreachable,
    RunAlreadyRegistered,
    RunFinalized,
    SignerError,
    TransactionDropped,
    TransactionError,
    TransactionFailed,
    TransactionTimeout,
    Unauthorized,
    UnknownCheckpoint,
    UnknownRun,
    WeightsAlreadyCommitted,
    WrongChainId,
)
from provenance._chain.keys import Signer
from provenance._chain.local import LocalChain
from provenance._chain.local import deploy as deploy_and_record
from provenance._chain.local import down as stop_local_chain
from provenance._chain.local import status as chain_status
from provenance._chain.local import up as start_local_chain
from provenance._chain.records import (
    EPSILON_NOT_PRIVATE,
    CheckpointRecord,
    RegistryEvent,
    RunRecord,
    TxInfo,
    checkpoint_record_hash,
    epsilon_from_micro,
    epsilon_to_micro,
    new_run_id,
    parse_run_id,
    run_record_hash,
)
from provenance._chain.transport import TESTER, Transport, wrap_rpc
from provenance.errors import ChainError
from provenance.hashing import Digest

__all__ = [
    "EPSILON_NOT_PRIVATE", "TESTER", "ChainError", "CheckpointConflict", "CheckpointRecord", "EmptyContentAddress",
    "EpsilonDecreased", "InconsistentChain", "InsufficientFunds", "InvalidProof", "InvalidRunId", "InvalidWriter",
    "LocalChain", "LogShrank", "NoContract", "NonSequentialIndex", "NotARegistry", "OtherRevert", "RecordMismatch",
    "Registry", "RegistryEvent", "RegistryNotConfigured", "RegistryRevert", "RpcUnreachable",
    "RunAlreadyRegistered", "RunFinalized", "RunRecord", "Signer", "SignerError", "TransactionDropped",
    "TransactionError", "TransactionFailed", "TransactionTimeout", "TxInfo", "Unauthorized", "UnknownCheckpoint",
    "UnknownRun", "WeightsAlreadyCommitted", "WrongChainId", "chain_status", "connect", "deploy_and_record",
    "epsilon_from_micro", "epsilon_to_micro", "new_run_id", "parse_run_id", "start_local_chain", "stop_local_chain",
]

RunId = bytes | str
_EVENTS = ("RunRegistered", "WriterAuthorized", "WriterRevoked", "CheckpointCommitted", "RunFinalized")


def connect(
    rpc_url: str | None = None,
    *,
    registry: str | None = None,
    key: str | bytes | Signer | None = None,
    keystore: str | os.PathLike[str] | None = None,
    chain_id: int | None = None,
    timeout: float = 120.0,
    home: Path | None = None,
    use_config: bool = True,
) -> Registry:
    """Connect to a chain and, if an address is known, to the registry there (checked to be this contract).

    `rpc_url`: "tester" for in-process py-evm, an http(s) URL, or None for the project config's `rpc_url` (then its
    `registry` and `chain_id` too), falling back to "tester". `key`/`keystore`: see provenance._chain.keys.resolve.
    `timeout`: seconds to wait for each receipt. `use_config=False` ignores the project config.
    """
    section = config.get_section("chain", home) if use_config else {}
    url = rpc_url or section.get("rpc_url") or TESTER
    if url != TESTER and url == section.get("rpc_url"):
        registry = registry or section.get("registry")
        if chain_id is None and registry == section.get("registry"):
            chain_id = section.get("chain_id")
    transport = Transport(url, chain_id=chain_id, key=key, keystore=keystore, timeout=timeout,
                          decoder=RevertDecoder(artifact.load().errors()))
    return Registry(transport, registry)


class Registry:
    """A ProvenanceRegistry at `address` (None until `deploy()` on a fresh chain)."""

    def __init__(self, transport: Transport, address: str | None = None) -> None:
        self.transport = transport
        self._artifact = artifact.load()
        self._contract: Any = None
        self._timestamps: dict[int, int] = {}
        if address is not None:
            self._bind(address)

    # --- connection -----------------------------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        return None if self._contract is None else str(self._contract.address)

    @property
    def chain_id(self) -> int:
        return self.transport.chain_id

    @property
    def web3(self) -> Any:
        return self.transport.web3

    @property
    def signer(self) -> Signer:
        """The account writes are signed with (resolved on first use; raises SignerError if there is none)."""
        return self.transport.signer

    def with_signer(self, key: str | bytes | Signer) -> Registry:
        """The same registry on the same connection, signing with another key."""
        clone = Registry(self.transport.with_signer(key))
        clone._contract, clone._timestamps = self._contract, self._timestamps
        return clone

    def dev_keys(self) -> list[bytes]:
        """Funded keys of the in-process chain (for tests and demos); empty on JSON-RPC."""
        return self.transport.dev_keys()

    @wrap_rpc
    def _bind(self, address: str) -> None:
        self._contract = self.transport.contract_at(address, self._artifact, name="ProvenanceRegistry",
                                                    hint="; deploy one with `prov chain deploy`")

    @property
    def contract(self) -> Any:
        if self._contract is None:
            raise RegistryNotConfigured("no registry address: pass --registry ADDRESS or run `prov chain deploy`")
        return self._contract

    def deploy(self) -> TxInfo:
        """Deploy a new registry with the configured signer and bind this client to it."""
        factory = self.web3.eth.contract(abi=self._artifact.abi, bytecode=self._artifact.bytecode)
        receipt = self.transport.transact(factory.constructor(), what="deploy ProvenanceRegistry")
        self._bind(receipt["contractAddress"])
        return _tx_info(receipt)

    # --- writes -----------------------------------------------------------------------------------------------

    def register_run(
        self, run_id: RunId, *, manifest_digest: Digest, base_model_digest: Digest, dataset_root: Digest,
        noise_seed_commitment: Digest, manifest_cid: str, idempotent: bool = False,
    ) -> TxInfo:
        """Register a run (before its first step); the signer becomes its owner."""
        rid = parse_run_id(run_id)
        values = {"manifest_digest": manifest_digest, "base_model_digest": base_model_digest,
                  "dataset_root": dataset_root, "noise_seed_commitment": noise_seed_commitment,
                  "manifest_cid": manifest_cid, "owner": self.signer.address}
        call = self.contract.functions.registerRun(
            rid, manifest_digest.value, base_model_digest.value, dataset_root.value, noise_seed_commitment.value,
            manifest_cid)
        try:
            return self._send(call, f"register run {rid.hex()}")
        except RunAlreadyRegistered:
            if not idempotent:
                raise
            return self._same_or_conflict(self.get_run(rid), values, f"run {rid.hex()}")

    def authorize_writer(self, run_id: RunId, writer: str) -> TxInfo:
        """Let `writer` commit checkpoints to (and finalize) a run the signer owns."""
        rid = parse_run_id(run_id)
        return self._send(self.contract.functions.authorizeWriter(rid, writer), f"authorise {writer} on {rid.hex()}")

    def revoke_writer(self, run_id: RunId, writer: str) -> TxInfo:
        rid = parse_run_id(run_id)
        return self._send(self.contract.functions.revokeWriter(rid, writer), f"revoke {writer} on {rid.hex()}")

    def commit_checkpoint(
        self, run_id: RunId, *, index: int, weights_digest: Digest, checkpoint_digest: Digest, log_size: int,
        log_root: Digest, epsilon_micro: int, manifest_cid: str, idempotent: bool = False,
    ) -> TxInfo:
        """Commit checkpoint `index` (0, 1, 2, ... in order). Gas does not depend on the number of steps."""
        rid = parse_run_id(run_id)
        values = {"weights_digest": weights_digest, "checkpoint_digest": checkpoint_digest, "log_size": log_size,
                  "log_root": log_root, "epsilon_micro": epsilon_micro, "manifest_cid": manifest_cid}
        what = f"checkpoint {index} of run {rid.hex()}"
        if idempotent and index < self._view(self.contract.functions.getRun(rid))[4]:  # checkpointCount
            return self._same_or_conflict(self.get_checkpoint(rid, index), values, what)
        call = self.contract.functions.commitCheckpoint(
            rid, index, weights_digest.value, checkpoint_digest.value, log_size, log_root.value, epsilon_micro,
            manifest_cid)
        try:
            return self._send(call, f"commit {what}")
        except NonSequentialIndex as exc:
            if not (idempotent and exc.already_committed):
                raise
            return self._same_or_conflict(self.get_checkpoint(rid, index), values, what)

    def finalize_run(self, run_id: RunId) -> TxInfo:
        """Close a run for good (owner or authorised writer)."""
        rid = parse_run_id(run_id)
        return self._send(self.contract.functions.finalizeRun(rid), f"finalize run {rid.hex()}")

    def _send(self, call: Any, what: str) -> TxInfo:
        return _tx_info(self.transport.transact(call, what=what))

    @wrap_rpc
    def _same_or_conflict(self, record: RunRecord | CheckpointRecord, values: dict[str, Any], what: str) -> TxInfo:
        differing = [name for name, value in values.items() if getattr(record, name) != value]
        if differing:
            detail = ", ".join(f"{n} on chain {getattr(record, n)} vs {values[n]}" for n in differing)
            raise CheckpointConflict(f"{what} is already committed with other values: {detail}")
        receipt = self.web3.eth.get_transaction_receipt(record.tx_hash)
        return TxInfo(record.tx_hash, record.block_number, int(receipt["gasUsed"]), already_committed=True)

    # --- reads ------------------------------------------------------------------------------------------------

    @wrap_rpc
    def can_write(self, run_id: RunId, account: str) -> bool:
        return bool(self.contract.functions.canWrite(parse_run_id(run_id), account).call())

    @wrap_rpc
    def get_run(self, run_id: RunId) -> RunRecord:
        """The run's commitments (from its event, checked against storage) and its current head."""
        rid = parse_run_id(run_id)
        state = self._view(self.contract.functions.getRun(rid))
        _, _, registered_block, record_hash, count, log_size, epsilon, finalized = state
        event = self._event_at("RunRegistered", registered_block, {"runId": rid})
        a = event["args"]
        expected = run_record_hash(rid, owner=a["owner"], manifest_digest=a["manifestDigest"],
                                   base_model_digest=a["baseModelDigest"], dataset_root=a["datasetRoot"],
                                   noise_seed_commitment=a["noiseSeedCommitment"], manifest_cid=a["manifestCid"])
        self._check_hash(bytes(record_hash), expected, f"registration of run {rid.hex()}")
        return RunRecord(
            run_id=rid, owner=a["owner"], manifest_digest=Digest(a["manifestDigest"]),
            base_model_digest=Digest(a["baseModelDigest"]), dataset_root=Digest(a["datasetRoot"]),
            noise_seed_commitment=Digest(a["noiseSeedCommitment"]), manifest_cid=a["manifestCid"],
            checkpoint_count=count, log_size=log_size, epsilon_micro=epsilon, finalized=finalized,
            tx_hash=event["transactionHash"].to_0x_hex(), block_number=registered_block,
            block_timestamp=self._timestamp(registered_block),
        )

    @wrap_rpc
    def get_checkpoint(self, run_id: RunId, index: int) -> CheckpointRecord:
        """Checkpoint `index` of a run; raises UnknownRun / UnknownCheckpoint if there is none."""
        rid = parse_run_id(run_id)
        _, _, block, record_hash = self._view(self.contract.functions.getCheckpoint(rid, index))
        return self._checkpoint_at(rid, index, block, bytes(record_hash))

    @wrap_rpc
    def find_by_weights(self, weights_digest: Digest) -> CheckpointRecord | None:
        """The checkpoint that committed these adapter weights, or None."""
        rid, index, block, record_hash = self._view(self.contract.functions.findByWeights(weights_digest.value))
        if not any(rid):
            return None
        return self._checkpoint_at(bytes(rid), index, block, bytes(record_hash))

    @wrap_rpc
    def checkpoints(self, run_id: RunId, *, limit: int | None = None) -> list[CheckpointRecord]:
        """The run's checkpoints 0..n-1 in index order (the first `limit` of them if given).

        One `eth_getLogs` for all their events (filtered by run id, from the registration block), each matched to
        the block and record hash the registry stores; a checkpoint whose event the range query did not return
        (a provider capping ranges) is looked up on its own.
        """
        rid = parse_run_id(run_id)
        run = self.get_run(rid)
        count = run.checkpoint_count if limit is None else min(limit, run.checkpoint_count)
        if count == 0:
            return []
        logs = self.contract.events.CheckpointCommitted.get_logs(argument_filters={"runId": rid},
                                                                  from_block=run.block_number)
        by_index = {int(log["args"]["index"]): log for log in logs}
        records = []
        for index in range(count):
            _, _, block, stored = self._view(self.contract.functions.getCheckpoint(rid, index))
            event = by_index.get(index)
            if event is None or int(event["blockNumber"]) != block:
                records.append(self._checkpoint_at(rid, index, block, bytes(stored)))
            else:
                records.append(self._record_from_event(rid, index, block, bytes(stored), event))
        return records

    @wrap_rpc
    def writer_events(self, run_id: RunId, *, from_block: int = 0) -> list[RegistryEvent]:
        """The run's WriterAuthorized / WriterRevoked events, in chain order."""
        rid = parse_run_id(run_id)
        found = [
            RegistryEvent(name, dict(log["args"]), log["blockNumber"], log["transactionHash"].to_0x_hex(),
                          log["logIndex"])
            for name in ("WriterAuthorized", "WriterRevoked")
            for log in getattr(self.contract.events, name).get_logs(argument_filters={"runId": rid},
                                                                      from_block=from_block)
        ]
        return sorted(found, key=lambda e: (e.block_number, e.log_index))

    @wrap_rpc
    def events(self, *, from_block: int = 0, to_block: int | str = "latest") -> list[RegistryEvent]:
        """Every event the registry emitted in the block range, in chain order."""
        found: list[RegistryEvent] = []
        for name in _EVENTS:
            for log in getattr(self.contract.events, name).get_logs(from_block=from_block, to_block=to_block):
                found.append(RegistryEvent(name, dict(log["args"]), log["blockNumber"],
                                           log["transactionHash"].to_0x_hex(), log["logIndex"]))
        return sorted(found, key=lambda e: (e.block_number, e.log_index))

    @wrap_rpc
    def root_from_inclusion_proof(self, *, leaf_hash: bytes, leaf_index: int, tree_size: int,
                                  proof: list[bytes]) -> bytes:
        """The RFC 6962 root the contract computes from an inclusion proof (raises InvalidProof if malformed)."""
        fn = self.contract.functions.rootFromInclusionProof(leaf_hash, leaf_index, tree_size, list(proof))
        return bytes(self._view(fn))

    @wrap_rpc
    def verify_inclusion_onchain(self, run_id: RunId, index: int, *, leaf_hash: bytes, leaf_index: int,
                                 proof: list[bytes]) -> bool:
        """Ask the contract whether `proof` puts `leaf_hash` at `leaf_index` of the log committed by checkpoint
        `index` (the record is read from its event and re-checked by the contract against storage)."""
        rid = parse_run_id(run_id)
        record = self.get_checkpoint(rid, index)
        fn = self.contract.functions.verifyInclusion(rid, index, record.data_tuple(), leaf_hash, leaf_index,
                                                     list(proof))
        return bool(self._view(fn))

    @wrap_rpc
    def latest_block_hash(self) -> tuple[int, bytes]:
        """The latest block's number and hash."""
        block = self.web3.eth.get_block("latest")
        return int(block["number"]), bytes(block["hash"])

    @wrap_rpc
    def block_hash_after(self, block_number: int) -> tuple[int, bytes] | None:
        """The first block after `block_number` (a value nobody could predict when that block was mined), or
        None if it is not mined yet."""
        from web3.exceptions import BlockNotFound

        try:
            block = self.web3.eth.get_block(block_number + 1)
        except BlockNotFound:
            return None
        return int(block["number"]), bytes(block["hash"])

    # --- helpers ----------------------------------------------------------------------------------------------

    @wrap_rpc
    def _view(self, fn: Any) -> Any:
        return self.transport.view(fn)

    def _event_at(self, name: str, block: int, filters: dict[str, Any]) -> Any:
        logs = getattr(self.contract.events, name).get_logs(argument_filters=filters, from_block=block,
                                                             to_block=block)
        if len(logs) != 1:
            raise InconsistentChain(f"the node returned {len(logs)} {name} events in block {block} for "
                                    f"{filters}, expected exactly 1")
        return logs[0]

    def _checkpoint_at(self, rid: bytes, index: int, block: int, stored: bytes) -> CheckpointRecord:
        event = self._event_at("CheckpointCommitted", block, {"runId": rid, "index": index})
        return self._record_from_event(rid, index, block, stored, event)

    def _record_from_event(self, rid: bytes, index: int, block: int, stored: bytes, event: Any) -> CheckpointRecord:
        a = event["args"]
        record = CheckpointRecord(
            run_id=rid, index=index, weights_digest=Digest(a["weightsDigest"]),
            checkpoint_digest=Digest(a["checkpointDigest"]), log_size=a["logSize"], log_root=Digest(a["logRoot"]),
            epsilon_micro=a["epsilonMicro"], manifest_cid=a["manifestCid"], committer=a["committer"],
            tx_hash=event["transactionHash"].to_0x_hex(), block_number=block, block_timestamp=self._timestamp(block),
        )
        expected = checkpoint_record_hash(
            rid, index, weights_digest=a["weightsDigest"], checkpoint_digest=a["checkpointDigest"],
            log_size=a["logSize"], log_root=a["logRoot"], epsilon_micro=a["epsilonMicro"],
            manifest_cid=a["manifestCid"], committer=a["committer"])
        self._check_hash(stored, expected, f"checkpoint {index} of run {rid.hex()}")
        return record

    @staticmethod
    def _check_hash(stored: bytes, computed: bytes, what: str) -> None:
        if stored != computed:
            raise InconsistentChain(f"the event for {what} hashes to 0x{computed.hex()} but the registry stores "
                                    f"0x{stored.hex()} (reorg or untrustworthy node)")

    def _timestamp(self, block: int) -> int:
        if block not in self._timestamps:
            self._timestamps[block] = int(self.web3.eth.get_block(block)["timestamp"])
        return self._timestamps[block]


def _tx_info(receipt: Any) -> TxInfo:
    return TxInfo(receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]))
