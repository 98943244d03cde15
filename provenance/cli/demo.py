"""`prov demo [--out DIR]`: the main job, end to end on embedded defaults (see training/demo.py)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("prov-demo"), show_default=True,
              help="Directory for the demo's chain state, store, model, run and reports.")
@click.option("--steps", type=int, default=30, show_default=True, help="Training steps.")
@click.option("--checkpoint-every", type=int, default=10, show_default=True, help="Steps between checkpoints.")
@click.option("--replay", default="2", show_default=True, help="Segments to replay bit for bit ('all' for every).")
def demo_command(out: Path, steps: int, checkpoint_every: int, replay: str) -> None:
    """Train on a local chain, anchor, verify with replay, tamper, and verify again."""
    from training.demo import run_demo

    raise click.exceptions.Exit(run_demo(out, steps=steps, checkpoint_every=checkpoint_every, replay=replay,
                                         echo=click.echo))


COMMANDS = [demo_command]
