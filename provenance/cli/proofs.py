"""`prov prove-example` (by the trainer) and `prov check-example` (by anyone): was this record used?

Exit codes of check-example: 0 the proof holds, 1 it does not (another run, a tampered record, salt, tensor, path or
step record, another registry), 2 could not run (not a proof file, unreachable node, not the run's base model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _registry(rpc_url: str | None, registry: str | None) -> Any:
    """The registry a command reads: --rpc/--registry, else the project config's (its own anvil restarted if down)."""
    from provenance.chain import connect
    from provenance.cli.chain import ensure_local_chain
    from provenance.errors import UsageError

    if rpc_url is None:
        ensure_local_chain()
    client = connect(rpc_url, registry=registry)
    if client.address is None:
        raise UsageError("no registry address: pass --registry or run `prov chain deploy` in this project")
    return client


@click.command("prove-example")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--index", type=click.IntRange(min=0), required=True, help="The record's position in the data file "
              "(0 = the first record).")
@click.option("--out", type=click.Path(path_type=Path), help="Where to write the proof (default: "
              "example-INDEX.proof.json here).")
@click.option("--data", type=click.Path(path_type=Path), help="The training data (default: the run's local.json).")
@click.option("--base-model", type=click.Path(path_type=Path), help="Base model directory (default: the run's "
              "local.json); its tokenizer rebuilds the batches the record was in.")
@click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's, from `prov chain up`).")
@click.option("--registry", help="Registry contract address (default: the project config's).")
def prove_example_command(run_dir: Path, index: int, out: Path | None, data: Path | None, base_model: Path | None,
                          rpc_url: str | None, registry: str | None) -> None:
    """Write a proof that record INDEX of the run in RUN_DIR was in its training set, and in which steps.

    Run by the trainer (it reads the run's secrets). The proof reveals this record, its salts and tokens, and
    hashes of nothing else; give it to whoever asked (`prov check-example` checks it).
    """
    from provenance import progress
    from provenance.proving import prove_example

    with progress.polled(f"prove-example {index}", total=None, count=lambda: 0, unit="step"):
        proof = prove_example(run_dir, index=index, registry=_registry(rpc_url, registry), data=data,
                              base_model=base_model)
    path = out or Path(f"example-{index}.proof.json")
    proof.write(path)
    click.echo(f"{proof.describe()}; proof written to {path}")


@click.command("check-example")
@click.argument("proof_file", metavar="PROOF", type=click.Path(path_type=Path))
@click.option("--base-model", type=click.Path(path_type=Path), help="The run's base model: re-tokenize the record "
              "and compare the tensors the proof opens.")
@click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's, from `prov chain up`).")
@click.option("--registry", help="Registry contract address (default: the project config's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_example_command(proof_file: Path, base_model: Path | None, rpc_url: str | None, registry: str | None,
                          as_json: bool) -> None:
    """Check a proof that one record was used to train a run, against the run's on-chain record.

    Prints what the proof establishes and what it does not. Exit codes: 0 it holds, 1 it does not, 2 could not run.
    """
    from provenance.proofs import ExampleProof, check_example

    proof = ExampleProof.read(proof_file)
    result = check_example(proof, registry=_registry(rpc_url, registry), base_model=base_model)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    click.echo(f"HOLDS: {result.summary}")
    click.echo(f"Record: {json.dumps(result.record, ensure_ascii=False)}")
    click.echo("Proven:")
    for line in result.proves:
        click.echo(f"  - {line}")
    click.echo("Not proven:")
    for line in result.not_proven:
        click.echo(f"  - {line}")


COMMANDS = [prove_example_command, check_example_command]
