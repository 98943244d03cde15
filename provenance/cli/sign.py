"""`prov sign PATH` (an OpenSSF model signature beside a shipped adapter or merged model) and `prov signing-key
new|show` (the trainer's P-256 key). Thin: each calls provenance.signing and prints; no key is ever printed.
Registered through provenance/cli/attest.py's COMMANDS."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("signing-key")
def signing_key_group() -> None:
    """The trainer's P-256 signing key (OpenSSF model signatures and DSSE-signed in-toto statements)."""


@signing_key_group.command("new")
@click.argument("name", default="trainer")
def signing_key_new(name: str) -> None:
    """Generate a P-256 key, stored encrypted (password from $PROV_KEY_PASSWORD); prints its id and public key file."""
    from provenance.signing import new_signing_key

    key = new_signing_key(name)
    click.echo(f"created signing key {key.name} (key id {key.key_id}); public key: {key.public_path}")


@signing_key_group.command("show")
@click.argument("name", default="trainer")
def signing_key_show(name: str) -> None:
    """Show a signing key's id and public key file (the file to hand to whoever checks your signatures)."""
    from provenance.signing import show_signing_key

    key = show_signing_key(name)
    click.echo(f"{key.name}: key id {key.key_id}\npublic key: {key.public_path}")


@click.command("sign")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--key", "key_name", default="trainer", show_default=True,
              help="Signing key name or private key file (`prov signing-key new`).")
@click.option("--signature", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the signature here (default: PATH.sig beside the model).")
def sign_command(path: Path, key_name: str, signature: Path | None) -> None:
    """Sign CHECKPOINT_OR_MODEL (an adapter directory, a merged model directory, a checkpoint, or one weights file)
    with an OpenSSF model signature (model-signing, key-based, offline).

    Check it with `prov verify PATH --signature-key KEY.pub.pem`, or with model-signing itself:
    `model_signing verify key --public_key KEY.pub.pem --signature PATH.sig PATH`.
    """
    from provenance.signing import sign_model

    done = sign_model(path, key=key_name, signature=signature)
    click.echo(f"signed {len(done.files)} file(s) of {path} with key {done.key_id[:16]}…: {done.signature}")


COMMANDS = [sign_command, signing_key_group]
