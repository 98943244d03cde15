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
from provenance.errors import FormatError, ProvenanceError, UsageError, one_line
from provenance.hashing import Digest
from provenance.report import publishable, scrub

__all__ = ["ANNEX_FORMATS", "AnnexIV", "NotExportable", "annex_iv", "annex_iv_format", "cyclonedx_bom",
           "fetch_manifest", "gpai_forms", "intoto_statements", "load_manifest", "load_report", "model_card",
           "model_subjects", "render_annex_iv", "render_gpai", "require_verified", "signed_statements",
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


def model_card(report: Any, *, datasets: list[str] | None = None) -> str:
    """README.md text for a verified report: Hub metadata with a `prov:` block, and the provenance section;
    `datasets` names public training data by Hub id (the run itself commits data only by a salted root)."""
    return _card.card(require_verified(report), datasets=datasets)


def annex_iv(report: Any, *, manifest: dict[str, Any] | None = None) -> AnnexIV:
    """The Annex IV document of a verified report; `manifest` (checked by `load_manifest`/`fetch_manifest`) fills
    in what only the run manifest records (optimizer, LoRA, data preparation, compute)."""
    data = require_verified(report)
    return _annex.build(data, _untrusted(manifest))


def _untrusted(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run manifest (the trainer's text) as exports may show it: scrubbed of secrets and paths, every control
    and bidi character an escape (#22), so no form, card or BOM can reorder or rewrite what its reader sees."""
    return None if manifest is None else canonical.escape_strings(scrub(manifest))


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
        raise FormatError(f"{path}: not a JSON verify report ({one_line(exc)})") from None
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


# --- standards exports (docs/compliance.md): in-toto/DSSE, CycloneDX ML-BOM, EU GPAI forms ------------------------


def model_subjects(report: Any, path: Path | None = None) -> list[dict[str, Any]]:
    """The model's files as in-toto ResourceDescriptors (name, sha256): every file of `path` an OpenSSF model
    signature of it covers; without `path`, the report's file and weights digest.

    Every subject a loader reads must be a file the verdict bound, with the digest it bound (`subject.files`: a
    verified report says the lineage of exactly those): a changed config, an extra weights file or a directory that
    merely contains the verified adapter is refused. A directory must hold every bound file; files no loader reads
    (documentation, hidden files, `prov-merged.json`) may be subjects, as a model signature covers them too. Reports
    written before `subject.files` bind the weights file alone."""
    from provenance._export import statements

    data = require_verified(report)
    if path is None:
        return statements.subjects_of_report(data)
    subjects = statements.subjects_of(path)
    subject = data["subject"]
    weights = str(subject["weights_digest"]).removeprefix("sha256:")
    listed = subject.get("files")
    if not path.is_dir():  # a file: the verified weights themselves
        if subjects[0]["digest"]["sha256"] != weights:
            raise NotExportable(f"{path}: not the verified file (its digest is not the verified weights digest "
                                f"sha256:{weights})", exit_code=1)
        return subjects
    if not isinstance(listed, list):
        raise NotExportable(f"{path}: this report predates subject.files (the list of files a verdict binds), so "
                            f"only its weights file can be exported with it: give {subject['path']} itself, or "
                            "verify again with this prov", exit_code=1)
    bound = {f["path"]: str(f["digest"]).removeprefix("sha256:") for f in listed}
    for item in subjects:
        name = item["name"]
        if bound.get(name) == item["digest"]["sha256"] or (name not in bound and _unread(name)):
            continue
        why = "differs from the verified file of that name" if name in bound else "is not a file the verdict binds"
        raise NotExportable(f"{path / name}: {why}; export the verified model itself (the report binds "
                            f"{_names(bound)})", exit_code=1)
    missing = sorted(set(bound) - {item["name"] for item in subjects})
    if missing:
        raise NotExportable(f"{path}: lacks {', '.join(missing)} of the verified files: export the verified model "
                            "itself", exit_code=1)
    return subjects


def _names(bound: dict[str, str]) -> str:
    names = sorted(bound)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _unread(name: str) -> bool:
    """A file no supported loader reads (provenance.loaders): in a hidden folder, top-level documentation, or prov's
    own merged-directory manifest (checked against the chain by the verifier, never loaded)."""
    from provenance import mergedir
    from provenance.loaders import is_documentation

    if "/" in name:  # a sub-folder: PEFT reads one with subfolder=, so only hidden folders (.git/, .cache/) are unread
        return name.startswith(".")
    return is_documentation(name) or name == mergedir.MANIFEST_FILE


def intoto_statements(report: Any, *, path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The training lineage and the DP evidence as two in-toto Statements (`lineage`, `dp`) about the same
    subjects."""
    from provenance._export import statements

    data = require_verified(report)
    subjects = model_subjects(data, path)
    return {"lineage": statements.lineage_statement(data, subjects), "dp": statements.dp_statement(data, subjects)}


def signed_statements(report: Any, *, path: Path | None = None, key: str = "trainer",
                      password: str | None = None) -> dict[str, dict[str, Any]]:
    """`intoto_statements`, each in a DSSE envelope signed with the trainer's P-256 key (provenance.signing)."""
    from provenance._export import statements

    return {name: statements.sign_envelope(st, key=key, password=password)
            for name, st in intoto_statements(report, path=path).items()}


def cyclonedx_bom(report: Any, *, path: Path | None = None, manifest: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The CycloneDX 1.6 ML-BOM of a verified report, validated by cyclonedx-python-lib's schema validator."""
    from provenance._export import cyclonedx

    data = require_verified(report)
    return cyclonedx.bom(data, subjects=canonical.escape_strings(model_subjects(data, path)),
                         manifest=_untrusted(manifest))


def _weights_files(path: Path | None) -> list[Path]:
    if path is None:
        return []
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.safetensors") if p.is_file() and not p.is_symlink())


def gpai_forms(report: Any, *, path: Path | None = None, manifest: dict[str, Any] | None = None,
               base_model: Path | None = None, base_compute: float | None = None) -> dict[str, Any]:
    """The EU GPAI Model Documentation Form items and public training-content summary fields the run proves.
    Parameter counts come from safetensors headers: the adapter at `path`, the base model directory
    `base_model`; `base_compute` is the base model's training compute in FLOPs, as its provider states it."""
    from provenance._export import gpai

    data = require_verified(report)
    if base_compute is not None and not base_compute > 0:
        raise UsageError(f"--base-compute must be a positive number of FLOPs, got {base_compute}")
    files = _weights_files(path)
    merged = data["subject"]["kind"] == "merged"
    trainable = gpai.parameter_count(files) if files and not merged else None
    base = gpai.parameter_count(_weights_files(base_model)) if base_model is not None else None
    if merged and files and base is None:  # a merged model has the base model's shapes: count them there
        base = gpai.parameter_count(files)
    return gpai.build(data, manifest=_untrusted(manifest), trainable=trainable, base_params=base,
                      base_compute=base_compute, subjects=canonical.escape_strings(model_subjects(data, path)))


def render_gpai(doc: dict[str, Any], fmt: str = "md") -> str:
    """The GPAI forms as Markdown (`md`) or JSON (`json`)."""
    from provenance._export import gpai

    if fmt not in ("md", "json"):
        raise UsageError(f"unknown GPAI form format {fmt!r}: use md or json")
    return gpai.markdown(doc) if fmt == "md" else gpai.as_json(doc)
