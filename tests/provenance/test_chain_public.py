"""An honest run on a chain that behaves like a public one (#21), end to end: the project's trainer anchors on a real
anvil, and `prov verify` reads it in a fresh process through the fault-injecting proxy (tests/fixtures/rpcproxy.py)
standing in for a public provider. The honest run stays VERIFIED where the provider is merely inconvenient (capped
log ranges, rate limits), is COULD NOT VERIFY (exit 2, never FAILED) where the provider loses data, and a local
chain borrowing mainnet's id FAILS the `chain` check."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provenance._chain import anvil
from tests.fixtures.adversary import Lab, check_of, failed_checks, last_adapter
from tests.fixtures.rpcproxy import RpcProxy

pytestmark = [pytest.mark.chain, pytest.mark.slow]

CAP = 1000


def through(lab: Lab, proxy: RpcProxy) -> Lab:
    """The same lab, with the auditor's `prov verify` talking to the proxy instead of anvil."""
    return dataclasses.replace(lab, rpc_url=proxy.url)


def checkpoint_topic(lab: Lab) -> str:
    return str(lab.registry.contract.events.CheckpointCommitted.topic)


def test_a_provider_capping_log_ranges_verifies(lab: Lab, rpc_proxy: RpcProxy) -> None:
    run = lab.train("capped")
    rpc_proxy.mine(CAP + 500)  # the run's history now spans more than one capped query
    lab.finalize(run)
    rpc_proxy.cap_logs(CAP)
    code, report = through(lab, rpc_proxy).verify(last_adapter(run))
    assert (code, report["verdict"]) == (0, "verified"), failed_checks(report)
    widths = [b - a + 1 for a, b in rpc_proxy.log_ranges() if isinstance(a, int) and isinstance(b, int)]
    assert any(w > CAP for w in widths), "the test must make prov meet the cap"
    assert len(widths) < 100 and max(widths[1:]) <= CAP  # after one refusal, chunks of the cap
    # the run's history follows the registry's block pointers: single-block queries, about one per checkpoint
    assert 4 <= widths.count(1) <= 40


def test_a_provider_omitting_one_log_cannot_verify_never_fails(lab: Lab, rpc_proxy: RpcProxy) -> None:
    run = lab.train("omitted")
    lab.finalize(run)
    topic = checkpoint_topic(lab)

    def checkpoint_1(log: dict[str, Any]) -> bool:  # CheckpointCommitted's first data word is its index
        return bool(log["topics"]) and log["topics"][0] == topic and int(log["data"][2:66], 16) == 1

    rpc_proxy.omit_logs(checkpoint_1)
    code, report = through(lab, rpc_proxy).verify(last_adapter(run))
    assert any(checkpoint_1(log) for log in rpc_proxy.rpc("eth_getLogs", [{
        "address": lab.registry.address, "fromBlock": "0x0", "toBlock": "latest", "topics": [topic]}]))
    assert (code, report["verdict"]) == (2, "error"), report["verdict"]
    assert failed_checks(report) == []


def test_a_rate_limiting_provider_verifies_after_retries(lab: Lab, rpc_proxy: RpcProxy) -> None:
    run = lab.train("limited")
    lab.finalize(run)
    rpc_proxy.status(429, n=2, method="eth_getLogs").status(429, n=1, method="eth_call")
    genesis = rpc_proxy.rpc("eth_getBlockByNumber", ["0x0", False])["hash"]
    code, report = through(lab, rpc_proxy).verify(last_adapter(run), "--expect-genesis", genesis)
    assert (code, report["verdict"]) == (0, "verified"), failed_checks(report)
    assert [m for m, _ in rpc_proxy.calls].count("eth_getLogs") >= 3  # the refused ones were asked again
    # the same file against a pinned genesis the node does not have: only the chain check fails
    code, report = lab.verify(last_adapter(run), "--expect-genesis", "0x" + "ab" * 32)
    assert code == 1 and failed_checks(report) == ["chain"]
    assert "--expect-genesis" in check_of(report, "chain")["summary"]


