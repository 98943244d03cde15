"""Core commands: `prov hash` and `prov log verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from provenance.hashing import hash_file
from provenance.manifest import hash_directory


def _progress_printer(label: str) -> object:
    """A progress callback that redraws one stderr line when stderr is a terminal, else prints nothing."""
    if not sys.stderr.isatty():
        return None
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if pct != state["last"]:
            state["last"] = pct
            click.echo(f"\r{label}: {pct:3d}%", err=True, nl=pct >= 100)

    return progress


@click.command("hash")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def hash_command(path: Path, as_json: bool) -> None:
    """Digest of a file, or the checkpoint digest of a directory (with every file's digest)."""
    if path.is_dir():
        manifest = hash_directory(path, progress=_progress_printer(str(path)))  # type: ignore[arg-type]
        digest = manifest.digest()
        if as_json:
            click.echo(json.dumps({"kind": "checkpoint", "path": str(path), "digest": str(digest),
                                   "files": manifest.to_json()["files"]}, indent=2))
        else:
            for entry in manifest.files:
                click.echo(f"{entry.digest}  {entry.path}")
            click.echo(f"{digest}  {path}/ (checkpoint digest over {len(manifest.files)} files)")
        return
    digest = hash_file(path, progress=_progress_printer(str(path)))  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps({"kind": "file", "path": str(path), "digest": str(digest)}, indent=2))
    else:
        click.echo(f"{digest}  {path}")


@click.group("log")
def log_group() -> None:
    """Inspect step logs."""


@log_group.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def log_verify(directory: Path, as_json: bool) -> None:
    """Recompute a step log's Merkle tree and check every stored record, leaf and root.

    Exits 1 if a record was altered or the log ends in a torn (partial) record; 2 if there is no log.
    """
    from provenance.steplog import verify_log

    size, root = verify_log(directory)
    if as_json:
        click.echo(json.dumps({"path": str(directory), "size": size, "root": root.hex(), "ok": True}, indent=2))
    else:
        click.echo(f"ok: {size} steps, root {root.hex()}")


COMMANDS = [hash_command, log_group]
