"""The one place a command restarts the project's own anvil (`prov chain up`, `prov demo`) when it is down, so
`prov verify`, `prov bundle`, `prov anchor ...` and `prov prove-example` work in a new shell after a reboot."""

from __future__ import annotations

import click


def ensure_local_chain(url: str | None = None) -> None:
    """Restart the project's own anvil from its saved state if it is down (provenance.devchain), saying so on
    stderr. `url`: the chain the command will use, when it is not the project config's (only that anvil restarts)."""
    from provenance import devchain

    node = devchain.ensure_running(url=url)
    if node is not None and not node.already_running:
        click.echo(f"note: restarted the project's anvil from its saved state at {node.rpc_url} "
                   f"(pid {node.pid}; stop it with `prov chain down`)", err=True)
