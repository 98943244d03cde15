"""`prov keys new|show|register|rotate|revoke`, `prov attest`, `prov attest-deploy` and `prov export in-toto` (added
to the `export` group of provenance/cli/export.py).

Thin: each command parses, calls provenance.keys / provenance.attest / provenance.attestations / provenance.intoto
and prints. Auditor keys are BLS (BN254) keys in encrypted key files; the password comes from `$PROV_KEY_PASSWORD`
or a hidden prompt, and no command ever prints a secret. Chain writes sign with the usual account
(`$PROV_PRIVATE_KEY`, `--keystore`, or a local dev account), which is the auditor's identity on chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from provenance.cli.export import export_group  # the `export` group lives there; in-toto is added to it here
from provenance.cli.sign import COMMANDS as SIGN_COMMANDS  # `prov sign`, `prov signing-key`

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
    from provenance.keys import ENV_PASSWORD, password_from_env

    env = password_from_env()
    if env is not None:
        return env
    return str(click.prompt(f"Key password (or set {ENV_PASSWORD})", hide_input=True,
                            confirmation_prompt=confirm))


def _client(rpc_url: str | None, registry: str | None, attestations: str | None, keystore: Path | None) -> Any:
    from provenance.attestations import connect_attestations

    return connect_attestations(rpc_url, registry=registry, address=attestations, keystore=keystore)


def _tx(tx: Any) -> str:
    return f"tx {tx.tx_hash}, block {tx.block_number}, gas {tx.gas_used}"


@click.group("keys")
def keys_group() -> None:
    """Auditor BLS keys (BN254): create, show, register, rotate and revoke on chain."""


@keys_group.command("new")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), help="Key file (default: <state dir>/keys/NAME.json).")
def keys_new(name: str, out: Path | None) -> None:
    """Generate a key and store it encrypted; prints only the public part."""
    from provenance.keys import new_key

    public = new_key(name, _password(confirm=True), path=out)
    click.echo(f"created key {public.name} ({public.key_id}) in {public.path}")


@keys_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the public key as JSON.")
def keys_show(name: str, as_json: bool) -> None:
    """Show a key's public part (no password needed; the secret is never shown)."""
    from provenance.keys import show_key

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
    from provenance.keys import register_key

    client = _client(rpc_url, registry, attestations, keystore)
    public, tx = register_key(client, name, _password(confirm=False))
    click.echo(f"registered {public.name} ({public.key_id}) for {client.sender}: {_tx(tx)}")


@keys_group.command("rotate")
@click.argument("name")
@chain_options
def keys_rotate(name: str, rpc_url: str | None, registry: str | None, attestations: str | None,
                keystore: Path | None) -> None:
    """Replace the sending account's registered key NAME by a new key (same file name and password); attestations
    already anchored with the old key stay valid, new ones need the new key."""
    from provenance.keys import rotate_key

    client = _client(rpc_url, registry, attestations, keystore)
    done = rotate_key(client, name, _password(confirm=True))
    sent = _tx(done.tx) if done.tx else "already registered by an interrupted rotation"
    click.echo(f"rotated {client.sender} from {done.previous.key_id} to {done.key.key_id} ({sent}); "
               f"old key file kept as {done.archived}")


@keys_group.command("revoke")
@click.argument("name")
@chain_options
def keys_revoke(name: str, rpc_url: str | None, registry: str | None, attestations: str | None,
                keystore: Path | None) -> None:
    """Revoke key NAME (a key file, or a key id 0x...) of the sending account: every attestation signed with it,
    past and future, is reported as revoked. No password needed."""
    from provenance.keys import revoke_key

    client = _client(rpc_url, registry, attestations, keystore)
    key_id, tx = revoke_key(client, name)
    click.echo(f"revoked key {key_id} of {client.sender}: {_tx(tx)}")


@click.command("attest-deploy")
@chain_options
def attest_deploy(rpc_url: str | None, registry: str | None, attestations: str | None,
                  keystore: Path | None) -> None:
    """Deploy an AttestationRegistry for the project's ProvenanceRegistry and record it in the config."""
    from provenance.attestations import connect_attestations, deploy_attestations

    client = connect_attestations(rpc_url, registry=registry, keystore=keystore, deployed=False)
    tx = deploy_attestations(client)
    click.echo(f"AttestationRegistry at {client.address} ({_tx(tx)})")


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
@click.option("--base-model", type=click.Path(path_type=Path), help="Base model directory (passed to the verifier).")
@click.option("--data", type=click.Path(path_type=Path), help="The training data (passed to the verifier).")
@click.option("--secrets", type=click.Path(path_type=Path), help="The run's secrets.json (passed to the verifier).")
@click.option("--replay", default="1", show_default=True,
              help="Segments to re-run bit for bit (a number, or 'all'); the level reached is what is signed.")
