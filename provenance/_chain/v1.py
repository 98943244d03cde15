"""A read-only client for version 1 registries, so runs anchored before version 2 stay auditable.

Version 1 keys runs by their run id alone (the run key *is* the run id here), lets one checkpoint claim a weights
digest (`findByWeights`), has no tensor digest and no merged-model digest, and stores per checkpoint its block and a
24-byte record hash: each record is read from its event at that block and checked against the stored hash (a node
returning another event raises InconsistentChain). It satisfies `RegistryReader`; every write raises
ReadOnlyRegistry.
"""

from __future__ import annotations

from typing import Any, NoReturn

from provenance._chain import artifact
from provenance._chain.errors import (
    V1_REVERT_CLASSES,
    InconsistentChain,
    NotARegistry,
    ReadOnlyRegistry,
    RegistryNotConfigured,
    RevertDecoder,
)
from provenance._chain.reader import ClientBase, RunKey
from provenance._chain.records import (
    CheckpointRecord,
    Finalization,
    RegistryEvent,
    RunHistory,
    RunRecord,
    WriterChange,
    checkpoint_record_hash,
    parse_run_id,
    run_record_hash,
)
from provenance._chain.transport import Transport, rpc_errors, wrap_rpc
from provenance.errors import UsageError
from provenance.hashing import Digest

VERSION = 1
_EVENTS = ("RunRegistered", "WriterAuthorized", "WriterRevoked", "CheckpointCommitted", "RunFinalized")
_READ_ONLY = "this is a v1 registry, which prov only reads: deploy v2 with `prov chain deploy` to anchor new runs"


class RegistryV1(ClientBase):
    """A version 1 ProvenanceRegistry at `address`, read only."""

    def __init__(self, transport: Transport, address: str) -> None:
        super().__init__(transport)
        self._artifact = artifact.load(artifact.V1_ARTIFACT_NAME)
        self._bind(address)

    @property
    def version(self) -> int:
        return VERSION

    @wrap_rpc
    def _bind(self, address: str) -> None:
        self._contract = self.transport.contract_at(address, self._artifact, name="ProvenanceRegistry version 1")

    @property
    def contract(self) -> Any:
        if self._contract is None:
            raise RegistryNotConfigured("no registry address")
        return self._contract

    # --- writes: refused ------------------------------------------------------------------------------------

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyRegistry(f"{self.address}: {_READ_ONLY}")

    deploy = register_run = authorize_writer = revoke_writer = commit_checkpoint = finalize_run = _refuse

    # --- RegistryReader -------------------------------------------------------------------------------------

    def claims(self, *, weights: Digest | None = None, tensors: Digest | None = None) -> list[CheckpointRecord]:
        """The checkpoint claiming these weights (version 1 allows one); no tensor digests exist on version 1."""
        if weights is None and tensors is None:
            raise UsageError("claims() needs a weights digest or a tensor digest")
        found = self.find_by_weights(weights) if weights is not None else None
        return [] if found is None else [found]

    @wrap_rpc
    def run(self, run_key: RunKey) -> RunHistory:
        """The run's registration, checkpoints, writer events and finalization (from its RunFinalized event)."""
        registration = self.get_run(run_key)
        rid = registration.run_id
        writers = tuple(
            WriterChange(rid, rid, e.args["writer"], e.name == "WriterAuthorized", registration.owner, e.tx_hash,
                         e.block_number, e.log_index)
            for e in self.writer_events(rid, from_block=registration.block_number))
        return RunHistory(registration, tuple(self.checkpoints(rid)), writers, self._finalization(registration))

    def find_merged(self, tensor_digest: Digest) -> list[Finalization]:
        """Version 1 commits no merged-model digest: nothing to find."""
        return []

    def _finalization(self, run: RunRecord) -> Finalization | None:
        logs = self.contract.events.RunFinalized.get_logs(argument_filters={"runId": run.run_id},
                                                           from_block=run.block_number)
        if not run.finalized and not logs:
            return None
        if not run.finalized or len(logs) != 1:
            raise InconsistentChain(f"run {run.run_id.hex()}: the registry says finalized={run.finalized} but the "
                                    f"node returned {len(logs)} RunFinalized events (do not trust this node's answer)")
        log = logs[0]
        a, block = log["args"], int(log["blockNumber"])
        return Finalization(run_key=run.run_id, run_id=run.run_id, by=a["by"], merged_tensor_digest=None,
                            checkpoint_count=a["checkpointCount"], log_size=a["logSize"],
                            epsilon_micro=a["epsilonMicro"], tx_hash=log["transactionHash"].to_0x_hex(),
                            block_number=block, block_timestamp=self._timestamp(block))

    # --- version 1 reads ----------------------------------------------------------------------------------

    @wrap_rpc
    def can_write(self, run_id: RunKey, account: str) -> bool:
        return bool(self.contract.functions.canWrite(parse_run_id(run_id), account).call())

    @wrap_rpc
    def get_run(self, run_id: RunKey) -> RunRecord:
        """The run's commitments (from its event, checked against storage) and its current state."""
        rid = parse_run_id(run_id)
        state = self.transport.view(self.contract.functions.getRun(rid))
        _, _, registered_block, record_hash, count, log_size, epsilon, finalized = state
        event = self._event_at("RunRegistered", registered_block, {"runId": rid})
        a = event["args"]
        expected = run_record_hash(rid, owner=a["owner"], manifest_digest=a["manifestDigest"],
                                   base_model_digest=a["baseModelDigest"], dataset_root=a["datasetRoot"],
                                   noise_seed_commitment=a["noiseSeedCommitment"], manifest_cid=a["manifestCid"])
        _check_hash(bytes(record_hash), expected, f"registration of run {rid.hex()}")
        return RunRecord(
            run_id=rid, owner=a["owner"], manifest_digest=Digest(a["manifestDigest"]),
            base_model_digest=Digest(a["baseModelDigest"]), dataset_root=Digest(a["datasetRoot"]),
            noise_seed_commitment=Digest(a["noiseSeedCommitment"]), manifest_cid=a["manifestCid"],
            checkpoint_count=count, log_size=log_size, epsilon_micro=epsilon, finalized=finalized,
            tx_hash=event["transactionHash"].to_0x_hex(), block_number=registered_block,
            block_timestamp=self._timestamp(registered_block),
        )

    @wrap_rpc
    def get_checkpoint(self, run_id: RunKey, index: int) -> CheckpointRecord:
        """Checkpoint `index` of a run; raises UnknownRun / UnknownCheckpoint if there is none."""
        rid = parse_run_id(run_id)
        _, _, block, record_hash = self.transport.view(self.contract.functions.getCheckpoint(rid, index))
        return self._checkpoint_at(rid, index, block, bytes(record_hash))

    @wrap_rpc
    def find_by_weights(self, weights_digest: Digest) -> CheckpointRecord | None:
        """The checkpoint that committed these adapter weights, or None."""
        rid, index, block, record_hash = self.transport.view(
            self.contract.functions.findByWeights(weights_digest.value))
        if not any(rid):
            return None
        return self._checkpoint_at(bytes(rid), index, block, bytes(record_hash))

    @wrap_rpc
    def checkpoints(self, run_id: RunKey, *, limit: int | None = None) -> list[CheckpointRecord]:
        """The run's checkpoints 0..n-1 in index order (the first `limit` of them if given): one `eth_getLogs` for
        all, each matched to its stored block and record hash (one missing from the range answer is looked up)."""
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
            _, _, block, stored = self.transport.view(self.contract.functions.getCheckpoint(rid, index))
            event = by_index.get(index)
            if event is None or int(event["blockNumber"]) != block:
                records.append(self._checkpoint_at(rid, index, block, bytes(stored)))
            else:
                records.append(self._record_from_event(rid, index, block, bytes(stored), event))
        return records

    @wrap_rpc
    def writer_events(self, run_id: RunKey, *, from_block: int = 0) -> list[RegistryEvent]:
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
        found = [RegistryEvent(name, dict(log["args"]), log["blockNumber"], log["transactionHash"].to_0x_hex(),
                               log["logIndex"])
                 for name in _EVENTS
                 for log in getattr(self.contract.events, name).get_logs(from_block=from_block, to_block=to_block)]
        return sorted(found, key=lambda e: (e.block_number, e.log_index))


    # --- helpers ------------------------------------------------------------------------------------------

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
            log_index=int(event["logIndex"]),
        )
        expected = checkpoint_record_hash(
            rid, index, weights_digest=a["weightsDigest"], checkpoint_digest=a["checkpointDigest"],
            log_size=a["logSize"], log_root=a["logRoot"], epsilon_micro=a["epsilonMicro"],
            manifest_cid=a["manifestCid"], committer=a["committer"])
        _check_hash(stored, expected, f"checkpoint {index} of run {rid.hex()}")
        return record


