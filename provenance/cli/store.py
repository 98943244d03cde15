"""`prov store put/get/pin/unpin/ls/gc/export/import/cid`: the content-addressed artifact store.

Thin: each command opens the store (`--store`, else the project config, else the local blockstore) and calls one
method of `provenance.store.Store`. CIDs print alone on stdout so scripts can capture them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from provenance.store import Store

_STORE_HELP = ("Store to use: 'local', 'local:<dir>' or 'kubo:<multiaddr or URL>' "
               "(default: project config \"store\", else local).")


@click.group("store")
@click.option("--store", "spec", default=None, metavar="SPEC", help=_STORE_HELP)
@click.option("--timeout", type=float, default=None, help="Seconds to wait on a Kubo node for each call.")
@click.pass_context
def store_group(ctx: click.Context, spec: str | None, timeout: float | None) -> None:
    """Content-addressed artifact store (CIDs identical to `ipfs add --cid-version=1 --raw-leaves`)."""
    ctx.obj = {"spec": spec, "timeout": timeout}


def _busy(label: str) -> contextlib.AbstractContextManager[object]:
    """A bar with elapsed time on a terminal while a transfer runs (provenance.progress; nothing when piped)."""
    from provenance import progress

    return progress.polled(label, total=None, count=lambda: 0, unit="block")


def _open(ctx: click.Context) -> Store:
    from provenance.store import open_store

    return open_store(ctx.obj["spec"], timeout=ctx.obj["timeout"])


@store_group.command("use")
@click.argument("spec")
def use_command(spec: str) -> None:
    """Record SPEC as this project's store (config "store"), after checking it opens and answers."""
    from provenance.config import update_section
    from provenance.store import open_store

    with open_store(spec) as store:
        store.has(store.put_bytes(b"", pin=False))  # a round trip: reachable and writable
    update_section("store", {"spec": spec})
    click.echo(f"project store: {spec}")


@store_group.command("put")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--no-pin", is_flag=True, help="Do not pin (the content may be garbage-collected).")
@click.pass_context
def put_command(ctx: click.Context, path: Path, no_pin: bool) -> None:
    """Store a file or a directory (recursively) and print its CID."""
    with _open(ctx) as store, _busy(f"store put {path.name}"):
        cid = store.put(path, pin=not no_pin)
    click.echo(cid)


@store_group.command("get")
@click.argument("cid")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--max-size", type=int, default=None, metavar="BYTES",
              help="Refuse to fetch more than this many bytes in all (default: no limit but the free disk space; "
                   "a file declaring more than either is refused before anything is written).")
@click.pass_context
def get_command(ctx: click.Context, cid: str, dest: Path, max_size: int | None) -> None:
    """Fetch CID into DEST (a file, or a new directory), verifying every block."""
    from provenance import limits, progress

    budget = limits.Budget(max_bytes=max_size, what="fetch", bytes_option="--max-size")
    with _open(ctx) as store, limits.active(budget):
        kind, size = store.stat(cid)
        # bytes read so far (every block is charged to the budget), out of a file's declared size: rate and ETA
        with progress.polled(f"store get {cid[:16]}…", total=size if kind == "file" else None,
                             count=lambda: budget.used, unit="B", unit_scale=True):
            count = store.get(cid, dest)
    what = f"{count} files" if kind == "directory" else f"{count} bytes"
    click.echo(f"wrote {dest} ({what}, verified against {cid})", err=True)


@store_group.command("cid")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
def cid_command(path: Path) -> None:
    """Print PATH's CID without storing anything (what `ipfs add -n --cid-version=1 --raw-leaves` prints)."""
    from provenance.store import directory_cid, file_cid

    click.echo(directory_cid(path) if path.is_dir() else file_cid(path))


@store_group.command("pin")
@click.argument("cid")
@click.pass_context
def pin_command(ctx: click.Context, cid: str) -> None:
    """Pin CID (its whole DAG must be present, or fetchable by a Kubo node)."""
    with _open(ctx) as store:
        store.pin(cid)
    click.echo(f"pinned {cid}", err=True)


@store_group.command("unpin")
@click.argument("cid")
@click.pass_context
def unpin_command(ctx: click.Context, cid: str) -> None:
    """Unpin CID; `gc` then removes what no other pin reaches."""
    with _open(ctx) as store:
        store.unpin(cid)
    click.echo(f"unpinned {cid}", err=True)


@store_group.command("ls")
@click.argument("cid", required=False)
@click.pass_context
def ls_command(ctx: click.Context, cid: str | None) -> None:
    """List pinned CIDs, or with CID the entries of that directory (CID and name per line)."""
    with _open(ctx) as store:
        if cid is None:
            for pinned in store.pins():
                click.echo(pinned)
        else:
            for name, child in sorted(store.list_directory(cid).items()):
                click.echo(f"{child} {name}")


@store_group.command("gc")
@click.pass_context
def gc_command(ctx: click.Context) -> None:
    """Remove every block that no pin reaches."""
    with _open(ctx) as store:
        removed = store.gc()
    click.echo(f"removed {removed} blocks")


@store_group.command("export")
@click.argument("cid")
@click.argument("car_path", metavar="FILE.car", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def export_command(ctx: click.Context, cid: str, car_path: Path) -> None:
    """Write CID's whole DAG to a CAR v1 file (every block verified on the way)."""
    with _open(ctx) as store, _busy(f"store export {car_path.name}"):
        count = store.export_car(cid, car_path)
    click.echo(f"wrote {car_path} ({count} blocks, root {cid})", err=True)


@store_group.command("import")
@click.argument("car_path", metavar="FILE.car", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def import_command(ctx: click.Context, car_path: Path) -> None:
    """Import a CAR v1 file, verifying every block; pin and print its roots."""
    with _open(ctx) as store:
        for root in store.import_car(car_path):
            click.echo(root)


COMMANDS = [store_group]
