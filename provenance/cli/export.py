"""`prov export model-card|annex-iv`: compliance documents of a verified checkpoint (docs/compliance.md).

The `export` group lives here; other modules add their exports to it (`prov export in-toto`, provenance/cli/attest.py:
`from provenance.cli.export import export_group`, then `@export_group.command("in-toto")`). Until that module does,
this group also serves the commands of the `export` group it defines itself, so no command is lost whichever module
registers `export` last.

Each command verifies CHECKPOINT (or reads a saved `prov verify --json` report with `--report`) and refuses to
export anything that is not verified, exiting with the verdict's code (1 failed, 3 inconclusive, 2 could not run).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click


class _ExportGroup(click.Group):
    """A click group that also lists the commands of another module's own `export` group (see module doc)."""

    def _adopted(self) -> dict[str, click.Command]:
        try:
            module = importlib.import_module("provenance.cli.attest")
        except ModuleNotFoundError:
            return {}
        other = getattr(module, "export_group", None)
        return dict(other.commands) if isinstance(other, click.Group) and other is not self else {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._adopted()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or self._adopted().get(cmd_name)


@click.group("export", cls=_ExportGroup)
def export_group() -> None:
    """Standard exports of a checkpoint's provenance: in-toto, Hugging Face model card, EU AI Act Annex IV."""


_source = [
    click.argument("checkpoint", required=False, type=click.Path(path_type=Path)),
    click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
                 help="Use this saved `prov verify --json` report instead of verifying CHECKPOINT."),
    click.option("--rpc", "rpc_url", help="Chain RPC URL (default: the project config's)."),
    click.option("--registry", help="Registry contract address (default: the project config's)."),
    click.option("--expect-chain-id", type=int, help="Fail unless the node serves this chain id."),
    click.option("--expect-registry", metavar="ADDRESS", help="Fail unless the registry is at this address."),
    click.option("--store", "store_spec", help="Artifact store: local, local:DIR or kubo:ADDR (default: project "
                                               "config)."),
    click.option("--base-model", type=click.Path(path_type=Path), help="Base model directory (see prov verify)."),
    click.option("--data", type=click.Path(path_type=Path), help="The training data (see prov verify)."),
    click.option("--secrets", type=click.Path(path_type=Path), help="The run's secrets.json (see prov verify)."),
    click.option("--replay", default="1", show_default=True, help="Segments to re-run (see prov verify)."),
]


def _source_options(fn: Any) -> Any:
    for decorator in reversed(_source):
        fn = decorator(fn)
    return fn


