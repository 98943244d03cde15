"""The ProvenanceRegistry client: deploy, register runs, commit checkpoints, finalize, and read verified records.

Backends: `connect("tester")` runs an in-process py-evm chain (ephemeral, funded accounts, no ports) for tests and
the embedded demo; `connect("http://...")` talks JSON-RPC to anvil, a Hardhat node or a real network.
`connect()` with no URL uses the project config section "chain" (`prov chain up` / `prov chain deploy` write it).
`connect()` detects the registry's version: a version 3 or 2 registry gives a `Registry` (version 3 adds per-run
block pointers, so a run's history is read with single-block log queries; version 2's is read by scans), a version 1
deployment a read-only `RegistryV1`; both satisfy `RegistryReader` (provenance._chain.reader), which is what a
verifier uses.

Runs live under their run key `keccak256(abi.encode(owner, run_id))` (`register_run` returns it in its TxInfo),
so a copied transaction from another account makes another run. How records are read: the registry stores one
hash-chained head per run and emits the records in events; `run(run_key)` rebuilds the run's whole history from
its events, folds it and compares it with the stored head, so a node that hides or forges an event raises
InconsistentChain instead of giving a wrong record. `claims(weights=...)` / `claims(tensors=...)` find every run
claiming a digest (any number of runs may), each checked the same way.

Idempotency (the trainer's outbox retries): `register_run`, `commit_checkpoint` and `finalize_run` with
`idempotent=True` first look at what is on chain; if the same values are already there they return the original
transaction's TxInfo with `already_committed=True` and send nothing; different values raise CheckpointConflict.
Without `idempotent`, a retried commit raises NonSequentialIndex with `already_committed` true.

Errors: every custom error of the contract is a typed subclass of RegistryRevert (decoded from its selector on
every backend); connection and configuration problems are other ChainError subclasses. All are one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provenance import config
from provenance._chain import artifact, heads
from provenance._chain.errors import (
    REVERT_CLASSES,
    CheckpointConflict,
    EmptyContentAddress,
    EpsilonDecreased,
    InconsistentChain,
    InsufficientFunds,
    InvalidLogSize,
    InvalidProof,
    InvalidRunId,
    InvalidWriter,
    LogSizeTooLarge,
    NoCheckpoint,
    NoContract,
    NonSequentialIndex,
    NotARegistry,
    OtherRevert,
    ReadOnlyRegistry,
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
from provenance._chain.heads import run_key_of
from provenance._chain.history import (
    EVENTS,
    Event,
    EventReader,
    HistoryBuilder,
    deployment_block,
    follow_pointers,
)
from provenance._chain.keys import Signer, use_keystore
from provenance._chain.legacy import LegacyReads
from provenance._chain.reader import BlockInfo, ChainInfo, ClientBase, RegistryReader, RunKey
from provenance._chain.records import (
    EPSILON_NOT_PRIVATE,
    CheckpointRecord,
    Finalization,
    RegistryEvent,
    RunHistory,
    RunRecord,
    RunState,
    TxInfo,
    WriterChange,
    epsilon_from_micro,
    epsilon_to_micro,
    new_run_id,
    parse_run_id,
)
from provenance._chain.transport import TESTER, Transport, wrap_rpc
from provenance._chain.v1 import RegistryV1, connect_v1, registry_version
from provenance.errors import ChainError, UsageError
from provenance.hashing import Digest

__all__ = [
    "EPSILON_NOT_PRIVATE", "TESTER", "AnyRegistry", "BlockInfo", "ChainError", "ChainInfo", "CheckpointConflict",
    "CheckpointRecord", "EmptyContentAddress", "EpsilonDecreased", "Finalization", "InconsistentChain",
    "InsufficientFunds", "InvalidLogSize", "InvalidProof", "InvalidRunId", "InvalidWriter", "LogSizeTooLarge",
    "NoCheckpoint", "NoContract", "NonSequentialIndex", "NotARegistry", "OtherRevert", "ReadOnlyRegistry", "Registry",
    "RegistryEvent", "RegistryNotConfigured", "RegistryReader", "RegistryRevert", "RegistryV1", "RpcUnreachable",
    "RunAlreadyRegistered", "RunFinalized", "RunHistory", "RunRecord", "RunState", "Signer", "SignerError",
    "TransactionDropped", "TransactionError", "TransactionFailed", "TransactionTimeout", "TxInfo", "Unauthorized",
    "UnknownCheckpoint", "UnknownRun", "WeightsAlreadyCommitted", "WriterChange", "WrongChainId", "connect",
    "epsilon_from_micro", "epsilon_to_micro", "new_run_id", "parse_run_id", "registry_version", "run_key_of",
    "use_keystore",
]

VERSION = 3
_ARTIFACTS = {3: artifact.ARTIFACT_NAME, 2: artifact.V2_ARTIFACT_NAME}


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
) -> Registry | RegistryV1:
    """Connect to a chain and, if an address is known, to the registry there (its version detected, its code
    checked to be exactly the packaged contract of that version).

    `rpc_url`: "tester" for in-process py-evm, an http(s) URL, or None for the project config's `rpc_url` (then its
    `registry` and `chain_id` too), falling back to "tester". `key`/`keystore`: see provenance._chain.keys.resolve.
    `timeout`: seconds to wait for each receipt. `use_config=False` ignores the project config. Without an address
    the client is a version 3 `Registry` ready to `deploy()`.
    """
    section = config.get_section("chain", home) if use_config else {}
    url = rpc_url or section.get("rpc_url") or TESTER
    if url != TESTER and url == section.get("rpc_url"):
        registry = registry or section.get("registry")
        if chain_id is None and registry == section.get("registry"):
            chain_id = section.get("chain_id")
    transport = Transport(url, chain_id=chain_id, key=key, keystore=keystore, timeout=timeout,
                          decoder=RevertDecoder(artifact.load().errors(), REVERT_CLASSES))
    version = VERSION if registry is None else registry_version(transport, registry, current=VERSION)
    if version in _ARTIFACTS:
        return Registry(transport, registry, version=version)
    assert registry is not None  # version 1 is only ever detected at an address
    return connect_v1(transport, registry)


class Registry(ClientBase, LegacyReads):
    """A version 3 (default) or version 2 ProvenanceRegistry at `address` (None until `deploy()` on a fresh chain).
    Both take the same writes; only version 3's events carry the pointers `run()` follows."""

    def __init__(self, transport: Transport, address: str | None = None, *, version: int = VERSION) -> None:
        super().__init__(transport)
        self._version = version
        self._artifact = artifact.load(_ARTIFACTS[version])
        self._events: EventReader | None = None
        # While `remembering()`: a run's history as of block `at` is rebuilt and checked once (one verification asks
        # for the same run several times: its claims, then its lineage). Off by default, so every other read asks
        # the node again.
        self._histories: dict[tuple[bytes, int], RunHistory] | None = None
        self._deployed_at: int | None = None
        if address is not None:
            self._bind(address)

    @property
    def version(self) -> int:
        return self._version

    def with_signer(self, key: str | bytes | Signer) -> Registry:
        """The same registry on the same connection, signing with another key."""
        clone = Registry(self.transport.with_signer(key), version=self._version)
        clone._contract, clone._events, clone._timestamps = self._contract, self._events, self._timestamps
        return clone

    @wrap_rpc
    def _bind(self, address: str) -> None:
        self._contract = self.transport.contract_at(address, self._artifact, name="ProvenanceRegistry",
                                                    hint="; deploy one with `prov chain deploy`")
        self._events = EventReader(self._contract, self.web3)

    @property
    def contract(self) -> Any:
        if self._contract is None:
            raise RegistryNotConfigured("no registry address: pass --registry ADDRESS or run `prov chain deploy`")
        return self._contract

    @property
    def event_reader(self) -> EventReader:
        self.contract  # noqa: B018 - raises RegistryNotConfigured when unbound
        assert self._events is not None
        return self._events

    def deploy(self) -> TxInfo:
        """Deploy a new registry with the configured signer and bind this client to it."""
        factory = self.web3.eth.contract(abi=self._artifact.abi, bytecode=self._artifact.bytecode)
        receipt = self.transport.transact(factory.constructor(), what="deploy ProvenanceRegistry")
        self._bind(receipt["contractAddress"])
        return _tx_info(receipt)

    def run_key(self, run_id: bytes | str, owner: str | None = None) -> bytes:
        """The key run `run_id` of `owner` (default: this client's signer) lives under."""
        return heads.run_key_of(owner or self.signer.address, parse_run_id(run_id))

    # --- writes -----------------------------------------------------------------------------------------------

    def register_run(
        self, run_id: bytes | str, *, manifest_digest: Digest, base_model_digest: Digest, dataset_root: Digest,
        noise_seed_commitment: Digest, manifest_cid: str, idempotent: bool = False,
    ) -> TxInfo:
        """Register a run (before its first step) under the signer's run key, returned in the TxInfo."""
        rid = parse_run_id(run_id)
        key = self.run_key(rid)
        values = {"manifest_digest": manifest_digest, "base_model_digest": base_model_digest,
                  "dataset_root": dataset_root, "noise_seed_commitment": noise_seed_commitment,
                  "manifest_cid": manifest_cid, "owner": self.signer.address}
        call = self.contract.functions.registerRun(
            rid, manifest_digest.value, base_model_digest.value, dataset_root.value, noise_seed_commitment.value,
            manifest_cid)
        try:
            info = self._send(call, f"register run {rid.hex()}")
        except RunAlreadyRegistered:
            if not idempotent:
                raise
            info = self._same_or_conflict(self.run(key).registration, values, f"run {rid.hex()}")
        return TxInfo(info.tx_hash, info.block_number, info.gas_used, info.already_committed, run_key=key)

    def authorize_writer(self, run_key: RunKey, writer: str) -> TxInfo:
        """Let `writer` commit checkpoints to (and finalize) a run the signer owns."""
        key = parse_run_id(run_key)
        return self._send(self.contract.functions.authorizeWriter(key, writer), f"authorise {writer} on {key.hex()}")

    def revoke_writer(self, run_key: RunKey, writer: str) -> TxInfo:
        key = parse_run_id(run_key)
        return self._send(self.contract.functions.revokeWriter(key, writer), f"revoke {writer} on {key.hex()}")

    def commit_checkpoint(
        self, run_key: RunKey, *, index: int, weights_digest: Digest, tensor_digest: Digest,
        checkpoint_digest: Digest, log_size: int, log_root: Digest, epsilon_micro: int, manifest_cid: str,
        idempotent: bool = False,
    ) -> TxInfo:
        """Commit checkpoint `index` (0, 1, 2, ... in order; checkpoint 0 has log size 0, each later one adds
        steps). `manifest_cid` is the checkpoint directory's dag-pb CIDv1. Gas does not depend on the steps."""
        key = parse_run_id(run_key)
        cid_digest = heads.cid_digest(manifest_cid)
        values = {"weights_digest": weights_digest, "tensor_digest": tensor_digest,
                  "checkpoint_digest": checkpoint_digest, "log_size": log_size, "log_root": log_root,
                  "epsilon_micro": epsilon_micro, "manifest_cid": heads.cid_from_digest(cid_digest)}
        what = f"checkpoint {index} of run {key.hex()}"
        if idempotent and index < self.run_state(key).checkpoint_count:
            return self._same_or_conflict(self._checkpoint(key, index), values, what)
        call = self.contract.functions.commitCheckpoint(
            key, index, weights_digest.value, tensor_digest.value, checkpoint_digest.value, log_size, log_root.value,
            epsilon_micro, cid_digest)
        try:
            return self._send(call, f"commit {what}")
        except NonSequentialIndex as exc:
            if not (idempotent and exc.already_committed):
                raise
            return self._same_or_conflict(self._checkpoint(key, index), values, what)

    def finalize_run(self, run_key: RunKey, *, merged_tensor_digest: Digest | None = None,
                     idempotent: bool = False) -> TxInfo:
        """Close a run for good (owner or authorised writer), committing the merged model's tensor digest if any."""
        key = parse_run_id(run_key)
        merged = heads.ZERO32 if merged_tensor_digest is None else merged_tensor_digest.value
        if idempotent and self.run_state(key).finalized:
            final = self.run(key).finalization
            assert final is not None  # the history's finalization agrees with storage (checked in run())
            return self._same_or_conflict(final, {"merged_tensor_digest": merged_tensor_digest},
                                          f"finalization of run {key.hex()}")
        return self._send(self.contract.functions.finalizeRun(key, merged), f"finalize run {key.hex()}")

    def _send(self, call: Any, what: str) -> TxInfo:
        return _tx_info(self.transport.transact(call, what=what))

    @wrap_rpc
    def _same_or_conflict(self, record: Any, values: dict[str, Any], what: str) -> TxInfo:
        differing = [name for name, value in values.items() if getattr(record, name) != value]
        if differing:
            detail = ", ".join(f"{n} on chain {getattr(record, n)} vs {values[n]}" for n in differing)
            raise CheckpointConflict(f"{what} is already committed with other values: {detail}")
        receipt = self.web3.eth.get_transaction_receipt(record.tx_hash)
        return TxInfo(record.tx_hash, record.block_number, int(receipt["gasUsed"]), already_committed=True)

    # --- reads ------------------------------------------------------------------------------------------------

    @wrap_rpc
    def can_write(self, run_key: RunKey, account: str) -> bool:
        return bool(self.contract.functions.canWrite(parse_run_id(run_key), account).call())

    @wrap_rpc
    def run_state(self, run_key: RunKey, *, block: int | None = None) -> RunState:
        """What storage holds about the run (cheap: one call, nothing checked against events)."""
        key = parse_run_id(run_key)
        owner, run_id, registered, count, log_size, epsilon, finalized, head = self.transport.view(
            self.contract.functions.getRun(key), block=block)
        return RunState(key, owner, bytes(run_id), int(registered), int(count), int(log_size), int(epsilon),
                        bool(finalized), bytes(head))

    @wrap_rpc
    def run(self, run_key: RunKey) -> RunHistory:
        """The run's history rebuilt from its events and checked against its stored head (InconsistentChain if a
        node hid or forged an event); UnknownRun if there is no such run."""
        return self._history(parse_run_id(run_key), int(self.web3.eth.block_number))

    @contextlib.contextmanager
    def remembering(self) -> Iterator[None]:
        """Within this block, each run's verified history at a given block is built once and reused."""
        outer = self._histories
        self._histories = {} if outer is None else outer
        try:
            yield
        finally:
            self._histories = outer

    def _history(self, key: bytes, at: int) -> RunHistory:
        cached = None if self._histories is None else self._histories.get((key, at))
        if cached is not None:
            return cached
        state = self.run_state(key, block=at)
        if self._version >= 3:
            last = int(self.transport.view(self.contract.functions.lastEventBlock(key), block=at))
            events = follow_pointers(self.event_reader, key, registered=state.registered_block, last=last, at=at)
        else:  # version 2: no pointers, scan the run's blocks (in chunks on a capped provider)
            events = self.event_reader.query([[self.event_reader.topic(n) for n in EVENTS], key],
                                             from_block=state.registered_block, to_block=at)
        builder = HistoryBuilder(state, self._timestamp)
        for event in events:
            builder.add(event)
        history = builder.finish()
        self._remember(history)
        if self._histories is not None:
            self._histories[(key, at)] = history
        return history

    def _checkpoint(self, key: bytes, index: int) -> CheckpointRecord:
        checkpoints = self.run(key).checkpoints
        if index >= len(checkpoints):
            raise UnknownCheckpoint({"runKey": key, "index": index, "count": len(checkpoints)})
        return checkpoints[index]

    @wrap_rpc
    def claims(self, *, weights: Digest | None = None, tensors: Digest | None = None) -> list[CheckpointRecord]:
        """Every checkpoint claiming these weights (file digest) and/or tensors (tensor digest), across all runs, in
        chain order; each claiming run's history is rebuilt and checked against its head."""
        if weights is None and tensors is None:
            raise UsageError("claims() needs a weights digest or a tensor digest")
        at = int(self.web3.eth.block_number)
        topic = self.event_reader.topic("CheckpointCommitted")
        found: dict[tuple[int, int], Event] = {}
        for topics in ([topic, None, weights.value] if weights else None,
                       [topic, None, None, tensors.value] if tensors else None):
            if topics is not None:
                found.update({(e.block_number, e.log_index): e
                              for e in self.event_reader.query(topics, from_block=self.deployment_block(at),
                                                               to_block=at)})
        histories: dict[bytes, RunHistory] = {}
        return [self._verified_claim(event, at, histories) for _, event in sorted(found.items())]

    def _verified_claim(self, event: Event, at: int, histories: dict[bytes, RunHistory]) -> CheckpointRecord:
        key, index = bytes(event.args["runKey"]), int(event.args["index"])
        checkpoints = self._claiming_run(key, at, histories).checkpoints
        record = checkpoints[index] if index < len(checkpoints) else None
        if record is None or (record.block_number, record.log_index) != (event.block_number, event.log_index):
            raise InconsistentChain(f"the node returned a claim (checkpoint {index} of run {key.hex()} in block "
                                    f"{event.block_number}) that is not in that run's verified history")
        return record

    def _claiming_run(self, key: bytes, at: int, histories: dict[bytes, RunHistory]) -> RunHistory:
        if key not in histories:
            try:
                histories[key] = self._history(key, at)
            except UnknownRun:
                raise InconsistentChain(f"the node returned a claim by run {key.hex()}, which the registry does not "
                                        "know (a forged log: do not trust this node's answer)") from None
        return histories[key]

    def deployment_block(self, at: int) -> int:
        """The block the registry was deployed in, where scans for claims start (found once per client; see
        provenance._chain.history.deployment_block)."""
        if self._deployed_at is None:
            self._deployed_at = deployment_block(self.web3, self.contract.address, at)
        return self._deployed_at

    @wrap_rpc
    def find_merged(self, tensor_digest: Digest) -> list[Finalization]:
        """Every finalization committing this merged-model tensor digest, in chain order, each run verified."""
        at = int(self.web3.eth.block_number)
        topics = [self.event_reader.topic("RunFinalized"), None, tensor_digest.value]
        histories: dict[bytes, RunHistory] = {}
        found = []
        for event in self.event_reader.query(topics, from_block=self.deployment_block(at), to_block=at):
            key = bytes(event.args["runKey"])
            final = self._claiming_run(key, at, histories).finalization
            if final is None or final.block_number != event.block_number:
                raise InconsistentChain(f"the node returned a finalization in block {event.block_number} that is not "
                                        f"in run {key.hex()}'s verified history")
            found.append(final)
        return found

    @wrap_rpc
    def events(self, *, from_block: int = 0, to_block: int | str = "latest") -> list[RegistryEvent]:
        """Every event the registry emitted in the block range, in chain order."""
        topics = [[self.event_reader.topic(n) for n in EVENTS]]
        return [RegistryEvent(e.name, e.args, e.block_number, e.tx_hash, e.log_index)
                for e in self.event_reader.query(topics, from_block=from_block, to_block=to_block)]


AnyRegistry = Registry | RegistryV1


def _tx_info(receipt: Any) -> TxInfo:
    return TxInfo(receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]))
