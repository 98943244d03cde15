"""Auditor attestations: BN254 BLS sign / verify / aggregate times (py-ecc) and on-chain gas (py-evm), measured
side by side in one run.

Time rows compare a BLS operation with what it replaces: verifying one aggregate of n signatures vs verifying the
n signatures one by one (ratio < 1 is the aggregation win); signing vs an ECDSA (secp256k1) signature of the same
message; aggregating n signatures vs verifying one. Gas rows compare an attestation by n co-signers with one by a
single signer (the per-co-signer increment is small and independent of what is attested), and registration (with
its proof-of-possession pairing check) with an attestation.

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
    from provenance._attest.client import AttestationClient
    from provenance._attest.keys import PublicKey, SecretKey
    from provenance._attest.statement import Statement
    from provenance.chain import connect
    from provenance.hashing import Digest

    reg = connect("tester", use_config=False)
    reg.deploy()
    run = bytes(range(1, 33))
    d = Digest.of
    reg.register_run(run, manifest_digest=d(b"m"), base_model_digest=d(b"b"), dataset_root=d(b"d"),
                     noise_seed_commitment=d(b"n"), manifest_cid="bafy-run")
    reg.commit_checkpoint(run, index=0, weights_digest=d(b"w"), checkpoint_digest=d(b"c"), log_size=8,
                          log_root=d(b"r"), epsilon_micro=1, manifest_cid="bafy-ck")
    client = AttestationClient(reg)
    client.deploy()
    dev = reg.dev_keys()
    keys, addrs, register_gas = [], [], []
    for i in range(SIGNERS):
        scalar = bls.new_secret()
        pk1, pk2 = bls.public_keys(scalar)
        key = SecretKey(PublicKey(f"a{i}", pk1, pk2), scalar)
        auditor = AttestationClient(reg.with_signer(dev[i + 1]), client.address)
        register_gas.append(auditor.register_auditor(key).gas_used)
        keys.append(key)
        addrs.append(auditor.transport.signer.address)
    order = sorted(range(SIGNERS), key=lambda i: int(addrs[i], 16))
    st = Statement.for_checkpoint(reg.find_by_weights(d(b"w")), chain_id=reg.chain_id, registry=str(reg.address),
                                  verification=d(b"v"), report_cid="bafy-report")
    message = st.message()

    def attest(n: int) -> int:
        chosen = order[:n]
        return client.submit(weights_digest=st.weights_digest, verification_digest=st.verification_digest,
                             report_cid=st.report_cid, signers=[addrs[i] for i in chosen],
                             signature=bls.aggregate_signatures([keys[i].sign(message) for i in chosen]),
                             aggregate_key=bls.aggregate_g2([keys[i].public.pk2 for i in chosen])).gas_used

    attest(1)  # the first attestation of these weights also creates their list
    one, many = attest(1), attest(SIGNERS)
    return [
        row(f"attest_gas_{SIGNERS}_signers", many, one, unit="gas",
            note=f"{(many - one) // (SIGNERS - 1)} gas per extra co-signer; same for any checkpoint"),
        row("register_auditor_gas", statistics.median(register_gas), one, unit="gas",
            note="proof-of-possession pairing check + 4 storage slots vs one attestation"),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return _times(1 if quick else 3) + _gas()


if __name__ == "__main__":
    from bench.common import show

    show(run(quick="--quick" in sys.argv))