@chain_options
def attest_command(path: Path, key_name: str, others: tuple[Path, ...], cosign: Path | None, out: Path | None,
                   anchor: bool, store_spec: str | None, store_report: bool, base_model: Path | None,
                   data: Path | None, secrets: Path | None, replay: str, rpc_url: str | None, registry: str | None,
                   attestations: str | None, keystore: Path | None) -> None:
    """Verify PATH and, only if it verifies, sign an attestation of its checkpoint and of the verification level
    reached (commitments, data, sampled:K/N or full:N) with your BLS key; aggregate with --with, anchor with --anchor.
    Exit codes: 0 signed, 1 refused (not verified, or a part fails its checks), 2 could not run."""
    from provenance.attest import SignedAttestation, attest_and_anchor
    from provenance.keys import load_key
    from provenance.store import open_store
    from provenance.verify import VerifyOptions

    options = VerifyOptions(base_model=base_model, data=data, secrets=secrets, replay=replay)  # checks --replay
    key = load_key(key_name, _password(confirm=False))
    client = _client(rpc_url, registry, attestations, keystore)
    lead = SignedAttestation.read(cosign) if cosign else None
    parts = [SignedAttestation.read(p) for p in others]
    with open_store(store_spec) as store:
        done = attest_and_anchor(path, attestations=client, store=store, key=key, options=options, others=parts,
                                 cosign=lead, store_report=store_report, anchor_it=anchor)
    if out is not None:
        done.attestation.write(out)
    st = done.statement
    click.echo(f"attested checkpoint {st.checkpoint_index} of run {st.run_key.hex()} (weights {st.weights_digest}, "
               f"level {st.level}) by {', '.join(done.attestation.addresses)}")
    if done.tx is not None:
        click.echo(f"anchored: {_tx(done.tx)}")


@export_group.command("in-toto")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--run-manifest", type=click.Path(path_type=Path), help="run.json (default: the run directory's).")
@click.option("--offline", is_flag=True, help="Do not read the chain (no times or anchors).")
@click.option("--model-signing", type=click.Path(path_type=Path),
              help="Also write a model-signing-style manifest of the checkpoint's files here.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the statement here (default: stdout).")
@click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's).")
@click.option("--registry", help="ProvenanceRegistry address (default: the project config's).")
@click.option("--key", "key_name", help="DSSE-sign every output with this P-256 signing key (`prov signing-key "
                                        "new`; e.g. trainer).")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="A saved `prov verify --json` report of CHECKPOINT: with --lineage/--dp, the statements built "
                   "from it.")
@click.option("--lineage", "lineage_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the https://prov.dev/lineage/v1 statement here (needs --report).")
@click.option("--dp", "dp_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the https://prov.dev/dp/v1 statement here (needs --report).")
def export_intoto(checkpoint: Path | None, run_manifest: Path | None, offline: bool, model_signing: Path | None,
                  out: Path | None, rpc_url: str | None, registry: str | None, key_name: str | None,
                  report_path: Path | None, lineage_out: Path | None, dp_out: Path | None) -> None:
    """An in-toto Statement v1 with a SLSA Provenance v1 predicate for CHECKPOINT's adapter (a checkpoint directory
    or the adapter file), DSSE-signed with --key; with --report, also the lineage and DP statements
    (docs/compliance.md)."""
    from provenance import exports, intoto
    from provenance.errors import UsageError

    if (lineage_out or dp_out) and report_path is None:
        raise UsageError("--lineage and --dp are built from a verified report: pass --report FILE (prov verify --json)")

    def sealed(document: dict[str, Any]) -> dict[str, Any]:
        return document if key_name is None else intoto.sign_statement(document, key=key_name)

    if checkpoint is None:  # like the other exports: a saved report alone (the SLSA statement needs the files)
        if report_path is None or not (lineage_out or dp_out) or out is not None or model_signing is not None:
            raise UsageError("give CHECKPOINT (an adapter file or checkpoint directory), or --report FILE with "
                             "--lineage/--dp for the statements of a saved report")
    else:
        if not checkpoint.exists():
            raise UsageError(f"{checkpoint}: no such file or directory")
        if offline:
            click.echo("note: --offline: the SLSA statement is built from the local run.json and files, not checked "
                       "against the chain's record", err=True)
        statement, files = intoto.export(checkpoint, run_manifest=run_manifest, offline=offline, rpc_url=rpc_url,
                                         registry=registry, model_signing=model_signing is not None)
        intoto.write_json(sealed(statement), out)
        if model_signing is not None and files is not None:
            intoto.write_json(sealed(files), model_signing)
    if report_path is not None:
        report = exports.load_report(report_path)
        for name, document in exports.intoto_statements(report, path=checkpoint).items():
            target = {"lineage": lineage_out, "dp": dp_out}[name]
            if target is not None:
                intoto.write_json(sealed(document), target)


COMMANDS = [keys_group, attest_deploy, attest_command, export_group, *SIGN_COMMANDS]
