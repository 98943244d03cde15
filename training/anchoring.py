"""The trainer's side of anchoring: it hands work to `provenance.anchor.Outbox` and never waits on the network.

Calls, in order: `Outbox.open(run_dir, store=..., chain=...)`; `enqueue_run(run_id=<32 bytes>, manifest_path=...)`
before step 0, then `wait_registered(timeout=anchor.register_timeout)` (training starts either way);
`enqueue_checkpoint(index=i, checkpoint_dir=...)` after each checkpoint is in place (the outbox reads `step`,
`log_size`, `log_root`, `epsilon` from its state.json); `status_line()` for the progress bar; when every step is
done and `anchor.finalize` is on (the default), `finalize_run`: the `prov.merged-dir.v1` manifest digest of the
last checkpoint merged into the base model (`prov.merge.v1` tensors plus every other file a loader reads, as `prov
merge` writes them), recorded in `RUN_DIR/merged.json` and queued with `enqueue_finalize(digest)`
(the run is closed on chain with it, after its last checkpoint); at the end `flush(timeout=anchor.flush_timeout)`
and `close()`.

Destination (`resolve_target`): the configured `anchor.chain` (`"tester"` or an RPC URL) and `anchor.store`
(`"local"`, `"kubo:<addr>"`); when left out, the project config's `chain.rpc_url`/`chain.registry` and
`store.spec`, else the local store; with no chain anywhere an anchored run is refused (`prov chain up`, `--chain URL`,
or `--chain tester` explicitly, which warns that the chain is throw-away). With anchoring disabled
(`anchor.enabled = false`, `--no-anchor`) a `NullOutbox` records nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from provenance import canonical
from provenance.errors import FormatError, UsageError
from provenance.fsutil import atomic_write
from provenance.hashing import Digest, hash_file
from training.config import AnchorConfig

MERGED_FILE = "merged.json"
MERGED_RECORD_FORMAT = "prov.merged.v1"  # runs finalised with the merged tensor digest alone (read only)
MERGED_RECORD_FORMAT_V2 = "prov.merged.v2"  # adds the prov.merged-dir.v1 manifest the finalisation commits


class OutboxLike(Protocol):
    def enqueue_run(self, *, run_id: bytes, manifest_path: Path) -> None: ...
    def wait_registered(self, *, timeout: float) -> bool: ...
    def enqueue_checkpoint(self, *, index: int, checkpoint_dir: Path) -> None: ...
    def enqueue_finalize(self, merged_tensor_digest: Any = None) -> None: ...
    def status_line(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    def flush(self, *, timeout: float) -> bool: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


def chain_warnings(config: AnchorConfig) -> list[str]:
    """What the trainer must say about where it anchors: the throw-away in-process chain, when named."""
    if not config.enabled:
        return []
    chain, _, _ = resolve_target(config)
    return [TESTER_WARNING] if chain == "tester" else []


class NullOutbox:
    """Anchoring off: every call succeeds at once and nothing leaves the machine."""

    enabled = False  # nothing is anchored: a run trained so is never reported "anchored"

    def __init__(self, reason: str = "anchoring off") -> None:
        self.reason = reason
        self.checkpoints: list[int] = []
        self.finalized = False

    def enqueue_run(self, *, run_id: bytes, manifest_path: Path) -> None:
        return None

    def wait_registered(self, *, timeout: float) -> bool:
        return True

    def enqueue_checkpoint(self, *, index: int, checkpoint_dir: Path) -> None:
        self.checkpoints.append(index)

    def enqueue_finalize(self, merged_tensor_digest: Any = None) -> None:
        self.finalized = True

    def status_line(self) -> str:
        return self.reason

    def flush(self, *, timeout: float) -> bool:
        return True

    def start(self) -> None:
        pass

    def close(self) -> None:
        return None


NO_CHAIN = ("anchoring needs a chain and none is configured: start a local one with `prov chain up` (it deploys the "
            "registry), pass --chain RPC_URL, pass --chain tester for a throw-away in-process chain, or train with "
            "--no-anchor")
TESTER_WARNING = ("anchoring on the in-process test chain (--chain tester): it vanishes when this process exits, so "
                  "nobody can ever verify this run against it; use `prov chain up` or a real chain for runs you keep")


def resolve_target(config: AnchorConfig) -> tuple[str, str | None, str]:
    """(chain, registry address, store) for an enabled config: omitted values come from the project config
    (`chain.rpc_url` + `chain.registry`, `store.spec`; the store falls back to "local"). With no chain given or
    configured it refuses (UsageError): the in-process "tester" chain is used only when named explicitly."""
    from provenance.config import get_section

    chain_section = get_section("chain")
    chain = config.chain or chain_section.get("rpc_url")
    if not chain:
        raise UsageError(NO_CHAIN)
    registry = chain_section.get("registry") if chain == chain_section.get("rpc_url") else None
    store = config.store or get_section("store").get("spec") or "local"
    return str(chain), registry, str(store)


def expected_owner(config: AnchorConfig) -> str | None:
    """The account the outbox will register the run from, when it is known without asking the network (recorded
    as the manifest's `owner`): the keystore's (`--keystore`/`$PROV_KEYSTORE`) or `$PROV_PRIVATE_KEY`'s address, or
    anvil's dev account 0 on the project's local chain (chain id 31337 in the project config). None when anchoring
    is off or the key is only known later (the in-process tester chain)."""
    if not config.enabled:
        return None
    from provenance._chain import keys
    from provenance._chain.errors import SignerError
    from provenance.config import get_section

    chain, _, _ = resolve_target(config)
    section = get_section("chain")
    chain_id = section.get("chain_id") if chain == section.get("rpc_url") else None
    if chain == "tester" and not keys.key_given():
        return None
    try:
        return keys.resolve(None, chain_id=chain_id).address
    except keys.WellKnownKey:
        raise  # a dev key for a chain that is not a dev chain: refused before training, not at registration
    except SignerError as exc:
        if keys.key_given():
            # a key was given and does not open (wrong password, unreadable keystore): never another owner instead
            raise UsageError(f"the signing key for this run's anchors: {exc}") from None
        return None


def open_outbox(run_dir: Path, config: AnchorConfig, *, reuse_target: bool = False,
                start: bool = True) -> OutboxLike:
    """The run's outbox with its sending thread started (unless `start` is False: the caller calls `start()` once
    it has done its own imports), or a NullOutbox when anchoring is disabled.

    `reuse_target` (resume): keep the destination recorded in `outbox/target.json` when the run was started.
    """
    if not config.enabled:
        return NullOutbox()
    from provenance.anchor import Outbox  # owns retries, backoff and idempotency

    chain, registry, store = resolve_target(config)
    outbox = Outbox.open(run_dir, chain=chain, registry=registry, store=store, reuse_target=reuse_target)
    if start:
        outbox.start()
    return outbox


def finalize_run(run_dir: Path, outbox: OutboxLike, *, model_dir: Path, checkpoint_dir: Path,
                 base_model_digest: str) -> Digest:
    """Close a finished run: merge its last checkpoint into the base model by `prov.merge.v1` (streamed, torch-free),
    record the merged tensor digest in `merged.json` and queue the finalisation committing it, so `prov verify` finds
    the merged model the way it finds an adapter."""
    from provenance.merge import ADAPTER_CONFIG_FILE, ADAPTER_FILE, MERGE_FORMAT, merged_manifest

    adapter = checkpoint_dir / ADAPTER_FILE
    # prov.merged-dir.v1: the finalisation binds every file a loader reads from the merged directory, not only the
    # tensors (config, tokenizer, generation settings: provenance.mergedir)
    manifest = merged_manifest(model_dir, adapter, checkpoint_dir / ADAPTER_CONFIG_FILE)
    digest = manifest.digest()
    record = {"adapter": str(hash_file(adapter)), "base_model": base_model_digest,
              "checkpoint": int(checkpoint_dir.name), "format": MERGED_RECORD_FORMAT_V2, "recipe": MERGE_FORMAT,
              "tensor_digest": str(manifest.tensors), "manifest": manifest.to_json(),
              "manifest_digest": str(digest)}
    atomic_write(run_dir / MERGED_FILE, canonical.encode(record))
    outbox.enqueue_finalize(digest)
    return digest


def read_merged(run_dir: Path) -> Digest:
    """What a finished run's finalisation commits, as recorded in `merged.json`: the `prov.merged-dir.v1`
    manifest digest (prov.merged.v2), or the merged tensor digest of a run finalised before it (prov.merged.v1)."""
    path = run_dir / MERGED_FILE
    missing = FormatError(f"{path}: missing (the run did not finish, or was trained with anchor.finalize = false)")
    try:
        doc = canonical.read_document(path, MERGED_RECORD_FORMAT_V2, what="record", missing=missing)
        return Digest.parse(str(doc.get("manifest_digest")))
    except FormatError as exc:
        if exc is missing:
            raise
    doc = canonical.read_document(path, MERGED_RECORD_FORMAT, what="record", missing=missing)
    return Digest.parse(str(doc.get("tensor_digest")))
