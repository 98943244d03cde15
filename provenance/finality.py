"""When an anchored commitment counts, and what the chain still holds of a run the outbox sent.

A transaction's receipt says it was included in a block, not that the block will stay: public chains reorganise
their last few blocks routinely (1–3 blocks on L1 and L2s), dropping whatever those blocks held. So the outbox
calls a job "sent" (`done`) at its receipt and "final" only once its block is settled:

- on a development chain (anvil/Hardhat/Ganache on their own chain ids, the in-process py-evm chain): at once
  (0 confirmations: whoever runs it decides what stays anyway);
- with `confirmations` configured (`Outbox.open(confirmations=N)`, `prov anchor ... --confirmations N`, or the
  project config's `chain.confirmations`): N blocks on top of the job's block;
- else, where the node answers the `finalized` block tag (post-merge Ethereum and the rollups that follow it):
  once the finalized block reaches the job's block;
- else the chain's default number of confirmations (`CHAIN_CONFIRMATIONS`, `DEFAULT_CONFIRMATIONS`).

Finality is re-checked against what the registry *stores* (the run's history folded to its stored head), never
against remembered transaction hashes: a job whose record is gone was dropped and is sent again, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provenance._chain.keys import DEV_CHAIN_IDS, answers_as_dev_node

DEFAULT_CONFIRMATIONS = 12
# Chains whose blocks are not settled by a `finalized` tag a provider answers, and that reorganise deeper than the
# default: Polygon PoS and its testnet have had reorganisations of over a hundred blocks.
CHAIN_CONFIRMATIONS = {137: 128, 80002: 128}


@dataclass(frozen=True)
class Finality:
    """The rule a job's block must meet to be final."""

    confirmations: int  # blocks on top of the job's block (used unless `tag` and the node answers the tag)
    tag: bool  # follow the node's `finalized` block
    reason: str  # why this rule: "development chain", "configured", ...

    def describe(self) -> str:
        if self.tag:
            return f"the node's finalized block ({self.reason})"
        if self.confirmations == 0:
            return f"final at its receipt ({self.reason})"
        return f"{self.confirmations} confirmations ({self.reason})"

    def is_final(self, block: int, *, latest: int, finalized: int | None) -> bool:
        if self.tag and finalized is not None:
            return finalized >= block
        return latest - block >= self.confirmations


def finalized_block(web3: Any) -> int | None:
    """The node's `finalized` block number, or None where it has no such tag (or does not answer)."""
    try:
        return int(web3.eth.get_block("finalized")["number"])
    except Exception:  # no tag on this node (an error, a null block): fall back to confirmations
        return None


def policy(web3: Any, *, chain_id: int, confirmations: int | None = None, in_process: bool = False) -> Finality:
    """The finality rule for this chain (see the module docstring for the order)."""
    if confirmations is not None:
        if confirmations < 0:
            raise ValueError("confirmations must be 0 or more")
        return Finality(int(confirmations), False, "configured")
    if in_process or (chain_id in DEV_CHAIN_IDS and answers_as_dev_node(web3)):
        return Finality(0, False, "development chain")
    default = CHAIN_CONFIRMATIONS.get(chain_id, DEFAULT_CONFIRMATIONS)
    if chain_id not in CHAIN_CONFIRMATIONS and finalized_block(web3) is not None:
        return Finality(default, True, f"chain {chain_id}")
    return Finality(default, False, f"default for chain {chain_id}")


@dataclass(frozen=True)
class Presence:
    """Which of a run's writes the registry holds now, by the block each is in (None: not there)."""

    registration: int | None
    checkpoints: tuple[int, ...]  # block of checkpoint i, for i < the stored count
    finalization: int | None

    def block_of(self, kind: str, index: int) -> int | None:
        if kind == "register":
            return self.registration
        if kind == "finalize":
            return self.finalization
        return self.checkpoints[index] if 0 <= index < len(self.checkpoints) else None


def presence(registry: Any, run_key: bytes) -> Presence:
    """What the registry holds of run `run_key`, from its history checked against the stored head (a node that
    hides an event raises InconsistentChain, a chain error the outbox retries)."""
    from provenance._chain.errors import UnknownRun

    try:
        history = registry.run(run_key)
    except UnknownRun:
        return Presence(None, (), None)
    final = history.finalization
    return Presence(history.registration.block_number, tuple(c.block_number for c in history.checkpoints),
                    None if final is None else final.block_number)
