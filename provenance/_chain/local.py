"""The project's local chain and deployment record, behind `prov chain up/down/deploy/status`.

`up` starts anvil detached with its state in `<state dir>/chain/state.json` (loaded at start, dumped every 2 s and
on exit) and records `rpc_url`, `pid` and `local: true` in the config section "chain"; `down` stops it by that
PID. `deploy` deploys a registry and records `registry`, `chain_id` and `rpc_url`, so `connect()` finds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import config
from provenance._chain import anvil
from provenance._chain.errors import RpcUnreachable
from provenance._chain.records import TxInfo
from provenance.errors import ChainError, UsageError

SECTION = "chain"


@dataclass(frozen=True)
class LocalChain:
    rpc_url: str
    pid: int
    state_file: Path
    log_file: Path
    already_running: bool
    forgot_registry: str | None = None  # a registry address recorded for another (non-local) chain, now dropped


def up(*, home: Path | None = None, host: str = "127.0.0.1", port: int = 8545,
       chain_id: int | None = None) -> LocalChain:
    """Start the project's anvil (or report the one already running) and record its URL and PID."""
    section = config.get_section(SECTION, home)
    chain_dir = config.subdir("chain", home=home)
    state_file, log_file = chain_dir / "state.json", chain_dir / "anvil.log"
    pid = section.get("pid")
    if isinstance(pid, int) and section.get("local") and anvil.is_anvil(pid):
        return LocalChain(section["rpc_url"], pid, state_file, log_file, already_running=True)
    node = anvil.start(host=host, port=port, state_file=state_file, log_file=log_file, chain_id=chain_id)
    values: dict[str, Any] = {"rpc_url": node.rpc_url, "pid": node.pid, "local": True}
    forgot = None
    if section.get("registry") and not section.get("local"):
        forgot = str(section["registry"])
        values.update(registry=None, chain_id=None)
    config.update_section(SECTION, values, home)
    return LocalChain(node.rpc_url, node.pid, state_file, log_file, already_running=False, forgot_registry=forgot)


def down(*, home: Path | None = None) -> int | None:
    """Stop the project's anvil; its state stays on disk for the next `up`. Returns the PID stopped, or None."""
    section = config.get_section(SECTION, home)
    pid = section.get("pid")
    stopped = isinstance(pid, int) and anvil.stop(pid)
    if pid is not None:
        config.update_section(SECTION, {"pid": None}, home)
    return pid if stopped else None


def deploy(
    rpc_url: str | None = None, *, key: Any = None, keystore: str | os.PathLike[str] | None = None,
    home: Path | None = None, timeout: float = 120.0,
) -> tuple[Any, TxInfo]:
    """Deploy a registry to `rpc_url` (default: the project's chain) and record it in the project config."""
    from provenance.chain import TESTER, connect

    section = config.get_section(SECTION, home)
    url = rpc_url or section.get("rpc_url")
    if not url:
        raise UsageError("no chain to deploy to: run `prov chain up` or pass --rpc URL")
    if url == TESTER:
        raise UsageError("the in-process chain lives only as long as one process: deploy to anvil or a network")
    registry = connect(url, key=key, keystore=keystore, timeout=timeout, use_config=False)
    info = registry.deploy()
    values: dict[str, Any] = {"rpc_url": url, "registry": registry.address, "chain_id": registry.chain_id}
    if url != section.get("rpc_url"):
        values["local"] = False
        values["pid"] = None
    config.update_section(SECTION, values, home)
    return registry, info


def status(*, home: Path | None = None) -> dict[str, Any]:
    """What the project config says about its chain, and what the chain says now (never raises on a dead node)."""
    from provenance.chain import connect

    section = config.get_section(SECTION, home)
    report: dict[str, Any] = {key: section.get(key) for key in ("rpc_url", "registry", "chain_id", "pid", "local")}
    pid = section.get("pid")
    report["anvil_running"] = bool(isinstance(pid, int) and anvil.is_anvil(pid))
    if not section.get("rpc_url"):
        report["problem"] = "no chain configured: run `prov chain up` or `prov chain deploy --rpc URL`"
        return report
    try:
        registry = connect(home=home)
        report["reachable"] = True
        report["block_number"] = registry.latest_block_hash()[0]
        report["registry_ok"] = registry.address is not None
    except ChainError as exc:
        report["reachable"] = not isinstance(exc, RpcUnreachable)
        report["problem"] = str(exc)
    return report
