"""`prov anchor status|flush [RUN_DIR]`: inspect and finish a run's anchoring outbox."""

from __future__ import annotations

import json
from pathlib import Path

import click

from provenance.errors import UsageError


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


@anchor_group.command("status")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(run_dir: Path | None, as_json: bool) -> None:
    """Show each queued anchoring job of a run: done, pending (with its last error) or failed."""
    from provenance.anchor import Outbox

    with Outbox.open(_run_dir(run_dir), reuse_target=True) as box:
        jobs = box.jobs()
        if as_json:
            click.echo(json.dumps({"run_dir": str(box.run_dir), "status": box.status_line(),
                                   "jobs": [j.to_json() for j in jobs]}, indent=2))
            return
        click.echo(f"{box.run_dir}: {box.status_line()}")
        for job in jobs:
            where = f" tx {job.tx} (block {job.block})" if job.tx else ""
            error = f" — last error: {job.error}" if job.error else ""
            click.echo(f"  {job.state:8s} {job.name}{where}{error}")


@anchor_group.command("flush")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to keep retrying.")
def flush(run_dir: Path | None, timeout: float) -> None:
    """Send every pending anchoring job now, retrying until done or the timeout. Exit 1 if some remain."""
    from provenance.anchor import Outbox

    with Outbox.open(_run_dir(run_dir), reuse_target=True, wait_lock=5.0) as box:
        done = box.flush(timeout=timeout)
        click.echo(f"{box.run_dir}: {box.status_line()}")
        if not done:
            raise click.exceptions.Exit(1)


@anchor_group.command("finalize")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to keep retrying.")
def finalize(run_dir: Path | None, timeout: float) -> None:
    """Close a finished run on chain (after its pending anchors): nothing can be committed to it afterwards."""
    from provenance.anchor import Outbox

    with Outbox.open(_run_dir(run_dir), reuse_target=True, wait_lock=5.0) as box:
        box.enqueue_finalize()
        done = box.flush(timeout=timeout)
        click.echo(f"{box.run_dir}: {box.status_line()}")
        if not done:
            raise click.exceptions.Exit(1)


COMMANDS = [anchor_group]
