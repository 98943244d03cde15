"""Which chain a node serves, as far as the node's own answers can tell: the public chains prov knows by chain id and
genesis block hash, and nodes that answer like a development chain (anvil, Hardhat, Ganache) whatever id they claim.

A chain id alone proves nothing: `anvil --chain-id 1` answers 1. The genesis hash tells a known public chain from a
local one that borrowed its id (a mismatch fails the verifier's `chain` check), and a development node gives itself
away by its client version and its dev-only RPC methods. Everything here is still *as reported by the endpoint*: a
proxy can answer mainnet's id and genesis hash. Only the auditor's own node (or several independent providers that
agree) makes the chain's identity a fact; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Genesis block hashes (block 0 as `eth_getBlockByNumber(0)` returns it), each confirmed in at least two independent
# public sources (client chain specs: geth/reth/erigon/op-geth/silkworm/bor, and explorers' test fixtures).
# OP Mainnet's block 0 is its Bedrock-era genesis as op-geth serves it.
PUBLIC_CHAINS: dict[int, tuple[str, str]] = {
    1: ("Ethereum mainnet", "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"),
    11155111: ("Ethereum Sepolia", "0x25a5cc106eea7138acab33231d7160d69cb777ee0c2c553fcddf5138993e6dd9"),
    17000: ("Ethereum Holesky", "0xb5f7f912443c940f21fd611f12828d75b534364ed9e95ca4e307729a4661bde4"),
    10: ("OP Mainnet", "0x7ca38a1916c42007829c55e69d3e9a73265554b586a499015373241b8a3fa48b"),
    11155420: ("OP Sepolia", "0x102de6ffb001480cc9b8b548fd05c34cd4f46ae4aa91759393db90ea0409887d"),
    8453: ("Base", "0xf712aa9241cc24369b143cf6dce85f0902a9731e70d66818a3a5845b296c73dd"),
    84532: ("Base Sepolia", "0x0dcc9e089e30b90ddfc55be9a37dd15bc551aeee999d2e2b51414c54eaf934e4"),
    42161: ("Arbitrum One", "0x7ee576b35482195fc49205cec9af72ce14f003b9ae69f6ba0faef4514be8b442"),
    421614: ("Arbitrum Sepolia", "0x77194da4010e549a7028a9c3c51c3e277823be6ac7d138d0bb8a70197b5c004c"),
    137: ("Polygon PoS", "0xa9c28ce2141b56c474f1dc504bee9b01eb1bd7d1a507580d5519d4437a97de1b"),
    80002: ("Polygon Amoy", "0x7202b2b53c5a0836e773e319d18922cc756dd67432f9a1f65352b61f4406c697"),
}
"""Public chains prov names: chain id -> (name, genesis hash)."""

_DEV_CLIENTS = (("anvil", "anvil"), ("hardhat", "Hardhat"), ("ganache", "Ganache"), ("testrpc", "Ganache"))
# Methods only development nodes answer (read-only: none changes the chain).
_DEV_METHODS = (("anvil_nodeInfo", "anvil"), ("hardhat_metadata", "Hardhat"))


@dataclass(frozen=True)
class Identity:
    """What the node says about itself: `public_name` when its chain id is a public chain prov knows (then
    `expected_genesis` is that chain's genesis hash), and `dev_node` ("anvil", "Hardhat", "Ganache") with the
    evidence when it answers like a development node."""

    client_version: str | None
    public_name: str | None
    expected_genesis: str | None
    dev_node: str | None
    dev_evidence: str | None

    def dev_label(self, chain_id: int) -> str | None:
        """The development-chain label for a node that answers like one, naming the id it claims."""
        if self.dev_node is None:
            return None
        return f"{self.dev_node} development chain claiming chain id {chain_id} ({self.dev_evidence})"


def identify(web3: Any, chain_id: int) -> Identity:
    """Ask the node who it is (client version, dev-only methods) and look its chain id up in `PUBLIC_CHAINS`."""
    client = _ask(web3, "web3_clientVersion")
    client_version = client if isinstance(client, str) else None
    dev_node = dev_evidence = None
    lowered = (client_version or "").lower()
    for needle, name in _DEV_CLIENTS:
        if needle in lowered:
            dev_node, dev_evidence = name, f"web3_clientVersion {client_version[:60]!r}"  # type: ignore[index]
            break
    if dev_node is None:
        for method, name in _DEV_METHODS:
            if _ask(web3, method) is not None:
                dev_node, dev_evidence = name, f"it answers {method}"
                break
    public = PUBLIC_CHAINS.get(chain_id)
    return Identity(client_version, public[0] if public else None, public[1] if public else None, dev_node,
                    dev_evidence)


def _ask(web3: Any, method: str) -> Any:
    """The node's result for a parameterless method, or None when it refuses or lacks it (never raises for that)."""
    try:
        answer = web3.provider.make_request(method, [])
    except Exception:  # a node without the method may answer an HTTP error or close the connection
        return None
    if not isinstance(answer, dict) or "error" in answer:
        return None
    return answer.get("result")
