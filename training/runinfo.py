"""The run directory's documents: the run manifest (`run.json`), local settings (`local.json`), and the run id.

Run directory (default `<state_dir>/runs/<run_id[:16]>`): `run.json` (`prov.run.v2`, canonical JSON),
`secrets.json` (0600), `stats.jsonl` (0600: the private per-step statistics), `local.json` (this machine's paths and
anchoring settings: not committed, needed by `--resume`), `steps.jsonl` (the step log), `checkpoints/<index:06d>/`,
and `outbox/` (owned by `provenance.anchor`). A torchrun run also keeps `launch.log` (the launcher's output). A run
trained with canaries (`prov train --canaries M`) keeps `canaries.json` (0600, private) and `data.jsonl` (its
training data: the user's records, then the member canaries), and its manifest has a `canaries` section.

`prov.run.v2` (docs/formats.md) adds to v1: `formats` (the format names of batch, noise, stats, step and
trainstate), `owner` (the account that will register the run, or null when not known at start),
`training.world_size`, `training.batch.physical_batch_size` and the determinism profile. v1 manifests are still read.

Run id: `SHA-256(b"prov.run_id.v1\\x00" || canonical(manifest without "run_id"))`, as 64 hex. Fresh secrets make
it unique per run (their commitments are in the manifest); the same secrets and config give the same id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.batches import BATCH_FORMAT
from provenance.errors import FormatError, UsageError
from provenance.fsutil import atomic_write
from provenance.manifest import ADAPTER_FORMAT, RUN_FORMAT_V2, decode_run_manifest, encode_run_manifest
from provenance.mergedir import DIR_FORMAT as MERGED_DIR_FORMAT
from provenance.records import STATS_FORMAT_V2, STEP_FORMAT_V3
from provenance.secrets import ANCHORED_FORMATS
from training.config import AnchorConfig, _build

RUN_FORMAT = RUN_FORMAT_V2
STATE_FORMAT = "prov.trainstate.v2"
FORMATS = {"batch": BATCH_FORMAT, "noise": "prov.noise.v2", "stats": STATS_FORMAT_V2, "step": STEP_FORMAT_V3,
           "trainstate": STATE_FORMAT, "adapter": ADAPTER_FORMAT,
           "merged": MERGED_DIR_FORMAT}
RUN_FILE = "run.json"
LOCAL_FILE = "local.json"
LOCAL_FORMAT = "prov.runlocal.v1"
RUN_ID_LABEL = b"prov.run_id.v1\x00"


def run_id_of(body: dict[str, Any]) -> str:
    """The run id of a manifest body (any `run_id` key in it is ignored)."""
    rest = {k: v for k, v in body.items() if k != "run_id"}
    return hashlib.sha256(RUN_ID_LABEL + canonical.encode(rest)).hexdigest()


def build_manifest(*, base_model: dict[str, Any], dataset: dict[str, Any], secrets: dict[str, str],
                   training: dict[str, Any], config: dict[str, Any], software: dict[str, str],
                   determinism: dict[str, Any], owner: str | None, anchored_keys: bool = False,
                   canaries: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the prov.run.v2 document and fill in its run id. `anchored_keys` (anchored runs, issue #23): the
    sampler's and the noise's keys derive from the registration's block hash (`prov.poisson.v2`, `prov.noise.v3`,
    provenance.secrets); a run started with anchoring off keeps `prov.noise.v2` (pre-registration grinding possible).
    `canaries` (runs trained with `--canaries M`, M > 0): the canaries' commitment section; absent otherwise."""
    body: dict[str, Any] = {
        "base_model": base_model,
        "checkpoint_format": STATE_FORMAT,
        "config": config,
        "dataset": dataset,
        "determinism": determinism,
        "format": RUN_FORMAT,
        "formats": dict(FORMATS) | (dict(ANCHORED_FORMATS) if anchored_keys else {}),
        "owner": owner,
        "secrets": secrets,
        "software": {"versions": software},
        "training": training,
    }
    if canaries is not None:
        body["canaries"] = canaries
    body["run_id"] = run_id_of(body)
    return body


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    path = run_dir / RUN_FILE
    atomic_write(path, encode_run_manifest(manifest))
    return path


def decode_manifest(data: bytes, *, source: str) -> dict[str, Any]:
    """Parse and check a run manifest (v1 or v2) including its run id."""
    manifest = decode_run_manifest(data, source=source)
    if run_id_of(manifest) != manifest["run_id"]:
        raise FormatError(f"{source}: run_id does not match the manifest's content (altered manifest)")
    return manifest


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: not a run directory (no {RUN_FILE})") from None
    return decode_manifest(data, source=str(path))


def write_local(run_dir: Path, *, model_dir: Path, data_path: Path, anchor: AnchorConfig) -> None:
    doc = {
        "anchor": {k: (repr(v) if isinstance(v, float) else v) for k, v in vars(anchor).items()},
        "data": str(data_path.resolve()),
        "format": LOCAL_FORMAT,
        "model": str(model_dir.resolve()),
    }
    atomic_write(run_dir / LOCAL_FILE, canonical.encode(doc) + b"\n")


def read_local(run_dir: Path) -> tuple[Path, Path, AnchorConfig]:
    path = run_dir / LOCAL_FILE
    doc = canonical.read_document(path, LOCAL_FORMAT, missing=UsageError(
        f"{run_dir}: no {LOCAL_FILE}; cannot tell where the model and data are"))
    anchor = _build(AnchorConfig, doc.get("anchor", {}), "anchor")
    return Path(doc["model"]), Path(doc["data"]), anchor
