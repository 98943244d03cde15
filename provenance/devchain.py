"""The project's local chain and registry deployment, behind `prov chain up/down/deploy/status` and `prov demo`:
workflows above the registry client (`provenance.chain`), which never imports this module.

`up` starts anvil detached with its state in `<state dir>/chain/state.json` (loaded at start, dumped every 2 s and
on exit) and records `rpc_url`, `pid` and `local: true` in the config section "chain"; `down` stops it by that
PID. `deploy` deploys a registry and records `registry`, `chain_id` and `rpc_url`, so `connect()` finds them.
`ensure_running` restarts the project's own anvil from its saved state when a command needs it and it is down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from provenance import config
from provenance._chain import anvil
from provenance.chain import TESTER, Registry, RpcUnreachable, TxInfo, connect
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


def ensure_running(*, home: Path | None = None, url: str | None = None) -> LocalChain | None:
    """If the project's chain is its own local anvil (`prov chain up`, `prov demo`), make sure it runs: restart it
    from its saved state on its recorded port when it is down, so a later command finds the same registry.
    `url`: the chain a command is about to use (a run's recorded target); only the project's own anvil at that URL
    is restarted. Returns the node (`already_running` tells whether it was restarted), or None when the project has
    no local chain (or `url` is another chain)."""
    section = config.get_section(SECTION, home)
    if not (section.get("local") and section.get("rpc_url")):
        return None
    if url is not None and url.rstrip("/") != str(section["rpc_url"]).rstrip("/"):
        return None
    return up(home=home, port=urlparse(section["rpc_url"]).port or 8545)


def deploy(
    rpc_url: str | None = None, *, key: Any = None, keystore: str | os.PathLike[str] | None = None,
    home: Path | None = None, timeout: float = 120.0,
) -> tuple[Registry, TxInfo]:
    """Deploy a registry (version 2) to `rpc_url` (default: the project's chain) and record it in the project
    config."""
    section = config.get_section(SECTION, home)
    url = rpc_url or section.get("rpc_url")
    if not url:
        raise UsageError("no chain to deploy to: run `prov chain up` or pass --rpc URL")
    if url == TESTER:
        raise UsageError("the in-process chain lives only as long as one process: deploy to anvil or a network")
    registry = connect(url, key=key, keystore=keystore, timeout=timeout, use_config=False)
    assert isinstance(registry, Registry)  # no address given: always the current version
    info = registry.deploy()
    values: dict[str, Any] = {"rpc_url": url, "registry": registry.address, "chain_id": registry.chain_id}
    if url != section.get("rpc_url"):
        values["local"] = False
        values["pid"] = None
    config.update_section(SECTION, values, home)
    return registry, info


def status(*, home: Path | None = None) -> dict[str, Any]:
    """What the project config says about its chain, and what the chain says now (never raises on a dead node)."""
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
        info = registry.chain_info()
        report["block_number"] = info.latest_block
        report["dev_chain"] = info.dev_chain
        report["registry_ok"] = registry.address is not None
        if registry.address is not None:
            report["registry_version"] = registry.version
    except ChainError as exc:
        report["reachable"] = not isinstance(exc, RpcUnreachable)
        report["problem"] = str(exc)
    return report
