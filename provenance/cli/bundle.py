"""`prov bundle RUN_DIR --out run.car [--kit DIR]`: the trainer's hand-off to an auditor on another machine.

Thin: `provenance.bundle.write_bundle` writes the public CAR (artifacts + chain coordinates); `write_kit` copies the
private auditor kit (secrets, per-step statistics) into its own directory, only when asked for by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("bundle")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The bundle to write (a CAR v1 file, e.g. run.car): public, safe to publish.")
@click.option("--kit", "kit", type=click.Path(path_type=Path, file_okay=False),
              help="Also copy the PRIVATE auditor kit (secrets.json, stats.jsonl) into this new directory; hand it "
                   "to the auditor privately, never publish it.")
@click.option("--store", "store_spec", help="Store the run was anchored to (default: the run's outbox target).")
@click.option("--rpc", "rpc_url", envvar="PROV_RPC_URL",
              help="Node to read chain id and genesis from (default: the chain the run was anchored on).")
@click.option("--rpc-hint", help="The RPC URL to suggest to auditors (default: the one the run was anchored on).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def bundle_command(run_dir: Path, out: Path, kit: Path | None, store_spec: str | None, rpc_url: str | None,
                   rpc_hint: str | None, as_json: bool) -> None:
    """Write RUN_DIR's public artifacts and chain coordinates as one CAR file for an auditor.

    The bundle holds the run manifest, every anchored checkpoint and its step log, and which chain, genesis block
    and registry to check them against; the auditor runs `prov verify ADAPTER --bundle run.car --rpc THEIR_NODE`.

    \b
    Examples:
      prov bundle runs/r1 --out r1.car
      prov bundle runs/r1 --out r1.car --kit r1-private-kit
    """
    from provenance.anchor import recorded_target
    from provenance.bundle import write_bundle, write_kit
    from provenance.cli.chain import ensure_local_chain
    from provenance.store import open_store

    target = recorded_target(run_dir) if store_spec is None or rpc_url is None else None
    if store_spec is None and target is not None:
        store_spec = target.store
    if rpc_url is None and target is not None and target.chain is not None:
        ensure_local_chain(target.chain)  # the run's chain is this project's anvil: restarted if down
    with open_store(store_spec) as store:
        summary = write_bundle(run_dir, out, store=store, rpc_url=rpc_url, rpc_hint=rpc_hint)
    kit_files = write_kit(run_dir, kit) if kit is not None else []
    coords = summary.coordinates
    if as_json:
        click.echo(json.dumps({"bundle": str(out), "blocks": summary.blocks, "bytes": summary.bytes,
                               "coordinates": coords.to_json(), "kit": [str(p) for p in kit_files]}, indent=2))
        return
    click.echo(f"bundle {out}: {summary.blocks} blocks, {summary.bytes} bytes (public)")
    click.echo(f"  run      {coords.run_id}")
    click.echo(f"  chain    {coords.chain_id}, genesis {coords.genesis_hash}")
    click.echo(f"  registry {coords.registry}")
    click.echo(f"auditor: prov verify ADAPTER --bundle {out.name} --rpc <your node for chain {coords.chain_id}>")
    if kit_files:
        click.echo(f"PRIVATE auditor kit in {kit}: {', '.join(p.name for p in kit_files)} (never publish it)")


COMMANDS = [bundle_command]