@pytest.fixture
def mainnet_id_lab(tmp_path: Path, tiny_model_dir: Path, tiny_config: Callable[..., Any],
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A lab on an anvil started with --chain-id 1, anchoring with a fresh funded key (not a well-known dev key)."""
    from provenance import config
    from provenance.chain import connect

    binary = anvil.find_anvil()
    if binary is None:
        from tests.fixtures.chain import missing

        missing("anvil is not installed: run `npm ci` at the repo root")
    node = anvil.start(binary=binary, port=0, chain_id=1)
    try:
        key = "0x" + secrets.token_bytes(32).hex()
        registry = connect(node.rpc_url, key=key, use_config=False)
        registry.web3.provider.make_request("anvil_setBalance", [registry.signer.address, hex(10**21)])
        registry.deploy()
        home = tmp_path / "lab"
        state = home / ".prov"
        monkeypatch.setenv("PROV_HOME", str(state))
        monkeypatch.setenv("PROV_PRIVATE_KEY", key)
        store = f"local:{state / 'store'}"
        # confirmations 0: the trainer waits for its registration to be final before step 0 (prov.keys.v1), and
        # chain id 1 would otherwise mean the node's finalized tag, which this anvil does not advance in time
        config.update_section("chain", {"rpc_url": node.rpc_url, "registry": registry.address, "chain_id": 1,
                                        "confirmations": 0}, state)
        config.update_section("store", {"spec": store}, state)
        yield Lab(home, node.rpc_url, registry, store, tiny_model_dir, tiny_config)
    finally:
        node.stop()


def test_a_local_chain_borrowing_mainnets_id_fails_the_chain_check(mainnet_id_lab: Lab) -> None:
    run = mainnet_id_lab.train("borrowed-id")
    mainnet_id_lab.finalize(run)
    code, report = mainnet_id_lab.verify(last_adapter(run), "--expect-chain-id", "1")
    assert code == 1 and failed_checks(report) == ["chain"]
    chain = check_of(report, "chain")
    assert "Ethereum mainnet" in chain["summary"] and "genesis" in chain["summary"]
    assert report["chain"]["dev_chain"].startswith("anvil development chain claiming chain id 1")
    assert any("as reported by the RPC endpoint" in n and "your own node" in n for n in report["not_checked"])


def test_a_run_on_an_already_deployed_v2_registry_still_verifies(lab: Lab, rpc_proxy: RpcProxy) -> None:
    """Registry version 3 changed the events: a project whose config names a version 2 deployment keeps anchoring
    there (same writes) and its runs verify, read by chunked scans (here through a capped provider)."""
    from provenance import config
    from provenance.chain import Registry

    v2 = Registry(lab.registry.transport, version=2)
    v2.deploy()
    config.update_section("chain", {"registry": v2.address}, lab.home / ".prov")
    old = dataclasses.replace(lab, registry=v2)
    run = old.train("on-v2")
    old.finalize(run)
    rpc_proxy.cap_logs(CAP)
    code, report = through(old, rpc_proxy).verify(last_adapter(run))
    assert (code, report["verdict"]) == (0, "verified"), failed_checks(report)
    assert report["chain"]["registry_version"] == 2 and report["chain"]["registry"] == v2.address
    assert any("v2 ProvenanceRegistry" in n for n in report["not_checked"])


def test_an_honest_run_anchors_through_a_faulty_provider(lab: Lab, rpc_proxy: RpcProxy) -> None:
    """The trainer's own node is the faulty one: a gateway that loses the answer to a transaction the node accepted
    (HTTP 502 after forwarding, and a dropped connection), rate limits on receipts. Nothing recorded is lost or sent
    twice, `prov anchor status` says anchored, and the run verifies through the same provider."""
    import json
    import subprocess
    import sys

    from provenance import config

    config.update_section("chain", {"rpc_url": rpc_proxy.url}, lab.home / ".prov")  # the trainer's provider
    rpc_proxy.status(502, n=2, method="eth_sendRawTransaction", after=True)
    rpc_proxy.drop(n=1, method="eth_sendRawTransaction", after=True)
    rpc_proxy.status(429, n=3, method="eth_getTransactionReceipt")
    run = lab.train("faulty")
    lab.finalize(run)
    status = subprocess.run([sys.executable, "-m", "provenance", "anchor", "status", str(run), "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 0, status.stderr
    jobs = json.loads(status.stdout)["jobs"]
    assert jobs and all(j["label"] == "final" for j in jobs), jobs
    commits = [log for log in rpc_proxy.rpc("eth_getLogs", [{
        "address": lab.registry.address, "fromBlock": "0x0", "toBlock": "latest", "topics": [checkpoint_topic(lab)]}])]
    assert len(commits) == sum(j["kind"] == "checkpoint" for j in jobs)  # each commitment on chain exactly once
    sends = [m for m, _ in rpc_proxy.calls].count("eth_sendRawTransaction")
    assert sends >= len(jobs) + 2, (sends, len(jobs))  # the 502s were real transactions, sent again
    code, report = through(lab, rpc_proxy).verify(last_adapter(run))
    assert (code, report["verdict"]) == (0, "verified"), failed_checks(report)


def test_a_run_anchored_with_a_keystore_names_its_account(lab: Lab, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`prov train --keystore FILE` (here `$PROV_KEYSTORE`, which the option sets) signs with the keystore's account:
    it is the manifest's owner before step 0 and the registering account; `prov anchor flush --keystore` takes the
    same file."""
    import json

    from provenance._chain import keys
    from provenance.cli import main
    from tests.fixtures.chain import _anvil_dev_keys

    store = tmp_path / "signer.json"
    address = keys.write_keystore(store, _anvil_dev_keys()[1], "pw", scrypt_n=2)
    monkeypatch.setenv("PROV_KEYSTORE", str(store))
    monkeypatch.setenv("PROV_KEYSTORE_PASSWORD", "pw")
    run = lab.train("keystore")
    manifest = json.loads((run / "run.json").read_bytes())
    assert manifest["owner"] == address != lab.registry.signer.address
    jobs = [json.loads(p.read_bytes()) for p in sorted((run / "outbox" / "jobs").glob("*.json"))]
    assert lab.registry.run(bytes.fromhex(jobs[0]["run_key"])).registration.owner == address
    monkeypatch.delenv("PROV_KEYSTORE")
    assert main(["anchor", "flush", str(run), "--keystore", str(store), "--timeout", "30"]) == 0
    code, report = lab.verify(last_adapter(run))
    assert (code, report["verdict"]) == (0, "verified"), failed_checks(report)
