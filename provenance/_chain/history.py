"""Version 2 reads: a run's history rebuilt from its events and checked against the head the registry stores, and
the claims of a weights, tensor or merged-model digest found through the events' indexed topics.

One snapshot per read: the latest block number is fixed first, then the run's stored state is read *at that block*
and its events fetched up to it, so a write landing meanwhile cannot make a correct history look inconsistent.
Every event carries the head after its write; the fold is compared with each, so a hidden, forged or reordered
event is named where the chain breaks, and the final fold must equal the stored head.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provenance._chain import heads
from provenance._chain.errors import InconsistentChain
from provenance._chain.records import CheckpointRecord, Finalization, RunHistory, RunRecord, RunState, WriterChange
from provenance.errors import ChainError, one_line
from provenance.hashing import Digest

EVENTS = ("RunRegistered", "WriterAuthorized", "WriterRevoked", "CheckpointCommitted", "RunFinalized")


@dataclass(frozen=True)
class Event:
    """One decoded registry log."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str
    block_hash: bytes | None = None  # the block the node says the log is in (kept to cross-check that block)


class EventReader:
    """Fetches and decodes the registry's logs, topics matched by the node.

    A query asks for its block range in chunks of at most `max_span` blocks (one `eth_getLogs` for any range an
    honest run spans; bounded so a long chain's scan never asks one answer for all of its history). Providers cap
    the range (e.g. 1,000 blocks) or the result count and refuse wider queries; then the range is split further:
    to the cap the refusal names when it names one, otherwise to half the refused width, halved again at each
    refusal down to single blocks. The width that worked is remembered for the reader's later queries, so a capped
    provider costs one refusal per reader, then `range / cap` queries per scan.
    """

    max_span = 50_000

    def __init__(self, contract: Any, web3: Any) -> None:
        self.contract = contract
        self.web3 = web3
        self._by_topic = {bytes.fromhex(getattr(contract.events, n).topic.removeprefix("0x")): n for n in EVENTS}
        self.span: int | None = None  # widest block range the node accepted after refusing one; None: no cap seen
        self.queries = 0  # eth_getLogs requests sent (for tests and benchmarks)

    def topic(self, name: str) -> bytes:
        return next(t for t, n in self._by_topic.items() if n == name)

    def query(self, topics: list[Any], *, from_block: int, to_block: int | str) -> list[Event]:
        """The registry's logs matching `topics` (position 0: event signatures), decoded, in chain order. Logs of
        other addresses or unknown signatures (a node answering more than asked) are refused."""
        end = int(self.web3.eth.block_number) if isinstance(to_block, str) else int(to_block)
        logs: list[Any] = []
        start = from_block
        while start <= end:
            stop = min(end, start + (self.max_span if self.span is None else self.span) - 1)
            try:
                logs.extend(self._get_logs(topics, start, stop))
            except _Refused as refused:
                width = stop - start + 1
                if width <= 1:
                    raise ChainError(f"the node refused the registry's log query for block {start} alone "
                                     f"({refused.reason}): use another node or provider for registry reads (your own "
                                     "or an archive node; see docs/registry.md)") from None
                self.span = refused.cap if refused.cap is not None and refused.cap < width else max(1, width // 2)
                continue
            start = stop + 1
        events = [self._decode(log) for log in logs]
        return sorted(events, key=lambda e: (e.block_number, e.log_index))

    def _get_logs(self, topics: list[Any], start: int, stop: int) -> list[Any]:
        from web3.exceptions import Web3RPCError

        self.queries += 1
        try:
            return list(self.web3.eth.get_logs({
                "address": self.contract.address, "fromBlock": start, "toBlock": stop,
                "topics": [_hex(t) for t in topics],
            }))
        except Web3RPCError as exc:  # typically a provider capping the block range or the number of results
            error = (getattr(exc, "rpc_response", None) or {}).get("error")
            text = error.get("message") if isinstance(error, dict) and isinstance(error.get("message"), str) else exc
            reason = one_line(text, 160)
            raise _Refused(reason, _named_cap(reason)) from None

    def _decode(self, log: Any) -> Event:
        address = str(log["address"])
        if address.lower() != str(self.contract.address).lower() or not log["topics"]:
            raise InconsistentChain(f"the node returned a log of {address}, not of the registry, for a registry query")
        name = self._by_topic.get(bytes(log["topics"][0]))
        if name is None:
            raise InconsistentChain(f"the node returned a log with an unknown signature in block {log['blockNumber']}")
        try:
            decoded = getattr(self.contract.events, name)().process_log(log)
        except Exception as exc:  # malformed data from the node: never a traceback
            raise InconsistentChain(f"the node returned a malformed {name} log in block {log['blockNumber']}: "
                                    f"{one_line(exc, 120)}") from None
        block_hash = log.get("blockHash") if hasattr(log, "get") else None
        return Event(name, dict(decoded["args"]), int(log["blockNumber"]), int(log["logIndex"]),
                     "0x" + bytes(log["transactionHash"]).hex(), bytes(block_hash) if block_hash else None)


class _Refused(Exception):
    def __init__(self, reason: str, cap: int | None) -> None:
        super().__init__(reason)
        self.reason, self.cap = reason, cap


_CAP = re.compile(r"range\D{0,24}?(\d[\d,]*)\s*(k?)\b", re.IGNORECASE)


def _named_cap(reason: str) -> int | None:
    """The block-range cap a provider's refusal names ("query exceeds max block range 1000", "up to a 2K block
    range", "maximum block range: 5000"), if it names one."""
    match = _CAP.search(reason) or re.search(r"(\d[\d,]*)\s*(k?)\s*block range", reason, re.IGNORECASE)
    if match is None:
        return None
    value = int(match.group(1).replace(",", "")) * (1000 if match.group(2).lower() == "k" else 1)
    return value if value >= 1 else None


def follow_pointers(reader: EventReader, key: bytes, *, registered: int, last: int, at: int) -> list[Event]:
    """A version 3 run's events in chain order, read from the block of its latest event back to its registration
    along the events' `previousBlock` pointers: one single-block query per block holding the run's events, so a
    provider capping log ranges suffices. A pointer that leads nowhere (a node that hid an event, or lies) raises
    InconsistentChain; so does any event missing on the way, through the fold against the stored head."""
    def broken(what: str) -> InconsistentChain:
        return InconsistentChain(f"run {key.hex()}: {what} (a node that lost, hid or forged an event, or a reorg: do "
                                 "not trust this node's answer)")

    if not registered <= last <= at:
        raise broken(f"the registry names block {last} as its latest event's, outside {registered}..{at}")
    topics = [[reader.topic(n) for n in EVENTS], key]
    blocks: list[list[Event]] = []
    block = last
    while True:
        found = reader.query(topics, from_block=block, to_block=block)
        if not found:
            raise broken(f"no event of the run in block {block}, where the registry's pointers lead")
        blocks.append(found)
        if block == registered:
            break
        pointer = found[0].args.get("previousBlock")
        if pointer is None or not registered <= int(pointer) < block:
            raise broken(f"its {found[0].name} event in block {block} points to block {pointer}, not to an earlier "
                         f"block since its registration in block {registered}")
        block = int(pointer)
    return [event for found in reversed(blocks) for event in found]


def deployment_block(web3: Any, address: str, at: int) -> int:
    """The block the contract at `address` was deployed in, found by bisecting `eth_getCode` over history (about
    log2(at) calls) and confirmed by the creating transaction; 0 when the node cannot tell (a pruned node without old
    state, or a contract created by another contract), which only makes scans longer, never shorter. The registry's
    code is checked whole when a client binds, so a node lying here can only hide claims, as it could by omitting
    logs."""
    low, high = 0, at
    try:
        if not bytes(web3.eth.get_code(address, block_identifier=at)):
            return 0
        while low < high:
            middle = (low + high) // 2
            if bytes(web3.eth.get_code(address, block_identifier=middle)):
                high = middle
            else:
                low = middle + 1
        return low if _created_in(web3, low, address) else 0
    except Exception as exc:  # a pruned node has no state for old blocks: scan from genesis instead
        if isinstance(exc, OSError):
            raise
        return 0


def _created_in(web3: Any, block: int, address: str) -> bool:
    """Whether a contract-creating transaction of `block` created `address`."""
    for tx in web3.eth.get_block(block, full_transactions=True)["transactions"]:
        if tx.get("to") is None:
            created = web3.eth.get_transaction_receipt(tx["hash"]).get("contractAddress")
            if created is not None and str(created).lower() == str(address).lower():
                return True
    return False


def _hex(topic: Any) -> Any:
    if isinstance(topic, bytes):
        return "0x" + topic.hex()
    if isinstance(topic, list):
        return [_hex(t) for t in topic]
    return topic


def _digest_or_none(value: bytes) -> Digest | None:
    return None if bytes(value) == heads.ZERO32 else Digest(bytes(value))


class HistoryBuilder:
    """Folds one run's events (in chain order) into records, checking every step against the heads they carry."""

    def __init__(self, state: RunState, timestamp: Callable[[int], int]) -> None:
        self.state = state
        self.run_key, self.run_id, self.owner = state.run_key, state.run_id, state.owner
        self.timestamp = timestamp
        self.head: bytes | None = None
        self.registration: Event | None = None
        self.checkpoints: list[CheckpointRecord] = []
        self.writers: list[WriterChange] = []
        self.finalization: Finalization | None = None

    def fail(self, what: str) -> InconsistentChain:
        return InconsistentChain(f"run {self.run_key.hex()}: {what} (a node that lost, hid or forged an event, or a "
                                 "reorg: do not trust this node's answer)")

    def add(self, event: Event) -> None:
        if self.head is None and event.name != "RunRegistered":
            raise self.fail(f"its first event is {event.name} in block {event.block_number}, not its registration")
        if self.finalization is not None:
            raise self.fail(f"an event ({event.name}) follows its finalization")
        a, block = event.args, event.block_number
        if event.name == "RunRegistered":
            self._register(event)
        elif event.name == "CheckpointCommitted":
            self._checkpoint(event)
        elif event.name == "RunFinalized":
            self.head = heads.finalized_head(self._head(), merged_tensor_digest=bytes(a["mergedTensorDigest"]),
                                             by=a["by"], block_number=block)
            self._check_carried(event)
            self.finalization = Finalization(
                run_key=self.run_key, run_id=self.run_id, by=a["by"],
                merged_tensor_digest=_digest_or_none(a["mergedTensorDigest"]),
                checkpoint_count=len(self.checkpoints), log_size=self.checkpoints[-1].log_size if self.checkpoints
                else 0, epsilon_micro=self.checkpoints[-1].epsilon_micro if self.checkpoints else 0,
                tx_hash=event.tx_hash, block_number=block, block_timestamp=self.timestamp(block), head=self.head)
            if (a["checkpointCount"], a["logSize"], a["epsilonMicro"]) != (
                    self.finalization.checkpoint_count, self.finalization.log_size, self.finalization.epsilon_micro):
                raise self.fail(f"its RunFinalized event in block {block} reports other totals than its checkpoints")
        else:
            authorized = event.name == "WriterAuthorized"
            self.head = heads.writer_head(self._head(), writer=a["writer"], authorized=authorized, by=self.owner,
                                          block_number=block)
            self._check_carried(event)
            self.writers.append(WriterChange(self.run_key, self.run_id, a["writer"], authorized, self.owner,
                                             event.tx_hash, block, event.log_index, self.head))

    def _head(self) -> bytes:
        assert self.head is not None
        return self.head

    def _register(self, event: Event) -> None:
        a = event.args
        if self.head is not None:
            raise self.fail(f"a second RunRegistered event in block {event.block_number}")
        stored = (self.owner, self.run_id, self.state.registered_block)
        if (a["owner"], bytes(a["runId"]), event.block_number) != stored:
            raise self.fail("its RunRegistered event names another owner, run id or block than the registry stores")
        if heads.run_key_of(a["owner"], bytes(a["runId"])) != self.run_key:
            raise self.fail("its RunRegistered event's owner and run id do not give its run key")
        self.head = heads.registration_head(
            run_key=self.run_key, owner=a["owner"], run_id=self.run_id, manifest_digest=bytes(a["manifestDigest"]),
            base_model_digest=bytes(a["baseModelDigest"]), dataset_root=bytes(a["datasetRoot"]),
            noise_seed_commitment=bytes(a["noiseSeedCommitment"]), manifest_cid=a["manifestCid"],
            block_number=event.block_number)
        self._check_carried(event)
        self.registration = event

    def _checkpoint(self, event: Event) -> None:
        a, block = event.args, event.block_number
        index = int(a["index"])
        if index > len(self.checkpoints):
            raise self.fail(f"checkpoint {len(self.checkpoints)} is missing (the node's next one is checkpoint {index} "
                            f"in block {block})")
        if index < len(self.checkpoints):
            raise self.fail(f"checkpoint {index} appears twice (again in block {block})")
        self.head = heads.checkpoint_head(
            self._head(), index=index, weights_digest=bytes(a["weightsDigest"]), tensor_digest=bytes(a["tensorDigest"]),
            checkpoint_digest=bytes(a["checkpointDigest"]), log_size=a["logSize"], log_root=bytes(a["logRoot"]),
            epsilon_micro=a["epsilonMicro"], manifest_cid_digest=bytes(a["manifestCidDigest"]),
            committer=a["committer"], block_number=block)
        self._check_carried(event)
        self.checkpoints.append(CheckpointRecord(
            run_id=self.run_id, index=index, weights_digest=Digest(bytes(a["weightsDigest"])),
            checkpoint_digest=Digest(bytes(a["checkpointDigest"])), log_size=int(a["logSize"]),
            log_root=Digest(bytes(a["logRoot"])), epsilon_micro=int(a["epsilonMicro"]),
            manifest_cid=heads.cid_from_digest(bytes(a["manifestCidDigest"])), committer=a["committer"],
            tx_hash=event.tx_hash, block_number=block, block_timestamp=self.timestamp(block), run_key=self.run_key,
            tensor_digest=Digest(bytes(a["tensorDigest"])), head=self.head, log_index=event.log_index))

    def _check_carried(self, event: Event) -> None:
        carried = bytes(event.args["head"])
        if carried != self.head:
            raise self.fail(f"its {event.name} event in block {event.block_number} carries head 0x{carried.hex()}, "
                            f"but its history up to there folds to 0x{self._head().hex()}")

    def finish(self) -> RunHistory:
        """The verified history, once every event is in: the fold must reach the stored head and state."""
        if self.registration is None:
            raise self.fail(f"no RunRegistered event in block {self.state.registered_block}")
        if self.head != self.state.head:
            raise self.fail(f"its {len(self.checkpoints)} checkpoints and other events fold to head "
                            f"0x{self._head().hex()}, but the registry stores 0x{self.state.head.hex()}")
        last = self.checkpoints[-1] if self.checkpoints else None
        summary = (len(self.checkpoints), last.log_size if last else 0, last.epsilon_micro if last else 0,
                   self.finalization is not None)
        st = self.state
        stored = (st.checkpoint_count, st.log_size, st.epsilon_micro, st.finalized)
        if summary != stored:
            raise self.fail(f"its events give (checkpoints, log size, ε, finalized) = {summary}, the registry stores "
                            f"{stored}")
        a, event = self.registration.args, self.registration
        record = RunRecord(
            run_id=self.run_id, owner=self.owner, manifest_digest=Digest(bytes(a["manifestDigest"])),
            base_model_digest=Digest(bytes(a["baseModelDigest"])), dataset_root=Digest(bytes(a["datasetRoot"])),
            noise_seed_commitment=Digest(bytes(a["noiseSeedCommitment"])), manifest_cid=a["manifestCid"],
            checkpoint_count=st.checkpoint_count, log_size=st.log_size, epsilon_micro=st.epsilon_micro,
            finalized=st.finalized, tx_hash=event.tx_hash, block_number=event.block_number,
            block_timestamp=self.timestamp(event.block_number), run_key=self.run_key, head=self.state.head,
            block_hash=event.block_hash)
        return RunHistory(record, tuple(self.checkpoints), tuple(self.writers), self.finalization)
