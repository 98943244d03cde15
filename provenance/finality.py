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

import time
from dataclasses import dataclass
from typing import Any

from provenance._chain.keys import DEV_CHAIN_IDS, answers_as_dev_node
from provenance.errors import one_line

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


class Rechecking:
    """The outbox's finality side (mixed into `provenance.anchor.Outbox`, which provides the attributes below):
    waiting for finality, re-checking sent jobs against what the registry stores, and the chain's rule."""

    target: Any
    last_error: str
    _cond: Any
    _confirmations: int | None
    _finality: Finality | None
    _registry: Any
    _client_lock: Any

    def jobs(self) -> list[Any]:
        raise NotImplementedError

    def flush(self, timeout: float) -> bool:
        raise NotImplementedError

    def _save(self, job: Any) -> None:
        raise NotImplementedError

    def _clients(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _await_first_recheck(self, deadline: float) -> None:
        raise NotImplementedError

    def wait_final(self, timeout: float, *, poll: float = 5.0) -> bool:
        """Send what is pending and re-check until every job is final, re-sending whatever a reorganisation drops
        meanwhile. True when all are final before `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.flush(max(0.0, deadline - time.monotonic())):
                return False
            self.recheck()
            if all(j.state == "done" and j.final for j in self.jobs()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def registration_block(self, timeout: float, *, poll: float = 2.0) -> tuple[bytes, int] | None:
        """(hash, number) of the block holding the run's registration once it is final under the chain's rule
        (at once on a development chain), re-checked so a reorganisation that dropped it is waited out; None when
        not final before `timeout`. The keys of a `prov.keys.v1` run derive from this hash (provenance.secrets)."""
        deadline = time.monotonic() + timeout
        self._await_first_recheck(deadline)  # a registration a reorganisation dropped is not taken for final
        while True:
            job = next((j for j in self.jobs() if j.kind == "register"), None)
            if job is not None and job.state == "done" and not job.final and self.target.chain is not None:
                self._recheck_quietly()
                job = next((j for j in self.jobs() if j.kind == "register"), None)
            if job is not None and job.state == "done" and job.final and job.block > 0:
                try:
                    with self._client_lock:
                        _, registry = self._clients()
                        info = registry.block(int(job.block))
                except Exception as exc:  # a node that cannot answer now: asked again until the deadline
                    self.last_error, info = one_line(exc), None
                if info is not None:
                    return bytes(info.hash), int(info.number)
            if time.monotonic() >= deadline or (job is not None and job.state == "failed"):
                return None
            time.sleep(min(poll, max(0.01, deadline - time.monotonic())))

    def recheck(self) -> list[Any]:
        """Ask the registry what it stores of this run (its history, checked against the stored head; never the
        remembered transaction hashes) and mark each sent job whose record is gone `dropped` (re-sent in order by
        the worker or `flush`) and each whose block is settled `final`. Returns the jobs found dropped. Chain errors
        propagate: a node that cannot answer decides nothing."""
        if self.target.chain is None:
            return []
        if self.target.chain == "tester" and self._registry is None:
            from provenance.errors import ChainError

            # a new process would get a new, empty in-process chain: everything would look dropped
            raise ChainError("this run anchored to the in-process test chain (--chain tester), which existed only "
                             "inside the process that trained it: nothing can be re-checked or verified against it; "
                             "train again on a chain that persists (`prov chain up`)")
        with self._client_lock:  # never beside the worker's send (provenance.anchor.Outbox)
            return self._recheck()

    def _recheck(self) -> list[Any]:
        _, registry = self._clients()
        keys = [j.run_key for j in self.jobs() if j.kind == "register" and j.run_key]
        if not keys:
            return []  # never registered: nothing was sent to the chain
        seen = presence(registry, bytes.fromhex(keys[0]))
        rule = self._rule(registry)
        latest = int(registry.web3.eth.block_number)
        settled = finalized_block(registry.web3) if rule.tag else None
        dropped = []
        with self._cond:
            for job in self.jobs():
                if job.state != "done":
                    continue
                block = seen.block_of(job.kind, job.index)
                if block is None:
                    job.state, job.final, job.drops = "dropped", False, job.drops + 1
                    job.error = (f"dropped by a chain reorganisation (was in block {job.block}); `prov anchor flush` "
                                 "or a resumed run re-sends it")
                    dropped.append(job)
                else:
                    job.block, job.final = block, rule.is_final(block, latest=latest, finalized=settled)
                self._save(job)
            self._cond.notify_all()
        return dropped

    def _recheck_quietly(self) -> None:
        if self.target.chain == "tester" and self._registry is None:
            return  # a resumed run on the in-process chain: a new chain, nothing of the old one to re-check
        try:
            self.recheck()
        except Exception as exc:  # recorded, never raised into training: the jobs keep their remembered state
            self.last_error = one_line(exc)

    def _rule(self, registry: Any) -> Any:
        """The chain's finality rule (provenance.finality.policy), decided once: `confirmations` given to `open`,
        else the project config's `chain.confirmations` for this chain, else the chain's own."""
        if self._finality is None:
            from provenance.config import get_section

            confirmations = self._confirmations
            section = get_section("chain")
            if confirmations is None and section.get("confirmations") is not None \
                    and self.target.chain == section.get("rpc_url"):
                confirmations = int(section["confirmations"])
            self._finality = policy(registry.web3, chain_id=int(registry.chain_id), confirmations=confirmations,
                                    in_process=self.target.chain == "tester")
        return self._finality

    def _final_at_receipt(self) -> bool:
        """Whether a job just sent is final already: store-only outboxes, and chains whose rule needs no block on
        top (development chains, `confirmations=0`)."""
        if self._registry is None:
            return True
        rule = self._rule(self._registry)
        return not rule.tag and rule.confirmations == 0
