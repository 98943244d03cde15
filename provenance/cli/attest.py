"""`prov keys new|show|register`, `prov attest`, `prov attest-deploy` and `prov export in-toto`.

Auditor keys are BLS (BN254) keys in encrypted key files; the password comes from `$PROV_KEY_PASSWORD` or a hidden
prompt, and no command ever prints a secret. Chain writes sign with the usual account (`$PROV_PRIVATE_KEY`,
`--keystore`, or a local dev account), which is the auditor's identity on chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

_chain_options = [
    click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's)."),
    click.option("--registry", help="ProvenanceRegistry address (default: the project config's)."),
    click.option("--attestations", "attestations", help="AttestationRegistry address (default: the project "
                                                         "config's, from `prov attest-deploy`)."),
    click.option("--keystore", type=click.Path(path_type=Path), help="Keystore of the account that sends."),
]


def chain_options(fn: Any) -> Any:
    for option in reversed(_chain_options):
        fn = option(fn)
    return fn


def _password(confirm: bool) -> str:
    from provenance._attest.keys import ENV_PASSWORD, password_from_env

    env = password_from_env()
    if env is not None:
        return env
    return str(click.prompt(f"Key password (or set {ENV_PASSWORD})", hide_input=True,
                            confirmation_prompt=confirm))


def _connect(rpc_url: str | None, registry: str | None, keystore: Path | None) -> Any:
    from provenance.chain import connect
    from provenance.errors import UsageError

    client = connect(rpc_url, registry=registry, keystore=keystore)
    if client.address is None:
        raise UsageError("no registry address: pass --registry or run `prov chain deploy` in this project")
    return client


def _attestations(client: Any, address: str | None) -> Any:
    from provenance.attest import attestation_client
    from provenance.errors import UsageError

    found = attestation_client(client, address)
    if found is None:
        raise UsageError("no AttestationRegistry: pass --attestations ADDRESS or run `prov attest-deploy`")
    return found


@click.group("keys")
def keys_group() -> None:
    """Auditor BLS keys (BN254): create, show, register on chain."""


@keys_group.command("new")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), help="Key file (default: <state dir>/keys/NAME.json).")
def keys_new(name: str, out: Path | None) -> None:
    """Generate a key and store it encrypted; prints only the public part."""
    from provenance._attest.keys import new_key

    public = new_key(name, _password(confirm=True), path=out)
    click.echo(f"created key {public.name} ({public.key_id}) in {public.path}")


@keys_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the public key as JSON.")
def keys_show(name: str, as_json: bool) -> None:
    """Show a key's public part (no password needed; the secret is never shown)."""
    from provenance._attest.keys import show_key

    public = show_key(name)
    if as_json:
        click.echo(json.dumps(public.to_json(), indent=2))
    else:
        click.echo(f"{public.name}: key id {public.key_id} (bn254)\nfile: {public.path}")


@keys_group.command("register")
@click.argument("name")
@chain_options
def keys_register(name: str, rpc_url: str | None, registry: str | None, attestations: str | None,
                  keystore: Path | None) -> None:
    """Register a key for the sending account, with its proof of possession."""
    from provenance._attest.keys import load_key

    key = load_key(name, _password(confirm=False))
    client = _attestations(_connect(rpc_url, registry, keystore), attestations)
    tx = client.register_auditor(key)
    click.echo(f"registered {key.public.name} ({key.public.key_id}) for {client.transport.signer.address}: "
               f"tx {tx.tx_hash}, block {tx.block_number}, gas {tx.gas_used}")


@click.command("attest-deploy")
@chain_options
def attest_deploy(rpc_url: str | None, registry: str | None, attestations: str | None,
                  keystore: Path | None) -> None:
    """Deploy an AttestationRegistry for the project's ProvenanceRegistry and record it in the config."""
    from provenance.attest import AttestationClient, save_deployment

    client = AttestationClient(_connect(rpc_url, registry, keystore))
    tx = client.deploy()
    save_deployment(client)
    click.echo(f"AttestationRegistry at {client.address} (tx {tx.tx_hash}, gas {tx.gas_used})")


