"""`prov anchor status|flush [RUN_DIR]`: inspect and finish a run's anchoring outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from provenance.errors import UsageError, one_line


def _run_dir(run_dir: Path | None) -> Path:
    """The given run directory, or the most recently modified run under the project's `runs/`."""
    if run_dir is not None:
        return run_dir
    from provenance.config import subdir

    runs = [p for p in subdir("runs", create=False).glob("*") if (p / "run.json").exists()] \
        if subdir("runs", create=False).is_dir() else []
    if not runs:
        raise UsageError("no run directory given and no runs in the project state directory; pass RUN_DIR")
    return max(runs, key=lambda p: p.stat().st_mtime)


@click.group("anchor")
def anchor_group() -> None:
    """Inspect and finish the anchoring of a training run (store + registry)."""


_KEYSTORE = click.option(
    "--keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
    help="Sign with this keystore (password in $PROV_KEYSTORE_PASSWORD; default: $PROV_KEYSTORE, "
         "$PROV_PRIVATE_KEY, or a local chain's dev account). It must be the run's owner.")


def _use_keystore(keystore: Path | None) -> None:
    if keystore is not None:  # the outbox resolves its signer from the environment, as the trainer's does
        from provenance.chain import use_keystore

        use_keystore(keystore)


_CONFIRMATIONS = click.option(
    "--confirmations", type=click.IntRange(min=0), default=None,
    help="Blocks on top of a commitment before it counts as final (default: 0 on a development chain, else the "
         "node's finalized block or the chain's default; config chain.confirmations).")


def _open(run_dir: Path | None, **kwargs: Any) -> Any:
    """The run's outbox, reusing its recorded target; that chain restarted first when it is the project's anvil."""
    from provenance.anchor import Outbox, recorded_target
    from provenance.cli.chain import ensure_local_chain

    directory = _run_dir(run_dir)
    target = recorded_target(directory)
    if target is not None and target.chain is not None:
        ensure_local_chain(target.chain)
    return Outbox.open(directory, reuse_target=True, **kwargs)


def _retry_failed(box: Any) -> None:
    again = box.retry_failed()
    if again:
        click.echo(f"retrying what stopped anchoring: {', '.join(again)}", err=True)


def _label(job: Any) -> str:
    """A job's state as a user reads it: final, sent (awaiting finality), dropped, pending or failed."""
    if job.state == "done":
        return "final" if job.final else "sent"
    return str(job.state)


def _recheck(box: Any) -> str:
    """Re-check the sent jobs against the chain; "" when done, else why it could not be (the remembered state is
    shown then)."""
    from provenance.errors import ProvenanceError

    try:
        box.recheck()
    except ProvenanceError as exc:
        return one_line(exc)
    return ""


@anchor_group.command("status")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_CONFIRMATIONS
def status(run_dir: Path | None, as_json: bool, confirmations: int | None) -> None:
    """Show each anchoring job of a run, re-checked against what the registry stores now: final, sent (awaiting
    finality), dropped by a chain reorganisation, pending (with its last error) or failed."""
    with _open(run_dir, confirmations=confirmations) as box:
        unchecked = _recheck(box)
        jobs = box.jobs()
        if as_json:
            click.echo(json.dumps({"run_dir": str(box.run_dir), "status": box.status_line(),
                                   "rechecked": not unchecked, "recheck_error": unchecked or None,
                                   "jobs": [{**j.to_json(), "label": _label(j)} for j in jobs]}, indent=2))
            return
        click.echo(f"{box.run_dir}: {box.status_line()}")
        if unchecked:
            click.echo(f"  (not re-checked against the chain: {unchecked}; showing the remembered state)")
        for job in jobs:
            where = f" tx {job.tx} (block {job.block})" if job.tx else ""
            error = f" — last error: {job.error}" if job.error else ""
            click.echo(f"  {_label(job):8s} {job.name}{where}{error}")


@anchor_group.command("flush")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to keep retrying.")
@click.option("--wait-final", is_flag=True, help="Also wait until every commitment is final (re-sending any that "
              "a reorganisation drops meanwhile).")
@_CONFIRMATIONS
@_KEYSTORE
def flush(run_dir: Path | None, timeout: float, wait_final: bool, confirmations: int | None,
          keystore: Path | None) -> None:
    """Re-check what was sent against the chain, then send every pending, dropped or failed (after you fixed the
    cause: funds, key, registry) anchoring job in order, retrying until done or the timeout. Exit 1 if some remain."""
    _use_keystore(keystore)
    with _open(run_dir, wait_lock=5.0, confirmations=confirmations) as box:
        _retry_failed(box)
        unchecked = _recheck(box)
        if unchecked:
            click.echo(f"not re-checked against the chain: {unchecked}", err=True)
        done = box.wait_final(timeout=timeout) if wait_final else box.flush(timeout=timeout)
        click.echo(f"{box.run_dir}: {box.status_line()}")
        if not done:
            raise click.exceptions.Exit(1)


@anchor_group.command("finalize")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to keep retrying.")
@_KEYSTORE
def finalize(run_dir: Path | None, timeout: float, keystore: Path | None) -> None:
    """Close a finished run on chain (after its pending anchors): nothing can be committed to it afterwards."""
    _use_keystore(keystore)
    with _open(run_dir, wait_lock=5.0) as box:
        _retry_failed(box)
        box.enqueue_finalize()
        done = box.flush(timeout=timeout)
        click.echo(f"{box.run_dir}: {box.status_line()}")
        if not done:
            raise click.exceptions.Exit(1)


COMMANDS = [anchor_group]
