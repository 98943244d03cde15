"""`prov chain up/down/deploy/status` in a throwaway project (PROV_HOME), and the CLI's one-line errors."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provenance import chain, config, devchain
from provenance._chain.anvil import find_anvil
from provenance.cli import main
from tests.fixtures.chain import missing
from tests.fixtures.chainvalues import checkpoint_values, run_values


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / ".prov"
    monkeypatch.setenv("PROV_HOME", str(home))
    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    return home


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_importing_the_cli_does_not_import_web3() -> None:
    probe = "import sys, provenance.cli; print('web3' in sys.modules, 'eth_account' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_status_without_a_chain(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "chain", "status", "--json")
    assert code == 0
    assert "no chain configured" in json.loads(out)["problem"]


def test_deploy_without_a_chain_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "chain", "deploy")
    assert (code, out) == (2, "")
    assert err == "prov: error: no chain to deploy to: run `prov chain up` or pass --rpc URL\n"


def test_deploy_to_an_unreachable_rpc_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(capsys, "chain", "deploy", "--rpc", f"http://127.0.0.1:{port}")
    assert code == 2
    assert err.startswith(f"prov: error: cannot reach the chain at http://127.0.0.1:{port}: connection refused")
    assert err.count("\n") == 1


def test_down_without_a_chain(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "chain", "down")[:2] == (0, "no local chain was running\n")


@pytest.mark.chain
def test_up_deploy_down_up_keeps_the_records(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if find_anvil() is None:
        missing("anvil is not installed: run `npm ci` at the repo root")
    code, out, _ = run_cli(capsys, "chain", "up", "--port", "0")
    try:
        assert code == 0
        url = out.strip().splitlines()[-1]
        assert url.startswith("http://127.0.0.1:")
        section = config.get_section("chain")
        assert section["rpc_url"] == url and section["local"] is True

        code, out, err = run_cli(capsys, "chain", "deploy")
        assert code == 0 and "local dev account 0" in err
        address = out.strip().splitlines()[-1]
        assert config.get_section("chain")["registry"] == address
        assert config.get_section("chain")["chain_id"] == 31337

        registry = chain.connect()  # everything from the project config
        assert isinstance(registry, chain.Registry) and registry.address == address
        run_key = registry.register_run(chain.new_run_id(), **run_values()).run_key
        assert run_key is not None
        committed = registry.commit_checkpoint(run_key, **checkpoint_values(0))

        code, out, _ = run_cli(capsys, "chain", "down")
        assert code == 0 and out.startswith("stopped anvil (pid ")
        with pytest.raises(chain.RpcUnreachable):
            chain.connect()
        assert (project / "chain" / "state.json").stat().st_size > 0

        code, out, _ = run_cli(capsys, "chain", "up", "--port", "0")
        assert code == 0
        again = chain.connect()
        history = again.run(run_key)  # storage and events both survived the restart, and still fold to the head
        assert (history.checkpoints[0].tx_hash, history.checkpoints[0].log_root) == (
            committed.tx_hash, checkpoint_values(0)["log_root"])
        assert history.registration.checkpoint_count == 1

        code, out, _ = run_cli(capsys, "chain", "up", "--port", "0")
        assert code == 0 and "already running" in out
        code, out, _ = run_cli(capsys, "chain", "status", "--json")
        report = json.loads(out)
        assert report["anvil_running"] and report["reachable"] and report["registry_ok"]
        assert report["registry_version"] == 3 and report["dev_chain"] == "anvil/Hardhat development chain"
    finally:
        run_cli(capsys, "chain", "down")
    assert not devchain.status()["anvil_running"]


@pytest.mark.chain
def test_ensure_running_restarts_the_project_anvil(project: Path) -> None:
    if find_anvil() is None:
        missing("anvil is not installed: run `npm ci` at the repo root")
    assert devchain.ensure_running() is None  # no local chain recorded: nothing to do
    node = devchain.up(port=0)
    try:
        assert devchain.ensure_running() == dataclasses.replace(node, already_running=True)
        devchain.down()
        restarted = devchain.ensure_running()
        assert restarted is not None and not restarted.already_running and restarted.rpc_url == node.rpc_url
        assert devchain.status()["anvil_running"]
    finally:
        devchain.down()
