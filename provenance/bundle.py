"""The hand-off bundle: one standard CAR v1 file holding every public artifact `prov verify` reads from the store
(the run manifest, every anchored checkpoint directory with its step-log segment), plus a small coordinates
document saying which chain, genesis block and registry the run is anchored on.

Why: an auditor on another machine has no access to the trainer's store (the default one is a directory under
the trainer's `.prov`). `prov bundle RUN_DIR --out run.car` writes the file; `prov verify FILE --bundle run.car`
imports it into a temporary store (every block re-hashed against its CID on import) and pins chain id, genesis and
registry from it. The bundle carries no trust of its own: the auditor's own `--rpc` must answer for that chain,
and every artifact is checked against what the chain committed, exactly as if fetched from IPFS.

The coordinates document (`prov.bundle.v1`, canonical JSON, the CAR's first root, a raw block):
`{"format", "chain_id", "genesis_hash", "registry", "run_id", "rpc_hint", "run_manifest": CID, "checkpoints":
[CID, ...]}`; the other roots are the run manifest and the checkpoint directories, so `ipfs dag import run.car`
pins them all. The private auditor kit (secrets, per-step statistics) is never in the bundle: `write_kit` copies it
into a separate directory marked private.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.car import CarReader, write_car
from provenance.cid import RAW, Cid, CidMismatch, parse_cid
from provenance.errors import FormatError, UsageError

BUNDLE_FORMAT = "prov.bundle.v1"
MAX_COORDINATES = 64 << 10  # the coordinates document is small; refuse anything pretending otherwise
KIT_MARKER = "PRIVATE-AUDITOR-KIT.txt"
KIT_FILES = ("secrets.json", "stats.jsonl", "data.jsonl")  # data.jsonl: a canary run's training set
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_RUN_ID = re.compile(r"^[0-9a-f]{64}$")
_HINT = re.compile(r"^[!-~]{1,512}$")  # shown to the auditor in messages: no control, bidi or space characters


@dataclass(frozen=True)
class Coordinates:
    """Where the run is anchored, as the trainer saw it: pins for the auditor's own node, never a substitute."""

    chain_id: int
    genesis_hash: str
    registry: str
    run_id: str
    rpc_hint: str | None
    run_manifest: str
    checkpoints: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": BUNDLE_FORMAT, "chain_id": self.chain_id, "genesis_hash": self.genesis_hash,
                "registry": self.registry, "run_id": self.run_id, "rpc_hint": self.rpc_hint,
                "run_manifest": self.run_manifest, "checkpoints": list(self.checkpoints)}

    @classmethod
    def from_json(cls, doc: Any, *, source: str) -> Coordinates:
        """Read at a trust boundary: every field typed and shaped, or a one-line FormatError naming `source`."""
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise FormatError(f"{source}: not a {BUNDLE_FORMAT} coordinates document (format {str(found)[:60]!r})")
        try:
            chain_id, genesis, registry = doc["chain_id"], doc["genesis_hash"], doc["registry"]
            run_id, hint, manifest, checkpoints = doc["run_id"], doc["rpc_hint"], doc["run_manifest"], \
                doc["checkpoints"]
        except KeyError as exc:
            raise FormatError(f"{source}: coordinates lack {exc.args[0]!r}") from None
        if not canonical.is_count(chain_id) or chain_id < 1:
            raise FormatError(f"{source}: chain_id must be a positive integer")
        for value, shape, what in ((genesis, _HASH, "genesis_hash"), (registry, _ADDRESS, "registry"),
                                   (run_id, _RUN_ID, "run_id")):
            if not isinstance(value, str) or not shape.match(value):
                raise FormatError(f"{source}: {what} is malformed")
        if hint is not None and (not isinstance(hint, str) or not _HINT.match(hint)):
            raise FormatError(f"{source}: rpc_hint must be a URL (printable ASCII, no spaces) or null")
        if not isinstance(checkpoints, list) or not checkpoints or len(checkpoints) > 1_000_000:
            raise FormatError(f"{source}: checkpoints must be a non-empty list of CIDs")
        cids = [manifest, *checkpoints]
        for cid in cids:
            if not isinstance(cid, str):
                raise FormatError(f"{source}: artifact CIDs must be strings")
            parse_cid(cid)
        return cls(chain_id, genesis, registry, run_id, hint, manifest, tuple(checkpoints))


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    coordinates: Coordinates
    blocks: int
    bytes: int


