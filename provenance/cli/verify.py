"""`prov verify PATH`: the auditor's verdict on an adapter file, a checkpoint directory or a merged model.

Exit codes: 0 verified (at a level: commitments, commitments and data, replayed k/n segments, fully replayed),
1 a check failed, 2 could not run (bad input, unreachable node, missing content), 3 inconclusive (a check could not
be decided on this machine, e.g. replay could not be bitwise here: never "verified").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--rpc", "rpc_url", envvar="PROV_RPC_URL",
              help="Chain RPC URL (env PROV_RPC_URL; default: the project config's, from `prov chain up`).")
@click.option("--registry", envvar="PROV_REGISTRY",
              help="Registry contract address (env PROV_REGISTRY; default: the project config's).")
@click.option("--bundle", "bundle", type=click.Path(path_type=Path, dir_okay=False),
              help="The trainer's hand-off bundle (`prov bundle`): its artifacts are the store, and chain id, genesis "
                   "and registry are pinned from it; your own --rpc must answer for that chain.")
@click.option("--store", "store_spec", help="Artifact store: local, local:DIR or kubo:ADDR (default: project config).")
@click.option("--run", "run_id", help="Also require the file to belong to this run id (64 hex).")
@click.option("--expect-chain-id", type=int, help="Fail unless the node serves this chain id.")
@click.option("--expect-registry", metavar="ADDRESS", help="Fail unless the registry is at this address.")
@click.option("--expect-genesis", metavar="HASH", help="Fail unless the node's chain has this genesis block hash "
              "(0x + 64 hex; as the node reports it: use your own node).")
@click.option("--base-model", type=click.Path(path_type=Path), help="Base model directory (compare, rebuild "
              "checkpoint 0, tokenize, replay).")
@click.option("--adapter", type=click.Path(path_type=Path), help="For a merged model not committed on chain (e.g. "
              "converted to float16): the run's adapter it was merged from; needs --base-model.")
@click.option("--data", type=click.Path(path_type=Path), help="The training data (given only to auditors).")
@click.option("--secrets", type=click.Path(path_type=Path), help="The run's secrets.json (dataset key, noise seed).")
@click.option("--stats", type=click.Path(path_type=Path), help="The run's private stats.jsonl (default: beside "
              "--secrets): checks every step's statistics commitment and shows the loss curve.")
@click.option("--replay", default="auto", show_default=True,
              help="Segments to re-run bit for bit: 'auto' (the last segment and half the others, rounded up), a "
                   "number (sampled by an unpredictable beacon; the file's own last segment is always among them), "
                   "'all', or 0.")
@click.option("--auditor", metavar="NAME", help="Who audits (a name or organisation), recorded in the report.")
@click.option("--public", "public", is_flag=True,
              help="Print and write the publishable report: no private statistics (per-step loss), its own id.")
@click.option("--jobs", "jobs", type=int, default=1, show_default=True,
              help="Replay worker processes run at once (segments are independent; each uses the run's threads).")
@click.option("--beacon", metavar="SEED", help="Your own seed, mixed into the segment draw (recorded in the report).")
@click.option("--confirmations", type=int, default=2, show_default=True,
              help="Blocks after the run's finalisation whose hash draws the sampled segments.")
@click.option("--attestations", "attestations", metavar="ADDRESS",
              help="AttestationRegistry to read auditors' attestations from (default: the project config's).")
@click.option("--signature", type=click.Path(path_type=Path, dir_okay=False),
              help="An OpenSSF model signature of PATH to check (default: PATH.sig beside it, if present).")
@click.option("--signature-key", type=click.Path(path_type=Path, dir_okay=False),
              help="The trainer's P-256 public key (PEM) the model signature must check with.")
@click.option("--max-bytes", type=int, default=None, metavar="BYTES",
              help="Most bytes the store may serve this verification (default: 2 GiB + 32 × the verified files' "
                   "size); beyond it the verdict is 'error', never 'failed'.")
@click.option("--timeout", "timeout", type=float, default=None, metavar="SECONDS",
              help="Wall-clock limit for every store and chain request of this verification; a node that keeps it "
                   "waiting longer gives 'error' (exit 2).")
@click.option("--trust-auditors", "trust_auditors", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="JSON list of the auditor addresses or BLS key ids you trust: their attestations are listed "
                   "first; others (names are self-declared) are listed apart and only a bounded number checked.")
@click.option("--opacus-epsilon", "opacus_epsilon", is_flag=True,
              help="Also recompute the last checkpoint's ε with opacus (the trainer's library; needs the train "
                   "extra) and report it beside the verifier's own dp-accounting bound.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report (docs/report-schema.md).")
@click.option("--report", "html_path", type=click.Path(path_type=Path), help="Write the HTML audit report here.")
def verify_command(path: Path, rpc_url: str | None, registry: str | None, store_spec: str | None,
                   run_id: str | None, expect_chain_id: int | None, expect_registry: str | None,
                   base_model: Path | None, adapter: Path | None, data: Path | None, secrets: Path | None,
                   stats: Path | None, replay: str,
                   beacon: str | None, confirmations: int, attestations: str | None, as_json: bool,
                   html_path: Path | None, signature: Path | None = None,
                   signature_key: Path | None = None, max_bytes: int | None = None,
                   timeout: float | None = None, expect_genesis: str | None = None,
                   bundle: Path | None = None, jobs: int = 1, opacus_epsilon: bool = False,
                   auditor: str | None = None, public: bool = False, trust_auditors: Path | None = None) -> None:
    """Prove an adapter's (or merged model's) lineage against the registry and the store, and print the verdict.

    PATH is an adapter weights file (adapter_model.safetensors), a checkpoint directory, or a merged model (a model
    directory or safetensors file; found through the merged digest its run committed at finalisation, or with
    --base-model --adapter recomputed and compared bit for bit, whatever its dtypes or sharding). The verdict says what
    was proven: VERIFIED (commitments) from the file alone; (commitments and data) with --data --secrets
    --base-model; (replayed k/n segments) or (fully replayed, --replay all) when training was re-run bit for bit.

    Exit codes: 0 verified, 1 a check failed, 2 could not run (bad input, unreachable node, content missing from
    the store), 3 inconclusive (a check could not be decided on this machine; never verified).

    \b
    Examples:
      prov verify run/checkpoints/000003/adapter_model.safetensors        # in the trainer's project
      prov verify adapter_model.safetensors --bundle run.car --rpc URL    # an auditor elsewhere
      prov verify adapter_model.safetensors --bundle run.car --rpc URL --base-model model \\
          --data data.jsonl --secrets kit/secrets.json --replay all --jobs 2 --auditor "ACME" --report audit.html
    """
    from provenance import limits
    from provenance.canonical import dumps_for_terminal, escape_strings
    from provenance.chain import connect, parse_run_id
    from provenance.errors import UsageError
    from provenance.report import render_text, write_html
    from provenance.safetensors import read_safetensors_metadata
    from provenance.store import open_store
    from provenance.verify import VerifyOptions, verify

    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    for given, what in ((path, "PATH"), (base_model, "--base-model"), (adapter, "--adapter"), (data, "--data"),
                        (secrets, "--secrets"), (stats, "--stats")):
        if given is not None and given.exists() and not (given.is_file() or given.is_dir()):
            raise UsageError(f"{given} ({what}) is not a regular file or directory (a FIFO or device would block "
                             "the verifier); give the file itself")
    if expect_genesis is not None and not _is_block_hash(expect_genesis):
        raise UsageError(f"--expect-genesis takes a block hash (0x and 64 hex digits), not {expect_genesis[:80]!r}")
    if path.is_file():
        read_safetensors_metadata(path)  # a pickle or truncated file is refused before touching the network
    if bundle is not None:
        pins, store_spec = _open_bundle(bundle, rpc_url=rpc_url, store_spec=store_spec, chain_id=expect_chain_id,
                                        genesis=expect_genesis, registry=registry, expected_registry=expect_registry)
        expect_chain_id, expect_genesis = pins.chain_id, pins.genesis_hash
        registry = expect_registry = pins.registry
    options = VerifyOptions(base_model=base_model, data=data, secrets=secrets, stats=stats, replay=replay,
                            beacon=beacon, confirmations=confirmations,
                            expected_run=parse_run_id(run_id) if run_id else None,
                            expected_chain_id=expect_chain_id, expected_registry=expect_registry,
                            expected_genesis=expect_genesis, attestations=attestations, adapter=adapter,
                            signature=signature, signature_key=signature_key, max_bytes=max_bytes, timeout=timeout,
                            jobs=jobs, opacus_epsilon=opacus_epsilon, auditor=auditor, command=_command_line(),
                            trust_auditors=trust_auditors)
    if rpc_url is None:
        from provenance.cli.chain import ensure_local_chain

        ensure_local_chain()
    from provenance import progress

    # one --timeout for the whole command: connecting, then the verification in what is left of it
    with limits.active(limits.Budget(timeout=timeout) if timeout is not None else None):
        client = connect(rpc_url, registry=registry)
        if client.address is None:
            raise UsageError("no registry address: pass --registry or run `prov chain deploy` in this project")
        with open_store(store_spec) as store, progress.silenced(as_json):  # bars: stderr, terminals, not --json
            result = verify(path, registry=client, store=store, options=options)
    report = result.to_json()
    if public:
        from provenance.report import publishable

        report = publishable(report)
    if html_path is not None:
        write_html(report, html_path, manifest=result.manifest)
    if as_json:  # valid JSON whose control and bidi characters are escapes: safe on a terminal
        click.echo(dumps_for_terminal(report))
    else:
        click.echo(render_text(escape_strings(report), color=sys.stdout.isatty()))
        from provenance.signing import signature_words

        signed = signature_words(escape_strings(report).get("signature"))  # informative; a bad one is a warning too
        if signed is not None:
            click.echo(f"\nModel signature: {signed}")
        if html_path is not None:
            click.echo(f"\nHTML report: {html_path}")
    raise click.exceptions.Exit(int(report["exit_code"]))


def _command_line() -> str:
    """The command as given, for the report: `prov verify` with every argument and option that was given (on the
    command line or through PROV_* variables), local paths shortened and URLs cut to scheme and host
    (provenance.report.scrub), quoted so it can be run again."""
    import shlex

    from provenance.report import scrub

    ctx = click.get_current_context()
    words = ["prov", "verify"]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        value = ctx.params.get(name)
        if source not in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT) \
                or value is None or value is False:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif value is True:
            words.append(param.opts[0])
        else:
            words += [param.opts[0], str(value)]
    return str(scrub(shlex.join(words)))[:2000]


def _open_bundle(bundle: Path, *, rpc_url: str | None, store_spec: str | None, chain_id: int | None,
                 genesis: str | None, registry: str | None, expected_registry: str | None) -> tuple[Any, str]:
    """Import the bundle into a temporary store (removed when the command ends) and return its pins and store."""
    import shutil
    import tempfile

    from provenance.bundle import open_bundle, pins_for
    from provenance.errors import UsageError

    if store_spec is not None:
        raise UsageError("--bundle is the store: drop --store")
    tmp = tempfile.mkdtemp(prefix="prov-bundle-")
    click.get_current_context().call_on_close(lambda: shutil.rmtree(tmp, ignore_errors=True))
    coords = open_bundle(bundle, tmp)
    if rpc_url is None:
        hint = f" (the trainer suggests {coords.rpc_hint})" if coords.rpc_hint else ""
        raise UsageError(f"--bundle needs your own node for chain {coords.chain_id}: pass --rpc URL or set "
                         f"PROV_RPC_URL{hint}")
    pins = pins_for(coords, chain_id=chain_id, genesis_hash=genesis, registry=registry,
                    expected_registry=expected_registry)
    return pins, f"local:{tmp}"


COMMANDS = [verify_command]


def _is_block_hash(text: str) -> bool:
    body = text[2:] if text[:2].lower() == "0x" else ""
    return len(body) == 64 and all(c in "0123456789abcdefABCDEF" for c in body)
