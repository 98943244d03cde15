"""The read protocol a verifier uses on any registry version (`RegistryReader`), the chain facts it reports, and the
connection plumbing both registry clients share.

Both `provenance.chain.Registry` (versions 3 and 2) and `provenance._chain.v1.RegistryV1` (read-only, version 1) satisfy
`RegistryReader`: the verifier asks for every claim of a file's weights or tensors, then for the verified history
of the run it selects, and for the chain's identity so a report can say which chain it trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from provenance._chain.keys import LOCAL_CHAIN_ID, Signer
from provenance._chain.records import CheckpointRecord, Finalization, RunHistory
from provenance._chain.transport import TESTER, Transport, wrap_rpc
from provenance.hashing import Digest

TESTER_CHAIN_ID = 131277322940537  # eth-tester's py-evm chain (web3's EthereumTesterProvider)
DEV_CHAINS = {
    LOCAL_CHAIN_ID: "anvil/Hardhat development chain",
    1337: "geth --dev/Ganache development chain",
    TESTER_CHAIN_ID: "in-process py-evm test chain",
}
"""Chain ids of known development chains: whoever runs one controls its timestamps and block hashes."""

RunKey = bytes | str


@dataclass(frozen=True)
class ChainInfo:
    """Which chain a registry lives on: its id, its genesis block hash as 0x-hex (distinguishes chains sharing an id,
    e.g. two local anvils), the latest block, and a label when the id is a known development chain or the node
    answers like one (provenance._chain.identity). All of it is as the endpoint reports it."""

    chain_id: int
    genesis_hash: str
    latest_block: int
    dev_chain: str | None
    client_version: str | None = None
    public_chain: str | None = None  # the public chain prov knows by this id (provenance._chain.identity)
    expected_genesis: str | None = None  # that chain's genesis hash: another one here means another chain

    @property
    def genesis_mismatch(self) -> bool:
        """The id is a known public chain's but the genesis block is not that chain's (e.g. `anvil --chain-id 1`)."""
        return self.expected_genesis is not None and self.genesis_hash.lower() != self.expected_genesis


@dataclass(frozen=True)
class BlockInfo:
    number: int
    hash: bytes
    timestamp: int


@runtime_checkable
class RegistryReader(Protocol):
    """What a verifier reads from a ProvenanceRegistry, whatever its version."""

    @property
    def version(self) -> int:
        """1, 2 or 3 (the registry's VERSION())."""
        ...

    @property
    def address(self) -> str | None: ...

    def chain_info(self) -> ChainInfo: ...

    def block(self, number: int) -> BlockInfo | None:
        """The block `number`, or None if it is not mined yet."""
        ...

    def claims(self, *, weights: Digest | None = None, tensors: Digest | None = None) -> list[CheckpointRecord]:
        """Every checkpoint record claiming these weights (file digest) or tensors (tensor digest), across all runs,
        in chain order, each checked against its run's stored state."""
        ...

    def run(self, run_key: RunKey) -> RunHistory:
        """The run's whole history, verified against storage (InconsistentChain when the node's events do not match
        it); UnknownRun when there is no such run."""
        ...

    def find_merged(self, tensor_digest: Digest) -> list[Finalization]:
        """Every finalization committing this merged-model tensor digest, in chain order, verified."""
        ...


def dev_chain_label(chain_id: int) -> str | None:
    return DEV_CHAINS.get(chain_id)


class ClientBase:
    """Connection, signer and block reads shared by the registry clients of every version."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._contract: Any = None
        self._timestamps: dict[int, int] = {}

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

    def dev_keys(self) -> list[bytes]:
        """Funded keys of the in-process chain (for tests and demos); empty on JSON-RPC."""
        return self.transport.dev_keys()

    @wrap_rpc
    def chain_info(self) -> ChainInfo:
        from provenance._chain.identity import identify

        genesis = self.web3.eth.get_block(0)
        latest = int(self.web3.eth.block_number)
        label = dev_chain_label(self.chain_id)
        if label is None and self.transport.rpc_url == TESTER:
            label = DEV_CHAINS[TESTER_CHAIN_ID]
        who = identify(self.web3, self.chain_id)
        if label is None:  # a node that answers like anvil/Hardhat/Ganache is one, whatever id it claims
            label = who.dev_label(self.chain_id)
        return ChainInfo(self.chain_id, "0x" + bytes(genesis["hash"]).hex(), latest, label, who.client_version,
                         who.public_name, who.expected_genesis)

    @wrap_rpc
    def block(self, number: int) -> BlockInfo | None:
        from web3.exceptions import BlockNotFound

        try:
            found = self.web3.eth.get_block(number)
        except BlockNotFound:
            return None
        self._timestamps[int(found["number"])] = int(found["timestamp"])
        return BlockInfo(int(found["number"]), bytes(found["hash"]), int(found["timestamp"]))

    @wrap_rpc
    def latest_block_hash(self) -> tuple[int, bytes]:
        """The latest block's number and hash."""
        block = self.web3.eth.get_block("latest")
        return int(block["number"]), bytes(block["hash"])

    def block_hash_after(self, block_number: int) -> tuple[int, bytes] | None:
        """The first block after `block_number` (a value nobody could predict when that block was mined), or None if
        it is not mined yet."""
        found = self.block(block_number + 1)
        return None if found is None else (found.number, found.hash)

    @property
    def contract(self) -> Any:
        raise NotImplementedError

    @wrap_rpc
    def root_from_inclusion_proof(self, *, leaf_hash: bytes, leaf_index: int, tree_size: int,
                                  proof: list[bytes]) -> bytes:
        """The RFC 6962 root the contract computes from an inclusion proof (raises InvalidProof if malformed)."""
        fn = self.contract.functions.rootFromInclusionProof(leaf_hash, leaf_index, tree_size, list(proof))
        return bytes(self.transport.view(fn))

    def verify_inclusion(self, record: CheckpointRecord, *, leaf_hash: bytes, leaf_index: int,
                         proof: list[bytes]) -> bool:
        """Whether the contract's RFC 6962 view puts `leaf_hash` at `leaf_index` of the log `record` commits."""
        root = self.root_from_inclusion_proof(leaf_hash=leaf_hash, leaf_index=leaf_index, tree_size=record.log_size,
                                              proof=proof)
        return root == record.log_root.value

    def _timestamp(self, block: int) -> int:
        if block not in self._timestamps:
            self._timestamps[block] = int(self.web3.eth.get_block(block)["timestamp"])
        return self._timestamps[block]