# --- writing (the trainer) ----------------------------------------------------------------------------------


def _anchored(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The outbox's target and its done jobs, or a UsageError saying what to run first."""
    box = run_dir / "outbox"
    target_file = box / "target.json"
    if not target_file.is_file():
        raise UsageError(f"{run_dir}: this run was never anchored (no outbox): train with anchoring on, or run "
                         f"`prov anchor flush {run_dir}` first")
    target = canonical.decode(target_file.read_bytes(), source=str(target_file))
    jobs = [canonical.decode(p.read_bytes(), source=str(p)) for p in sorted((box / "jobs").glob("*.json"))]
    if not isinstance(target, dict) or not all(isinstance(j, dict) for j in jobs):
        raise FormatError(f"{box}: outbox files are malformed")
    pending = [j for j in jobs if j.get("state") != "done" and j.get("kind") in ("register", "checkpoint")]
    if pending:
        raise UsageError(f"{run_dir}: {len(pending)} anchoring job(s) not done yet: run `prov anchor flush "
                         f"{run_dir}` and bundle again")
    return target, [j for j in jobs if j.get("state") == "done"]


def coordinates_of(run_dir: Path, *, rpc_url: str | None = None, rpc_hint: str | None = None) -> Coordinates:
    """The run's coordinates from its outbox and its chain (`rpc_url` overrides the recorded RPC to ask)."""
    from provenance.chain import connect

    target, jobs = _anchored(run_dir)
    chain, registry = target.get("chain"), target.get("registry")
    if chain in (None, "tester") or not registry:
        raise UsageError(f"{run_dir}: anchored on {chain or 'no chain'}, which no auditor can reach: anchor on a "
                         "real chain (`prov chain up` / an RPC URL) to hand the run over")
    manifest = [j["cid"] for j in jobs if j.get("kind") == "register" and j.get("cid")]
    checkpoints = [j["cid"] for j in sorted((j for j in jobs if j.get("kind") == "checkpoint" and j.get("cid")),
                                             key=lambda j: int(j["index"]))]
    if not manifest or not checkpoints:
        raise UsageError(f"{run_dir}: no stored run manifest or checkpoint recorded by the outbox: run "
                         f"`prov anchor flush {run_dir}` first")
    run_doc = canonical.decode((run_dir / "run.json").read_bytes(), source=str(run_dir / "run.json"))
    client = connect(rpc_url or str(chain), registry=str(registry), use_config=False)
    info = client.chain_info()
    return Coordinates(chain_id=int(info.chain_id), genesis_hash=str(info.genesis_hash), registry=str(registry),
                       run_id=str(run_doc["run_id"]), rpc_hint=rpc_hint if rpc_hint is not None else str(chain),
                       run_manifest=manifest[0], checkpoints=tuple(checkpoints))


def write_bundle(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, store: Any,
                 rpc_url: str | None = None, rpc_hint: str | None = None) -> BundleSummary:
    """Write RUN_DIR's public artifacts, read from `store` (the one the run was anchored to), as one CAR v1."""
    from provenance._store import dag

    root = Path(run_dir)
    coords = coordinates_of(root, rpc_url=rpc_url, rpc_hint=rpc_hint)
    doc = canonical.encode(coords.to_json())
    doc_cid = Cid.of(RAW, doc)
    roots = [doc_cid, parse_cid(coords.run_manifest), *(parse_cid(c) for c in coords.checkpoints)]
    seen: set[bytes] = set()
    total = [0]

    def blocks() -> Iterator[tuple[Cid, bytes]]:
        yield doc_cid, doc
        for artifact in roots[1:]:
            for cid, block in dag.iter_dag(store.get_block, artifact):
                key = bytes(cid)
                if key not in seen:
                    seen.add(key)
                    total[0] += len(block)
                    yield cid, block

    count = write_car(out, roots, blocks())
    return BundleSummary(Path(out), coords, count, total[0] + len(doc))


def write_kit(run_dir: str | os.PathLike[str], kit_dir: str | os.PathLike[str]) -> list[Path]:
    """Copy the run's private auditor kit (secrets.json, stats.jsonl, and for a run trained with canaries its
    data.jsonl: the trainer's records followed by the member canaries, the data such a run is verified with) into
    `kit_dir` (created 0700, files 0600), with a marker file saying it is private. Never part of the bundle."""
    source, dest = Path(run_dir), Path(kit_dir)
    missing = [name for name in KIT_FILES if not (source / name).is_file()]
    if "secrets.json" in missing:
        raise UsageError(f"{source}: no secrets.json: the kit needs the run's secrets (dataset key, noise seed)")
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"{dest}: exists and is not empty: give a new directory for the private kit")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    written = []
    for name in KIT_FILES:
        if name in missing:
            continue
        target = dest / name
        shutil.copyfile(source / name, target)
        os.chmod(target, 0o600)
        written.append(target)
    marker = dest / KIT_MARKER
    marker.write_text("PRIVATE: the auditor kit of one prov run. secrets.json holds the dataset key and the DP "
                      "noise seed\n(publishing the seed would let anyone subtract the noise and undo differential "
                      "privacy); stats.jsonl\nholds per-step loss; data.jsonl, when present, is the run's training "
                      "data (canaries included).\nHand it only to the auditor, over a private channel. Never "
                      "publish it.\n", encoding="utf-8")
    os.chmod(marker, 0o600)
    return [*written, marker]


