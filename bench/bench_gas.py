"""Gas of anchoring a checkpoint vs. a naive on-chain step log, measured side by side in one run on py-evm.

prov commits one checkpoint (weights, checkpoint digest, step-log size and root, ε, manifest CID) per k steps, at a
cost that does not depend on k. The naive baseline stores every batch digest on chain, one transaction per step;
its cost for a checkpoint interval is (gas per step) × k. The baseline contract is a bare 17-byte store
(`sstore(keccak256(runId, step), digest)`: no access control, no event), so the baseline is a lower bound and
the ratios are conservative.

Run: `python bench/bench_gas.py`. `run()` returns rows {"name", "value", "baseline", "ratio", "unit"} where
`ratio` = baseline / value (how many times cheaper prov is).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import row, show
from provenance import chain, merkle
from provenance.hashing import Digest

STEPS_PER_CHECKPOINT = (1, 10, 100, 1000)
NAIVE_SAMPLES = 20
GAS_TARGET = 90_000
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
# runtime: calldatacopy(0, 0, 64); sstore(keccak256(0, 64), calldataload(64)); stop
_NAIVE_RUNTIME = "6040600060003760403560406000205500"
_NAIVE_INIT = bytes.fromhex("6011600c60003960116000f3" + _NAIVE_RUNTIME)


def _send_raw(registry: chain.Registry, tx: dict[str, Any]) -> Any:
    account = registry.signer.account
    eth = registry.web3.eth
    tx = {"nonce": eth.get_transaction_count(account.address, "pending"), "chainId": registry.chain_id,
          "maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9, "value": 0, **tx}
    tx.setdefault("gas", eth.estimate_gas({"from": account.address, **{k: v for k, v in tx.items() if k in
                                                                        ("to", "data", "value")}}))
    receipt = eth.wait_for_transaction_receipt(eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    if receipt["status"] != 1:
        raise RuntimeError(f"benchmark transaction failed: {receipt['transactionHash'].hex()}")
    return receipt


def naive_gas_per_step(registry: chain.Registry, run_id: bytes) -> float:
    """Mean gas of one step-digest transaction on the naive contract (each a fresh storage slot)."""
    address = _send_raw(registry, {"data": _NAIVE_INIT, "gas": 200_000})["contractAddress"]
    used = []
    for step in range(NAIVE_SAMPLES):
        digest = Digest.of(b"batch %d" % step).value
        data = run_id + step.to_bytes(32, "big") + digest
        used.append(int(_send_raw(registry, {"to": address, "data": data})["gasUsed"]))
    return statistics.fmean(used)


def commit_gas(registry: chain.Registry, run_id: bytes, index: int, steps: int) -> int:
    """Gas of committing checkpoint `index` whose step log holds `steps` records."""
    leaves = [merkle.hash_leaf(b"step %d" % i) for i in range(min(steps, 64))]  # the root's value is immaterial
    info = registry.commit_checkpoint(
        run_id, index=index, weights_digest=Digest.of(b"weights %d" % index),
        checkpoint_digest=Digest.of(b"checkpoint %d" % index), log_size=steps * (index + 1),
        log_root=Digest(merkle.root(leaves)), epsilon_micro=chain.epsilon_to_micro(0.1 * (index + 1)),
        manifest_cid=CID)
    return info.gas_used


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure on a fresh in-process py-evm chain; one row per checkpoint interval, plus the target check.
    Gas is deterministic, so `quick` changes nothing."""
    registry = chain.connect(chain.TESTER, use_config=False)
    registry.deploy()
    run_id = os.urandom(32)
    register = registry.register_run(
        run_id, manifest_digest=Digest.of(b"manifest"), base_model_digest=Digest.of(b"base"),
        dataset_root=Digest.of(b"dataset"), noise_seed_commitment=Digest.of(b"noise"), manifest_cid=CID)
    per_step = naive_gas_per_step(registry, run_id)
    rows: list[dict[str, Any]] = []
    commits = []
    for index, steps in enumerate(STEPS_PER_CHECKPOINT):
        gas = commit_gas(registry, run_id, index, steps)
        commits.append(gas)
        rows.append(row(f"commitCheckpoint gas for {steps} steps vs naive (every batch digest on chain)", gas,
                        round(per_step * steps), unit="gas", target="report",
                        note=f"(naive: {round(per_step):,} gas per step)"))
    rows.append(row("worst commitCheckpoint gas vs the 90,000 target", max(commits), GAS_TARGET, unit="gas",
                    target="<= 1.0", note=f"(registerRun, once per run: {register.gas_used:,} gas)"))
    return rows


def main() -> int:
    show(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