def _call_version(transport: Transport, address: str) -> int | None:
    from web3 import Web3

    if not Web3.is_address(address):
        raise RegistryNotConfigured(f"{address!r} is not an address")
    selector = bytes(Web3.keccak(text="VERSION()"))[:4]
    with rpc_errors(transport.rpc_url):
        try:
            answer = bytes(transport.web3.eth.call({"to": Web3.to_checksum_address(address), "data": selector}))
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            return None  # no such function (version 1) or no code at all: told apart by the code check after
    return int.from_bytes(answer, "big") if len(answer) == 32 else None


def registry_version(transport: Transport, address: str, *, current: int = 3) -> int:
    """The registry version at `address`: `VERSION()` answers 2 or 3 on those versions; version 1 has no such
    function (and whatever answers otherwise is told apart by its code when a client binds to it)."""
    version = _call_version(transport, address)
    if version is not None and version > current:
        raise NotARegistry(f"the registry at {address} is version {version}, newer than this prov understands "
                           f"(version {current}); upgrade prov")
    return version if version is not None and 2 <= version <= current else VERSION


def connect_v1(transport: Transport, address: str) -> RegistryV1:
    """The read-only client for the version 1 registry at `address` (its code checked to be version 1's)."""
    decoder = RevertDecoder(artifact.load(artifact.V1_ARTIFACT_NAME).errors(), V1_REVERT_CLASSES)
    try:
        return RegistryV1(transport.with_decoder(decoder), address)
    except NotARegistry:
        raise NotARegistry(f"the contract at {address} on {transport.rpc_url} (chain {transport.chain_id}) is not a "
                           "ProvenanceRegistry: its code is neither version 2's nor version 1's") from None


def _check_hash(stored: bytes, computed: bytes, what: str) -> None:
    if stored != computed:
        raise InconsistentChain(f"the event for {what} hashes to 0x{computed.hex()} but the registry stores "
                                f"0x{stored.hex()} (reorg or untrustworthy node)")
