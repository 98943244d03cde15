"""Auditor attestations: BN254 BLS sign / verify / aggregate times (py-ecc) and on-chain gas (py-evm), measured
side by side in one run.

Time rows compare a BLS operation with what it replaces: verifying one aggregate of n signatures vs verifying the
n signatures one by one (ratio < 1 is the aggregation win); signing vs an ECDSA (secp256k1) signature of the same
message; aggregating n signatures vs verifying one. Gas rows compare an attestation by n co-signers with one by a
single signer (the per-co-signer increment is small and independent of what is attested), and registration (with
its proof-of-possession pairing check) with an attestation, key rotation and revocation with registration.

Run: `python bench/bench_attest.py [--quick]`.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import row
from provenance._attest import bls

SIGNERS = 4


def _time(fn: Callable[[], Any], rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _times(rounds: int) -> list[dict[str, Any]]:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    secrets_ = [bls.new_secret() for _ in range(SIGNERS)]
    pks = [bls.public_keys(s)[1] for s in secrets_]
    message = bytes(range(32))
    sigs = [bls.sign(s, message) for s in secrets_]
    agg_sig, agg_key = bls.aggregate_signatures(sigs), bls.aggregate_g2(pks)
    ecdsa = Account.create()
    t_sign = _time(lambda: bls.sign(secrets_[0], message), rounds * 4)
    t_ecdsa = _time(lambda: ecdsa.sign_message(encode_defunct(message)), rounds * 4)
    t_verify = _time(lambda: bls.verify(pks[0], message, sigs[0]), rounds)
    t_agg_verify = _time(lambda: bls.verify(agg_key, message, agg_sig), rounds)
    t_aggregate = _time(lambda: (bls.aggregate_signatures(sigs), bls.aggregate_g2(pks)), rounds * 4)
    t_h2c = _time(lambda: bls.hash_to_g1(message), rounds * 4)
    return [
        row("bls_sign_ms", t_sign * 1e3, t_ecdsa * 1e3, unit="ms", note="BLS sign (hash-to-G1 + G1 mul) vs ECDSA"),
        row("bls_hash_to_g1_ms", t_h2c * 1e3, t_sign * 1e3, unit="ms", note="try-and-increment vs whole sign"),
        row("bls_verify_ms", t_verify * 1e3, t_verify * 1e3, unit="ms", note="2 Miller loops + 1 final exp"),
        row(f"bls_verify_aggregate_{SIGNERS}_ms", t_agg_verify * 1e3, t_verify * 1e3 * SIGNERS, unit="ms",
            note=f"one aggregate of {SIGNERS} vs {SIGNERS} separate verifications"),
        row(f"bls_aggregate_{SIGNERS}_ms", t_aggregate * 1e3, t_verify * 1e3, unit="ms",
            note=f"sum {SIGNERS} G1 signatures + {SIGNERS} G2 keys vs one verification"),
    ]


def _gas() -> list[dict[str, Any]]:
    """Gas from receipts on the in-process chain (cancun, the same EVM costs as anvil): a ProvenanceRegistry v2 run
    with one checkpoint, an AttestationRegistry, SIGNERS registered auditors."""
    from provenance._attest.client import AttestationClient
    from provenance._attest.statement import Statement
    from provenance._chain.heads import cid_from_digest
    from provenance.chain import Registry, connect
    from provenance.hashing import Digest
    from provenance.keys import PublicKey, SecretKey

    reg = connect("tester", use_config=False)
    assert isinstance(reg, Registry)
    reg.deploy()
    d = Digest.of
    run_key = reg.run_key(bytes(range(1, 33)))
    reg.register_run(bytes(range(1, 33)), manifest_digest=d(b"m"), base_model_digest=d(b"b"), dataset_root=d(b"d"),
                     noise_seed_commitment=d(b"n"), manifest_cid="bafy-run")
    reg.commit_checkpoint(run_key, index=0, weights_digest=d(b"w"), tensor_digest=d(b"t"), checkpoint_digest=d(b"c"),
                          log_size=0, log_root=d(b"r"), epsilon_micro=1, manifest_cid=cid_from_digest(d(b"cid").value))
    client = AttestationClient(reg)
    client.deploy()
    dev = reg.dev_keys()

    def new_key(name: str) -> SecretKey:
        scalar = bls.new_secret()
        pk1, pk2 = bls.public_keys(scalar)
        return SecretKey(PublicKey(name, pk1, pk2), scalar)

    keys, auditors, register_gas = [], [], []
    for i in range(SIGNERS + 1):
        key = new_key(f"a{i}")
        auditor = AttestationClient(reg.with_signer(dev[i + 1]), client.address)
        register_gas.append(auditor.register_auditor(key).gas_used)
        keys.append(key)
        auditors.append(auditor)
    record = reg.run(run_key).checkpoints[0]

    def attest(chosen: list[int], report_cid: str) -> int:
        st = Statement.for_checkpoint(record, run_key=run_key, chain_id=reg.chain_id,
                                      provenance_registry=str(reg.address), attestation_registry=str(client.address),
                                      level="sampled:1/2", verification=d(b"v"), report_cid=report_cid)
        chosen = sorted(chosen, key=lambda i: int(auditors[i].sender, 16))
        message = st.message()
        return client.submit(st, signers=[auditors[i].sender for i in chosen],
                             signature=bls.aggregate_signatures([keys[i].sign(message) for i in chosen]),
                             aggregate_key=bls.aggregate_g2([keys[i].public.pk2 for i in chosen])).gas_used

    first = attest([SIGNERS], "cid-0")  # the first attestation of these weights also creates their list
    one, many = attest([0], "cid-1"), attest([*range(1, SIGNERS), 0], "cid-2")
    rotate = auditors[0].rotate_key(new_key("a0-next")).gas_used
    revoke = auditors[1].revoke_key(keys[1].public.key_id).gas_used
    register = statistics.median(register_gas[1:])  # the very first registration also starts the auditor count
    return [
        row(f"attest_gas_{SIGNERS}_signers", many, one, unit="gas",
            note=f"{(many - one) // (SIGNERS - 1)} gas per extra co-signer; same for any checkpoint"),
        row("attest_gas_first_of_checkpoint", first, one, unit="gas",
            note="the first attestation of a checkpoint also creates its list and the statement's signer word"),
        row("register_auditor_gas", register, one, unit="gas",
            note="proof-of-possession pairing check + key slots vs one attestation"),
        row("rotate_key_gas", rotate, register, unit="gas", note="a registration plus retiring the old key"),
        row("revoke_key_gas", revoke, register, unit="gas", note="one storage write and an event"),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return _times(1 if quick else 3) + _gas()


if __name__ == "__main__":
    from bench.common import show

    show(run(quick="--quick" in sys.argv))