@click.command("attest")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--key", "key_name", required=True, help="Auditor key name or file (`prov keys new`).")
@click.option("--with", "others", multiple=True, type=click.Path(path_type=Path),
              help="Another auditor's signed attestation to aggregate with (repeatable).")
@click.option("--cosign", type=click.Path(path_type=Path), help="Co-sign this signed attestation's statement.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the signed attestation here.")
@click.option("--anchor", is_flag=True, help="Send the aggregate to the AttestationRegistry.")
@click.option("--store", "store_spec", help="Artifact store (default: project config).")
@click.option("--store-report", is_flag=True, help="Store the verify report and attest its CID.")
@chain_options
def attest_command(path: Path, key_name: str, others: tuple[Path, ...], cosign: Path | None, out: Path | None,
                   anchor: bool, store_spec: str | None, store_report: bool, rpc_url: str | None,
                   registry: str | None, attestations: str | None, keystore: Path | None) -> None:
    """Verify PATH, and only if it verifies, sign an attestation of its checkpoint with your BLS key."""
    from provenance import attest
    from provenance._attest.keys import load_key
    from provenance.store import open_store

    key = load_key(key_name, _password(confirm=False))
    client = _connect(rpc_url, registry, keystore)
    lead = attest.SignedAttestation.read(cosign) if cosign else None
    with open_store(store_spec) as store:
        mine, _ = attest.attest_checkpoint(path, registry=client, store=store, key=key,
                                           auditor=client.signer.address, store_report=store_report,
                                           cosign=lead.statement if lead else None)
    parts = [mine, *(attest.SignedAttestation.read(p) for p in others)]
    ac = attest.attestation_client(client, attestations) if anchor or len(parts) > 1 else None
    proven: set[str] | None = None
    if ac is not None:  # only keys registered (with their proof of possession) to the account named may aggregate
        proven = set()
        for signer in (s for part in parts for s in part.signers):
            registered = ac.auditor(signer.auditor)
            if registered is not None and registered.key.key_id == signer.key.key_id:
                proven.add(signer.key.key_id)
    merged = attest.aggregate(parts, proven_keys=proven)
    if out is not None:
        merged.write(out)
    click.echo(f"attested checkpoint {merged.statement.checkpoint_index} of run {merged.statement.run_id.hex()} "
               f"(weights {merged.statement.weights_digest}) by {', '.join(merged.addresses)}")
    if anchor:
        tx = attest.anchor(_attestations(client, attestations), merged)
        click.echo(f"anchored: tx {tx.tx_hash}, block {tx.block_number}, gas {tx.gas_used}")


@click.group("export")
def export_group() -> None:
    """Standard exports of a checkpoint's provenance."""


@export_group.command("in-toto")
@click.argument("checkpoint", type=click.Path(path_type=Path, file_okay=False))
@click.option("--run-manifest", type=click.Path(path_type=Path), help="run.json (default: the run directory's).")
@click.option("--offline", is_flag=True, help="Do not read the chain (no times or anchors).")
@click.option("--model-signing", type=click.Path(path_type=Path),
              help="Also write a model-signing-style manifest of the checkpoint's files here.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the statement here (default: stdout).")
@click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's).")
@click.option("--registry", help="ProvenanceRegistry address (default: the project config's).")
def export_intoto(checkpoint: Path, run_manifest: Path | None, offline: bool, model_signing: Path | None,
                  out: Path | None, rpc_url: str | None, registry: str | None) -> None:
    """An in-toto Statement v1 with a SLSA Provenance v1 predicate for CHECKPOINT's adapter."""
    from provenance._attest import intoto

    client = None if offline else _connect(rpc_url, registry, None)
    statement = intoto.slsa_statement(checkpoint, run_manifest=run_manifest, registry=client)
    text = json.dumps(statement, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
    if model_signing is not None:
        model_signing.write_text(json.dumps(intoto.model_signing_manifest(checkpoint), indent=2) + "\n",
                                 encoding="utf-8")


COMMANDS = [keys_group, attest_deploy, attest_command, export_group]
