"""The trainer's commands in the `prov` command line: `prov train` (new run, `--resume`, `--nproc N` under torchrun),
`prov init-model --size tiny|small`, `prov demo` (the main job) and `prov audit-dp` (the canaries' empirical ε).

They live with the trainer, not in `provenance.cli`: the library never imports the trainer, and the CLI finds these
commands through the `prov.commands` entry point (pyproject.toml). Each is a thin wrapper over one library call;
torch is imported inside the commands so `prov` starts without it (and so the determinism profile is in the
environment before torch is imported).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from provenance.errors import UsageError


@click.command("train")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), help="Local Hugging Face model directory.")
@click.option("--data", type=click.Path(path_type=Path), help="Training data (.jsonl or plain text).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default <state>/runs/<run id>).")
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints.")
@click.option("--batch-size", type=int, help="Expected Poisson batch size (sample rate = batch size / N).")
@click.option("--physical-batch-size", type=int,
              help="Micro-batch size (examples per forward/backward; 0 = each rank's whole shard).")
@click.option("--nproc", type=int, help="Train on N processes with torchrun (data parallel; recorded as world size).")
@click.option("--profile", type=click.Choice(["portable", "native"]),
              help="Determinism profile: portable CPU kernels (default) or this CPU's native ones.")
@click.option("--max-length", type=int, help="Tokens per example (truncate/pad).")
@click.option("--noise-multiplier", type=float, help="DP noise multiplier σ.")
@click.option("--target-epsilon", type=float, help="Compute σ to spend this ε over the run.")
@click.option("--delta", type=float, help="DP δ (default 1/N^1.1).")
@click.option("--max-grad-norm", type=float, help="Per-sample clipping norm C.")
@click.option("--accountant", type=click.Choice(["prv", "rdp"]), help="Privacy accountant.")
@click.option("--non-private", is_flag=True, help="Train without DP (recorded as non-private), for comparison.")
@click.option("--canaries", type=int, help="Add this many random canary records (each trained on with probability "
              "1/2) for `prov audit-dp` (default 0: none, the run is unchanged).")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--lora-r", type=int, help="LoRA rank.")
@click.option("--threads", type=int, help="Torch threads (recorded; replay must use the same).")
@click.option("--seed", type=int, help="Seed of the LoRA initialisation.")
@click.option("--chain", help='Anchor on this chain: an RPC URL, or "tester" (in-process, gone at exit: nothing '
              "can be verified later). Default: the project's chain (`prov chain up`); an anchored run needs one.")
@click.option("--store", help='Artifact store: "local" or "kubo:<addr>" (default: project config).')
@click.option("--no-anchor", is_flag=True, help="Do not anchor or pin (provenance is still recorded locally).")
@click.option("--secrets", "secrets_file", type=click.Path(path_type=Path),
              help="Use these secrets (prov.secrets.v1 JSON) instead of fresh random ones.")
@click.option("--keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Sign the run's anchors with this keystore (password in $PROV_KEYSTORE_PASSWORD); sets "
                   "$PROV_KEYSTORE for the run (default: $PROV_PRIVATE_KEY, or a local chain's dev account).")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this directory from its last complete checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress output (the summary is still printed).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train_command(config: Path | None, non_private: bool, no_anchor: bool, secrets_file: Path | None,
                  keystore: Path | None, resume_dir: Path | None, quiet: bool, as_json: bool,
                  **options: Any) -> None:
    """Fine-tune a LoRA adapter with DP-SGD, recording provenance as it trains.

    With no arguments, trains the tiny demo model (`prov init-model --tiny` first) on the bundled demo data.

    \b
    Examples:
      prov init && prov train config.toml --out run      # a commented config, then train with it
      prov train --model ./llama --data chat.jsonl --steps 300 --batch-size 256 --target-epsilon 8
      prov train config.toml --nproc 2                   # data parallel under torchrun
      prov train --resume run                            # continue after a crash
    """
    from training.launch import train_from_cli

    if keystore is not None:  # read wherever the run's signer is resolved: here, the outbox, torchrun's ranks
        from provenance.chain import use_keystore

        use_keystore(keystore)
    with _warnings_as_notes():
        result = train_from_cli(config, options=options, non_private=non_private, no_anchor=no_anchor,
                                secrets_file=secrets_file, resume_dir=resume_dir, quiet=quiet or as_json)
    summary = {
        "anchored": result.anchored,
        "checkpoints": len(result.checkpoints),
        "epsilon": None if result.epsilon is None else repr(result.epsilon),
        "run_dir": str(result.run_dir),
        "run_id": result.run_id,
        "steps": result.steps,
        "weights": str(result.weights),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        _done()
        return
    eps = "non-private" if result.epsilon is None else f"ε = {result.epsilon:.4f}"
    # "yes" only when it is true: a run trained with anchoring off has no outbox destination at all
    anchoring_off = no_anchor or result.run_dir is None or not (Path(result.run_dir) / "outbox" /
                                                                "target.json").exists()
    anchored = "yes" if result.anchored else "no (anchoring off)" if anchoring_off else "pending (prov anchor flush)"
    if result.anchored and result.run_dir is not None:
        from provenance.anchor import awaiting_finality

        waiting = awaiting_finality(Path(result.run_dir))
        if waiting:  # sent and mined, not yet final on this chain: a reorganisation may still drop them
            anchored = f"yes (sent; {waiting} awaiting finality: `prov anchor status {result.run_dir}`)"
    click.echo(f"run {result.run_id}\n  dir      {result.run_dir}\n  steps    {result.steps}, "
               f"{len(result.checkpoints)} checkpoints, {eps}\n  adapter  {result.weights}\n"
               f"  anchored {anchored}")
    _done()


def _done() -> None:
    """The run is complete and durable (every file fsynced, the outbox closed): the process may skip the
    interpreter's teardown (`provenance.cli.request_fast_exit`)."""
    from provenance import cli

    cli.request_fast_exit()