# --- reading (the auditor) ----------------------------------------------------------------------------------


def open_bundle(path: str | os.PathLike[str], store_dir: str | os.PathLike[str]) -> Coordinates:
    """Import the bundle at `path` into a local store at `store_dir` (every block verified against its CID) and
    return its coordinates, checked to name exactly the artifacts the CAR's roots hold."""
    from provenance._store.local import LocalStore

    source = Path(path)
    if not source.is_file():
        raise UsageError(f"{source}: no such bundle file (the trainer writes it with `prov bundle RUN_DIR --out "
                         "run.car`)")
    with CarReader(source) as reader:
        roots = list(reader.roots)
    if not roots or roots[0].codec != RAW:
        raise FormatError(f"{source}: not a prov bundle (its first root is not a coordinates document)")
    store = LocalStore(Path(store_dir), durable=False)  # a throwaway copy: no fsync
    try:
        store.import_car(source)
    except CidMismatch as exc:  # damaged in transit or on disk: no verdict on the model can come from it
        raise FormatError(f"{source}: the bundle is damaged ({exc.cid} does not match its CID); ask the trainer for "
                          "a new copy") from None
    name = f"{source} (coordinates)"
    raw = store.get_bytes(str(roots[0]), max_size=MAX_COORDINATES)
    coords = Coordinates.from_json(canonical.decode(raw, source=name, max_size=MAX_COORDINATES), source=name)
    named = [coords.run_manifest, *coords.checkpoints]
    if [str(parse_cid(c)) for c in named] != [str(r) for r in roots[1:]]:
        raise FormatError(f"{source}: its coordinates name other artifacts than the CAR's roots")
    return coords


@dataclass(frozen=True)
class Pins:
    """What `prov verify --bundle` pins: the auditor's own values where given (they must agree with the bundle)."""

    chain_id: int
    genesis_hash: str
    registry: str


def pins_for(coords: Coordinates, *, chain_id: int | None, genesis_hash: str | None, registry: str | None,
             expected_registry: str | None) -> Pins:
    """The bundle's chain id, genesis and registry, refusing any the auditor gave that differ (a usage error: the
    auditor is holding a bundle of another run than they think)."""
    for mine, theirs, flag in ((chain_id, coords.chain_id, "--expect-chain-id"),
                               (genesis_hash, coords.genesis_hash, "--expect-genesis"),
                               (registry, coords.registry, "--registry"),
                               (expected_registry, coords.registry, "--expect-registry")):
        if mine is not None and str(mine).lower() != str(theirs).lower():
            raise UsageError(f"{flag} {mine} differs from the bundle's {theirs}: this bundle is of a run anchored "
                             "elsewhere; drop the option or use the right bundle")
    return Pins(coords.chain_id, coords.genesis_hash, coords.registry)
