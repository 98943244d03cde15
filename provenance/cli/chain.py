"""`prov chain up/down/deploy/status`: the project's local anvil and its registry deployment.

Thin: each command calls one function of `provenance.devchain` and prints. web3 is imported inside the commands so
`prov --version` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("chain")
def chain_group() -> None:
    """Local chain and registry deployment (state under <state dir>/chain/, settings in config "chain")."""


@chain_group.command("up")
@click.option("--port", type=int, default=8545, show_default=True, help="Loopback port; 0 picks a free one.")
@click.option("--chain-id", type=int, default=None, help="Chain id (anvil's default is 31337).")
def up_command(port: int, chain_id: int | None) -> None:
    """Start a local anvil with state persisted in the project, and print its RPC URL."""
    from provenance import devchain

    node = devchain.up(port=port, chain_id=chain_id)
    if node.forgot_registry:
        click.echo(f"note: the registry {node.forgot_registry} recorded for another chain was dropped from the "
                   "config; run `prov chain deploy`", err=True)
    verb = "already running" if node.already_running else "started"
    click.echo(f"anvil {verb} (pid {node.pid}); state in {node.state_file}")
    click.echo(node.rpc_url)


@chain_group.command("down")
def down_command() -> None:
    """Stop the local anvil started by `prov chain up` (its state is kept for the next `up`)."""
    from provenance import devchain

    pid = devchain.down()
    click.echo(f"stopped anvil (pid {pid})" if pid is not None else "no local chain was running")


@chain_group.command("deploy")
@click.option("--rpc", "rpc_url", default=None, help="JSON-RPC URL (default: the project's chain).")
@click.option("--keystore", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Encrypted keystore to sign with (password in $PROV_KEYSTORE_PASSWORD).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the receipt.")
def deploy_command(rpc_url: str | None, keystore: Path | None, timeout: float) -> None:
    """Deploy ProvenanceRegistry (version 2) and record its address and chain id in the project config.

    Signs with $PROV_PRIVATE_KEY, or --keystore, or on a local chain its well-known dev account 0.
    """
    from provenance import devchain

    registry, info = devchain.deploy(rpc_url, keystore=keystore, timeout=timeout)
    click.echo(f"signed by {registry.signer.address} ({registry.signer.source})", err=True)
    click.echo(f"ProvenanceRegistry v{registry.version} deployed at {registry.address} on chain {registry.chain_id} "
               f"(tx {info.tx_hash}, block {info.block_number}, {info.gas_used} gas)")
    click.echo(registry.address)


@chain_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def status_command(as_json: bool) -> None:
    """Show the recorded chain and registry, and whether they answer."""
    from provenance import devchain

    report = devchain.status()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for key in ("rpc_url", "chain_id", "dev_chain", "registry", "registry_version", "pid", "anvil_running",
                "reachable", "block_number", "registry_ok", "problem"):
        if report.get(key) is not None:
            click.echo(f"{key}: {report[key]}")


def ensure_local_chain(url: str | None = None) -> None:
    """Restart the project's own anvil from its saved state if it is down (provenance.devchain), saying so on
    stderr: the one place `prov verify`, `bundle`, `anchor ...` and `prove-example` do it, so they work in a new
    shell after a reboot. `url`: the chain the command will use when it is not the project config's (only the
    project's anvil at that URL restarts)."""
    from provenance import devchain

    node = devchain.ensure_running(url=url)
    if node is not None and not node.already_running:
        click.echo(f"note: restarted the project's anvil from its saved state at {node.rpc_url} "
                   f"(pid {node.pid}; stop it with `prov chain down`)", err=True)


COMMANDS = [chain_group]