@contextlib.contextmanager
def _warnings_as_notes() -> Iterator[None]:
    """Third-party warnings (Opacus, transformers, torch) become one prov line each, once per message, instead of
    multi-line tracebacks-with-source that garble the progress output; known harmless ones are already silenced
    (training.model.quiet_libraries)."""
    import warnings

    seen: set[str] = set()

    def note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())[:240]
        origin = Path(filename).parts[-2] if len(Path(filename).parts) > 1 else filename
        if text not in seen:
            seen.add(text)
            click.echo(f"note: {origin} ({category.__name__}): {text}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = note
        yield


@click.command("init-model")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--size", type=click.Choice(["tiny", "small"]), help="tiny (~0.1M parameters, tests and the demo; the "
              "default) or small (~86M, Llama-architecture, a realistic size to measure on).")
@click.option("--tiny", is_flag=True, help="Same as --size tiny.")
@click.option("--seed", type=int, default=0, show_default=True, help="Weight initialisation seed.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty directory.")
def init_model_command(directory: Path | None, size: str | None, tiny: bool, seed: int, force: bool) -> None:
    """Build a Llama-architecture model + tokenizer locally, random weights from a seed, nothing downloaded
    (default directory: <state>/models/tiny, or <state>/models/small)."""
    from training.tiny import build_model
    from training.trainer import default_model_dir

    if tiny and size not in (None, "tiny"):
        raise UsageError(f"--tiny and --size {size} contradict each other; give one")
    size = size or "tiny"
    target = directory if directory is not None else default_model_dir().parent / size
    from provenance import progress

    def written() -> int:  # the bar follows the files save_pretrained writes (config, weights, tokenizer)
        return sum(1 for p in target.iterdir() if p.is_file()) if target.is_dir() else 0

    with progress.polled(f"init-model {size}", total=None, count=written, unit="file"):
        path = build_model(target, size=size, seed=seed, overwrite=force)
    click.echo(f"{size} model written to {path}")


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


@click.command("init")
@click.argument("path", required=False, type=click.Path(path_type=Path, dir_okay=False), default=Path("config.toml"))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_command(path: Path, force: bool) -> None:
    """Write a commented training config template (every field, at its default) to PATH (default config.toml).

    \b
    Examples:
      prov init                      # config.toml in this directory
      prov init my-run.toml && prov train my-run.toml
    """
    from training.config import DEFAULT_CONFIG_FILE

    if path.exists() and not force:
        raise UsageError(f"{path} exists: choose another name or pass --force to overwrite it")
    path.write_text(DEFAULT_CONFIG_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"wrote {path}: edit [model] path and [data] path, then `prov train {path}`")


@click.command("audit-dp")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), help="Base model directory (default: the run's local.json).")
@click.option("--confidence", type=float, default=0.95, show_default=True, help="Confidence of the lower bound.")
@click.option("--guesses", type=int, help="Canaries guessed on each side (default: a quarter of them).")
@click.option("--json", "as_json", is_flag=True, help="Print a prov.dp-audit.v1 document.")
def audit_dp_command(run_dir: Path, model: Path | None, confidence: float, guesses: int | None,
                     as_json: bool) -> None:
    """Empirical lower bound on ε from the canaries of one run (`prov train --canaries M`), beside the proven ε.

    Exits 1 when the bound exceeds the proven ε (the run's DP claim is contradicted). A lower bound from one run
    cannot prove privacy: a small one is what a correctly private run shows.

    \b
    Example:
      prov train config.toml --canaries 64 --out run && prov audit-dp run
    """
    from training.audit import audit_run

    result = audit_run(run_dir, model_dir=model, confidence=confidence, guesses=guesses)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(result.verdict_line())
    if not result.consistent:
        raise click.exceptions.Exit(1)


COMMANDS = [train_command, init_model_command, demo_command, init_command, audit_dp_command]