def _report(checkpoint: Path | None, report_path: Path | None, *, manifest_path: Path | None = None,
            want_manifest: bool = False, **verify: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The publishable verified report, and the run manifest when asked for and obtainable."""
    from provenance import exports
    from provenance.errors import UsageError

    if (checkpoint is None) == (report_path is None):
        raise UsageError("give either CHECKPOINT (to verify it now) or --report FILE (a saved prov verify --json)")
    fetch = want_manifest and manifest_path is None
    manifest = None
    if report_path is not None:
        report = exports.require_verified(exports.load_report(report_path))
        if fetch:
            from provenance.cid import parse_cid
            from provenance.errors import FormatError, StoreUnavailable
            from provenance.store import BlockNotFound, open_store

            try:  # --store, else the project's store; checked against the registered digest either way
                parse_cid(str(report["run"]["manifest_cid"]))  # a report naming no usable CID: nothing to fetch
                with open_store(verify["store_spec"]) as store:
                    manifest = exports.fetch_manifest(store, report)
            except (BlockNotFound, StoreUnavailable, FormatError):  # served bytes that are not the verified
                # manifest (CidMismatch, a digest mismatch) or an exhausted budget still fail
                if verify["store_spec"] is not None:
                    raise
                # not in this project's store (an auditor's machine): the export says what it lacks without it
    else:
        assert checkpoint is not None
        report, manifest = _verify_now(checkpoint, with_manifest=fetch, **verify)
    if manifest_path is not None:
        manifest = exports.load_manifest(manifest_path, report)
    return report, manifest


def _verify_now(checkpoint: Path, *, with_manifest: bool, rpc_url: str | None, registry: str | None,
                expect_chain_id: int | None, expect_registry: str | None, store_spec: str | None,
                base_model: Path | None, data: Path | None, secrets: Path | None,
                replay: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from provenance import exports
    from provenance.chain import connect
    from provenance.errors import UsageError
    from provenance.store import open_store
    from provenance.verify import VerifyOptions

    if not checkpoint.exists():
        raise UsageError(f"{checkpoint}: no such file or directory")
    options = VerifyOptions(base_model=base_model, data=data, secrets=secrets, replay=replay,
                            expected_chain_id=expect_chain_id, expected_registry=expect_registry)
    client = connect(rpc_url, registry=registry)
    if client.address is None:
        raise UsageError("no registry address: pass --registry or run `prov chain deploy` in this project")
    with open_store(store_spec) as store:
        return exports.verify_for_export(checkpoint, registry=client, store=store, options=options,
                                         with_manifest=with_manifest)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text, nl=False)
        return
    from provenance.fsutil import atomic_write

    atomic_write(out, text.encode("utf-8"))
    click.echo(f"wrote {out}", err=True)


@export_group.command("model-card")
@_source_options
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write README.md here (default: "
                                                                             "stdout).")
@click.option("--dataset", "datasets", multiple=True, metavar="HUB_ID",
              help="A public training dataset's Hub id (owner/name) for the card's `datasets` (repeatable).")
def export_model_card(out: Path | None, datasets: tuple[str, ...], **source: Any) -> None:
    """The provenance section of a Hugging Face model card (README.md front matter and Markdown) for CHECKPOINT."""
    from provenance import exports

    report, _ = _report(source.pop("checkpoint"), source.pop("report_path"), **source)
    _emit(exports.model_card(report, datasets=list(datasets) or None), out)


@export_group.command("annex-iv")
@_source_options
@click.option("--run-manifest", "manifest_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The run manifest (run.json) to fill in optimizer, LoRA, data preparation and compute "
                   "(default: fetched from the store; checked against the registered digest).")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]),
              help="Output format (default: from --out's suffix, else md).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write FILE.md, .html or .json "
                                                                             "(default: stdout).")
def export_annex_iv(manifest_path: Path | None, fmt: str | None, out: Path | None, **source: Any) -> None:
    """EU AI Act Annex IV technical documentation for CHECKPOINT: what the run proves, and what a person must add."""
    from provenance import exports

    chosen = exports.annex_iv_format(out, fmt)
    report, manifest = _report(source.pop("checkpoint"), source.pop("report_path"), manifest_path=manifest_path,
                               want_manifest=True, **source)
    _emit(exports.render_annex_iv(exports.annex_iv(report, manifest=manifest), chosen), out)


def _model_path(checkpoint: Path | None, model: Path | None) -> Path | None:
    return model if model is not None else checkpoint


_model_option = click.option("--model", type=click.Path(path_type=Path, exists=True),
                             help="The model's files to list (default: CHECKPOINT; with --report, only the report's "
                                  "file and digest unless given).")


@export_group.command("cyclonedx")
@_source_options
@_model_option
@click.option("--run-manifest", "manifest_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The run manifest (run.json) for the training parameters (default: fetched from the store).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write the BOM here (default: stdout).")
def export_cyclonedx(model: Path | None, manifest_path: Path | None, out: Path | None, **source: Any) -> None:
    """A CycloneDX 1.6 ML-BOM of CHECKPOINT: model, base model, dataset commitment, DP statement, anchors."""
    import json

    from provenance import exports

    checkpoint = source.pop("checkpoint")
    report, manifest = _report(checkpoint, source.pop("report_path"), manifest_path=manifest_path,
                               want_manifest=True, **source)
    bom = exports.cyclonedx_bom(report, path=_model_path(checkpoint, model), manifest=manifest)
    _emit(json.dumps(bom, indent=2, ensure_ascii=False) + "\n", out)


@export_group.command("gpai")
@_source_options
@_model_option
@click.option("--run-manifest", "manifest_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The run manifest (run.json) for compute and dependencies (default: fetched from the store).")
@click.option("--base-compute", type=float, metavar="FLOPS",
              help="The base model's training compute in FLOPs (from its provider), for the one-third threshold.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), help="Output format (default: from --out, else "
                                                                        "md).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write FILE.md or .json (default: "
                                                                             "stdout).")
def export_gpai(model: Path | None, manifest_path: Path | None, base_compute: float | None, fmt: str | None,
                out: Path | None, **source: Any) -> None:
    """EU GPAI Model Documentation Form items and public training-content summary fields CHECKPOINT's run proves;
    the rest is marked for a person to write."""
    from provenance import exports

    checkpoint = source.pop("checkpoint")
    chosen = fmt or ("json" if out is not None and out.suffix.lower() == ".json" else "md")
    base_model = source.get("base_model")
    report, manifest = _report(checkpoint, source.pop("report_path"), manifest_path=manifest_path,
                               want_manifest=True, **source)
    doc = exports.gpai_forms(report, path=_model_path(checkpoint, model), manifest=manifest, base_model=base_model,
                             base_compute=base_compute)
    _emit(exports.render_gpai(doc, chosen), out)


COMMANDS = [export_group]
