"""Compliance exports of a verified checkpoint: the provenance section of a Hugging Face model card and EU AI Act
Annex IV technical documentation (docs/compliance.md).

Both are built from the publishable copy of a verify report (`provenance.report.publishable`: no per-step loss, no
local path, no credential) and refuse a report that is not `verified`: a model card or a technical file must never
carry a provenance claim the verifier did not make. Annex IV also reads the run manifest the report verified (its
digest is on chain), fetched from the store or given as a file, and checked against that digest before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._export import annex as _annex
from provenance._export import card as _card
from provenance._export import render as _render
from provenance._export.annex import AnnexIV
from provenance.errors import FormatError, ProvenanceError, UsageError
from provenance.hashing import Digest
from provenance.report import publishable, scrub

__all__ = ["ANNEX_FORMATS", "AnnexIV", "NotExportable", "annex_iv", "annex_iv_format", "fetch_manifest",
           "load_manifest", "load_report", "model_card", "render_annex_iv", "require_verified",
           "verify_for_export"]

ANNEX_FORMATS = ("md", "html", "json")


class NotExportable(ProvenanceError):
    """The report is not `verified`: nothing may be exported from it. Exits with the verdict's own code."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def require_verified(report: Any) -> dict[str, Any]:
    """The publishable copy of `report`; NotExportable (with the verdict's exit code) unless it is verified."""
    data = publishable(report)
    if data["verdict"] != "verified" or data["run"] is None:
        steps = f" ({data['next_steps'][0]})" if data["next_steps"] else ""
        raise NotExportable(f"refusing to export: verification says {data['level']['text']}{steps}",
                            exit_code=int(data["exit_code"]) or 1)
    return data


def model_card(report: Any) -> str:
    """README.md text for a verified report: Hub metadata with a `prov:` block, and the provenance section."""
    return _card.card(require_verified(report))


def annex_iv(report: Any, *, manifest: dict[str, Any] | None = None) -> AnnexIV:
    """The Annex IV document of a verified report; `manifest` (checked by `load_manifest`/`fetch_manifest`) fills
    in what only the run manifest records (optimizer, LoRA, data preparation, compute)."""
    data = require_verified(report)
    return _annex.build(data, None if manifest is None else scrub(manifest))


def render_annex_iv(doc: AnnexIV, fmt: str = "md") -> str:
    """The document as `md` (Markdown), `html` (a self-contained page) or `json`."""
    renderers = {"md": _render.markdown, "html": _render.page, "json": _render.as_json}
    if fmt not in renderers:
        raise UsageError(f"unknown Annex IV format {fmt!r}: use one of {', '.join(ANNEX_FORMATS)}")
    return renderers[fmt](doc)


def annex_iv_format(path: Path | None, fmt: str | None) -> str:
    """The format asked for: `fmt` if given, else the output file's suffix (.md, .html, .json), else Markdown."""
    if fmt is not None:
        return fmt
    suffix = path.suffix.lower().lstrip(".") if path is not None else "md"
    aliases = {"markdown": "md", "htm": "html"}
    found = aliases.get(suffix, suffix)
    if found not in ANNEX_FORMATS:
        raise UsageError(f"{path}: cannot tell the format from the file name: name it .md, .html or .json, or "
                         "pass --format")
    return found


def load_report(path: Path) -> dict[str, Any]:
    """A report saved with `prov verify --json`, validated (v1 or v2)."""
    try:
        data = canonical.load_json(path.read_bytes(), source=str(path))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such report file") from None
    except (OSError, FormatError) as exc:
        raise FormatError(f"{path}: not a JSON verify report ({' '.join(str(exc).split())})") from None
    return publishable(data)


def _checked_manifest(data: bytes, report: dict[str, Any], source: str) -> dict[str, Any]:
    from provenance.manifest import decode_run_manifest

    expected = Digest.parse(report["run"]["manifest_digest"])
    found = Digest.of(data)
    if found != expected:
        raise NotExportable(f"{source}: this is not the run manifest the report verified (expected {expected}, "
                            f"found {found})", exit_code=1)
    return decode_run_manifest(data, source=source)


def load_manifest(path: Path, report: Any) -> dict[str, Any]:
    """The run manifest file `path` (run.json), refused unless its digest is the one the report verified."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the run manifest ({exc.strerror or exc})") from None
    return _checked_manifest(data, require_verified(report), str(path))


def fetch_manifest(store: Any, report: Any) -> dict[str, Any]:
    """The run manifest from the store, by the CID the report names, checked against the registered digest."""
    data = require_verified(report)
    cid = data["run"]["manifest_cid"]
    return _checked_manifest(store.get_bytes(cid), data, f"run manifest {cid}")


def verify_for_export(path: Path, *, registry: Any, store: Any, options: Any = None,
                      with_manifest: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Verify `path` (`provenance.verify.verify`) and return the publishable report, refusing anything not
    verified, and (if asked) the run manifest from the same store."""
    from provenance.verify import verify

    report = require_verified(verify(path, registry=registry, store=store, options=options))
    return report, fetch_manifest(store, report) if with_manifest else None
