"""The anchoring outbox: stores and anchors a run's artifacts without ever blocking or killing training.

Jobs live as canonical-JSON files in `<run_dir>/outbox/jobs/` (one per action, numbered in the order they must
reach the chain: the run's registration, then checkpoints 0, 1, 2, ...). A worker thread sends them in order,
retrying transient failures (unreachable node, timeout) with exponential backoff capped at `MAX_BACKOFF`;
a permanent failure (a revert from the registry, a store refusing content) stops the queue and is shown by
`prov anchor status`. Every job is idempotent: before sending, the worker asks the chain whether the same
registration/checkpoint is already there (a crash between sending and recording "done" is safe), so nothing is
ever sent twice. Jobs survive restarts; `prov anchor flush RUN_DIR` (or a resumed `prov train`) finishes them.
One process at a time works a run's outbox (an exclusive `flock` on `outbox/lock`).

Finality (provenance/finality.py): a job is `done` ("sent") at its receipt and `final` once its block is settled
(0 confirmations on a development chain, N configured, or the node's `finalized` tag). A receipt is no promise: a
chain reorganisation can drop the block. `recheck()` (run by `prov anchor status`, `prov anchor flush`, and the
worker of a resumed trainer before it sends anything) asks the registry what it stores of the run — never the
remembered transaction hashes — and marks each sent job whose record is gone `dropped`; the worker re-sends dropped
jobs in order like pending ones (their store content is kept), so nothing recorded is lost.

The destination is recorded in `outbox/target.json` when the outbox is opened: `{"chain": RPC URL | "tester" |
null, "registry": address | null, "store": store spec | null}`; null chain and store mean anchoring is off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError, ProvenanceError, UsageError, one_line
from provenance.finality import Rechecking
from provenance.fsutil import atomic_write
from provenance.hashing import Digest, hash_file
from provenance.manifest import decode_run_manifest, hash_directory

OUTBOX = "outbox"
MAX_BACKOFF = 60.0
@dataclass(frozen=True)
class Target:
    chain: str | None
    registry: str | None
    store: str | None

    @property
    def enabled(self) -> bool:
        return self.chain is not None or self.store is not None


@dataclass
class Job:
    seq: int
    kind: str  # "register" | "checkpoint" | "finalize"
    index: int  # checkpoint index; -1 for the registration and the finalization
    path: str  # run.json or the checkpoint directory, relative to the run directory
    state: str = "pending"  # pending | done | failed
    attempts: int = 0
    error: str = ""
    cid: str = ""
    tx: str = ""
    block: int = 0
    run_key: str = ""  # hex: the run's key on the registry (set once registered; version 2 keys runs by owner)
    merged: str = ""  # finalize: the merged model's tensor digest ("sha256:..."), or "" for none
    final: bool = False  # done and its block settled (provenance.finality); re-checked, may become dropped
    drops: int = 0  # how many times a chain reorganisation dropped it (each time re-sent)

    @property
    def name(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {self.index}"
        return "registration" if self.kind == "register" else "finalization"

    def file(self, jobs_dir: Path) -> Path:
        return jobs_dir / f"{self.seq:06d}-{self.kind}.json"

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("seq", "kind", "index", "path", "state", "attempts", "error",
                                              "cid", "tx", "block", "run_key", "merged", "final", "drops")}


def recorded_target(run_dir: Path) -> Target | None:
    """The destination a run's outbox recorded when it was opened (`outbox/target.json`), or None before that."""
    path = run_dir / OUTBOX / "target.json"
    if not path.exists():
        return None
    doc = canonical.decode(path.read_bytes(), source=str(path))
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: not an outbox target (a JSON object)")
    return Target(chain=doc.get("chain"), registry=doc.get("registry"), store=doc.get("store"))


def awaiting_finality(run_dir: Path) -> int:
    """How many of a run's sent commitments are not final yet (read from its job files; 0 when none or no
    outbox): "anchored" then means sent, and `prov anchor status` says when each is final."""
    count = 0
    for path in sorted((run_dir / OUTBOX / "jobs").glob("*.json")):
        try:
            doc = canonical.decode(path.read_bytes(), source=str(path))
        except (OSError, ProvenanceError):
            continue
        if isinstance(doc, dict) and doc.get("state") == "done" and not doc.get("final"):
            count += 1
    return count


class PermanentAnchorError(ProvenanceError):
    """The chain or store refused a job in a way retrying cannot fix."""


def _is_transient(exc: BaseException) -> bool:
    """Reach problems are retried; refusals (a registry revert, a conflicting record, a bad config) are not.
    Each error class says which it is (`ProvenanceError.transient`)."""
    if isinstance(exc, ProvenanceError):
        return exc.transient
    return isinstance(exc, TimeoutError | ConnectionError)


class Outbox(Rechecking):
    """A run's durable anchoring queue. Open with `Outbox.open(run_dir, chain=..., store=...)`."""

    def __init__(self, run_dir: Path, target: Target, lock_fd: int, *, registry_client: Any = None,
                 store_client: Any = None, confirmations: int | None = None) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / OUTBOX
        self.jobs_dir = self.dir / "jobs"
        self.target = target
        self._lock_fd = lock_fd
        self._cond = threading.Condition()
        # one user of the chain and store clients at a time: the in-process test chain (py-evm) is not thread-safe,
        # and the trainer's thread asks for the registration block while the worker sends the next job
        self._client_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()  # the worker's first re-check is done: `pending()` is what is owed
        self._stop = False
        self._registry: Any = registry_client
        self._store: Any = store_client
        self._next_try = 0.0
        self._backoff = 1.0
        self.last_error = ""
        self._confirmations = confirmations
        self._finality: Any = None  # provenance.finality.Finality, decided on first use

    # --- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *, chain: str | None = None, registry: str | None = None,
             store: str | None = None, reuse_target: bool = False, wait_lock: float = 0.0,
             registry_client: Any = None, store_client: Any = None, confirmations: int | None = None) -> Outbox:
        """Open (creating) a run's outbox. With `reuse_target`, the destination recorded earlier is used.

        A chain needs a store (the registry records content addresses): `store` defaults to "local" then.
        `registry_client`/`store_client` inject already-open clients (an in-process "tester" chain exists only
        inside the process that made it, so a trainer and a verifier in one process must share one).
        """
        root = Path(run_dir)
        if chain is not None and store is None:
            store = "local"
        if registry_client is not None:
            chain = chain or registry_client.transport.rpc_url
            registry = registry or registry_client.address
        if not root.is_dir():
            raise UsageError(f"{root}: not a run directory")
        box = root / OUTBOX
        (box / "jobs").mkdir(parents=True, exist_ok=True)
        recorded = recorded_target(root) if reuse_target else None
        if recorded is not None:
            target = recorded
        else:
            target = Target(chain=chain, registry=registry, store=store)
            atomic_write(box / "target.json", canonical.encode(
                {"chain": target.chain, "registry": target.registry, "store": target.store}))
        fd = os.open(box / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_lock
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UsageError(f"{root}: another prov process (a running trainer?) is anchoring this run; "
                                     "wait for it to finish or stop it") from None
                time.sleep(0.2)
        return cls(root, target, fd, registry_client=registry_client, store_client=store_client,
                   confirmations=confirmations)

    # --- queueing -----------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        out = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            doc = canonical.decode(path.read_bytes(), source=str(path))
            out.append(Job(**doc))
        return out

    def _save(self, job: Job) -> None:
        atomic_write(job.file(self.jobs_dir), canonical.encode(job.to_json()))

    def _enqueue(self, kind: str, index: int, path: Path, *, merged: str = "") -> None:
        if not self.target.enabled:
            return
        rel = path.resolve().relative_to(self.run_dir.resolve()).as_posix()
        with self._cond:
            existing = self.jobs()
            if any(j.kind == kind and j.index == index for j in existing):
                return  # already queued (a resumed run re-enqueues): idempotent
            self._save(Job(seq=len(existing), kind=kind, index=index, path=rel, merged=merged))
            self._cond.notify_all()

    def enqueue_run(self, *, run_id: bytes, manifest_path: Path) -> None:
        doc = decode_run_manifest(Path(manifest_path).read_bytes(), source=str(manifest_path))
        if bytes.fromhex(doc["run_id"]) != run_id:
            raise UsageError(f"{manifest_path}: run id does not match the run being anchored")
        self._enqueue("register", -1, Path(manifest_path))

    def enqueue_checkpoint(self, *, index: int, checkpoint_dir: Path) -> None:
        self._enqueue("checkpoint", index, Path(checkpoint_dir))

    def enqueue_finalize(self, merged_tensor_digest: Digest | None = None) -> None:
        """Close the run on chain once everything queued before is anchored (no checkpoint can follow), committing
        the tensor digest of the adapter merged into the base model when one is given."""
        merged = "" if merged_tensor_digest is None else str(merged_tensor_digest)
        self._enqueue("finalize", -1, self.run_dir / "run.json", merged=merged)

    def retry_failed(self) -> list[str]:
        """Put the jobs that stopped anchoring (a refusal: no funds, a wrong key or registry, a revert) back in the
        queue, in order, for an operator who fixed the cause; sending stays idempotent, so nothing is committed
        twice. Returns their names. `prov anchor flush` and `finalize` call it; training never does."""
        again = []
        with self._cond:
            for job in self.jobs():
                if job.state == "failed":
                    job.state, job.cid = "pending", ""  # stored again as it is now (content-addressed: same CID)
                    self._save(job)
                    again.append(job.name)
            self._next_try = 0.0
            self._cond.notify_all()
        return again

    # --- status -------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether this outbox anchors anything (a chain or a store is its destination)."""
        return self.target.enabled

    def pending(self) -> list[Job]:
        return [j for j in self.jobs() if j.state != "done"]

    def status_line(self) -> str:
        if not self.target.enabled:
            return "anchoring off"
        jobs = self.jobs()
        done = sum(j.state == "done" for j in jobs)
        failed = [j for j in jobs if j.state == "failed"]
        if failed:
            return f"anchoring stopped at {failed[0].name}: {failed[0].error}"
        line = f"anchored {done}/{len(jobs)}"
        dropped = [j.name for j in jobs if j.state == "dropped"]
        if dropped:
            line += (f"; {len(dropped)} dropped by a chain reorganisation ({', '.join(dropped)}): `prov anchor flush` "
                     "re-sends them")
        awaiting = sum(j.state == "done" and not j.final for j in jobs)
        if awaiting:
            rule = self._finality.describe() if self._finality is not None else "confirmations"
            line += f" ({done - awaiting} final, {awaiting} awaiting {rule})"
        if self.last_error and done < len(jobs):
            line += f" (retrying: {self.last_error})"
        return line

    def is_registered(self) -> bool:
        return any(j.kind == "register" and j.state == "done" for j in self.jobs())

    # --- the worker ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Send jobs in a background daemon thread until `close()`."""
        if self._thread is None and self.target.enabled:
            self._thread = threading.Thread(target=self._loop, name="prov-outbox", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            self._recheck_quietly()  # a resumed run: re-send what a reorganisation dropped, before anything new
        finally:
            self._started.set()
        while True:
            with self._cond:
                if self._stop:
                    return
                wait = max(0.0, self._next_try - time.monotonic())
                if wait or not self.pending():
                    self._cond.wait(timeout=wait or 1.0)
                    continue
            self.step()

    def step(self) -> bool:
        """Try the first pending job once. Returns True when nothing is left to send."""
        jobs = self.pending()
        if not jobs:
            return True
        job = jobs[0]
        if job.state == "failed":
            return False
        job.attempts += 1
        try:
            with self._client_lock:
                self._send(job)
        except Exception as exc:  # recorded, never raised into training
            message = one_line(exc)
            if _is_transient(exc):
                self.last_error = message
                self._next_try = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                job.error = message
            else:
                job.state, job.error = "failed", message
            self._save(job)
            return False
        try:
            with self._client_lock:
                final = self._final_at_receipt()
        except Exception:  # the node could not say which rule it follows: re-checking decides finality later
            final = False
        job.state, job.error, job.final = "done", "", final
        self._save(job)
        self.last_error = ""
        self._backoff = 1.0
        with self._cond:
            self._cond.notify_all()
        return not self.pending()

    def wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.is_registered():
                left = deadline - time.monotonic()
                if left <= 0 or not self.target.enabled or any(j.state == "failed" for j in self.jobs()):
                    return self.is_registered()
                self._cond.wait(timeout=min(left, 0.2))
        return True

    def _await_first_recheck(self, deadline: float) -> None:
        if self._thread is not None:
            self._started.wait(timeout=max(0.0, deadline - time.monotonic()))

    def flush(self, timeout: float) -> bool:
        """Send everything pending (in this thread when no worker runs). True when all is anchored."""
        deadline = time.monotonic() + timeout
        self._await_first_recheck(deadline)  # what a reorganisation dropped is pending only once re-checked
        while time.monotonic() < deadline:
            jobs = self.pending()
            if not jobs:
                return True
            if any(j.state == "failed" for j in jobs):
                return False
            if self._thread is None:
                wait = self._next_try - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                    continue
                self.step()
            else:
                with self._cond:
                    self._cond.wait(timeout=0.2)
        return not self.pending()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending one job ----------------------------------------------------------------------------

    def _clients(self) -> tuple[Any, Any]:
        if self._store is None and self.target.store is not None:
            from provenance.store import open_store

            self._store = open_store(self.target.store)
        if self._registry is None and self.target.chain is not None:
            from provenance.chain import connect

            registry = connect(self.target.chain, registry=self.target.registry)
            if registry.address is None:
                # Only the in-process tester chain may deploy on the fly; it vanishes with the process.
                if self.target.chain != "tester":
                    raise PermanentAnchorError("no registry address configured: run `prov chain deploy` first")
                registry.deploy()
            self._registry = registry
        return self._store, self._registry

    def _send(self, job: Job) -> None:
        store, registry = self._clients()
        path = self.run_dir / job.path
        if job.kind == "register":
            self._send_registration(job, path, store, registry)
        elif job.kind == "finalize":
            self._send_finalize(job, path, registry)
        else:
            self._send_checkpoint(job, path, store, registry)

    def _send_finalize(self, job: Job, path: Path, registry: Any) -> None:
        if registry is None:
            return
        run_id = bytes.fromhex(decode_run_manifest(path.read_bytes(), source=str(path))["run_id"])
        job.run_key = self._run_key(registry, run_id).hex()
        merged = Digest.parse(job.merged) if job.merged else None
        # idempotent: a crash after sending is safe (the same finalization on chain is "done")
        tx = registry.finalize_run(bytes.fromhex(job.run_key), merged_tensor_digest=merged, idempotent=True)
        job.tx, job.block = tx.tx_hash, tx.block_number

    def _send_registration(self, job: Job, path: Path, store: Any, registry: Any) -> None:
        data = path.read_bytes()
        doc = decode_run_manifest(data, source=str(path))
        if store is not None and not job.cid:
            job.cid = store.put_bytes(data, pin=True)
            self._save(job)
        if registry is None:
            return
        owner = doc.get("owner")
        if isinstance(owner, str) and owner.lower() != registry.signer.address.lower():
            # the run key binds the run to its registering account: the verifier looks for the manifest's owner
            raise PermanentAnchorError(f"the run manifest names {owner} as the run's owner, but the outbox signs "
                                       f"with {registry.signer.address} ({registry.signer.source}); anchor with the "
                                       "owner's key (PROV_PRIVATE_KEY or --keystore)")
        tx = registry.register_run(
            bytes.fromhex(doc["run_id"]),
            manifest_digest=Digest.of(data),
            base_model_digest=Digest.parse(doc["base_model"]["digest"]),
            dataset_root=Digest.parse(doc["dataset"]["root"]),
            noise_seed_commitment=Digest.parse(doc["secrets"]["noise_seed_commitment"]),
            manifest_cid=job.cid,
            idempotent=True,
        )
        job.tx, job.block, job.run_key = tx.tx_hash, tx.block_number, tx.run_key.hex()

    def _send_checkpoint(self, job: Job, path: Path, store: Any, registry: Any) -> None:
        state = canonical.decode((path / "state.json").read_bytes(), source=str(path / "state.json"))
        if store is not None and not job.cid:
            job.cid = store.put_directory(path, pin=True)
            self._save(job)
        if registry is None:
            return
        from provenance.chain import epsilon_to_micro
        from provenance.safetensors import tensor_digest

        run_doc = decode_run_manifest((self.run_dir / "run.json").read_bytes())
        job.run_key = self._run_key(registry, bytes.fromhex(run_doc["run_id"])).hex()
        epsilon = state.get("epsilon")
        adapter = path / "adapter_model.safetensors"
        tx = registry.commit_checkpoint(
            bytes.fromhex(job.run_key),
            index=job.index,
            weights_digest=hash_file(adapter),
            tensor_digest=tensor_digest(adapter),
            checkpoint_digest=hash_directory(path).digest(),
            log_size=int(state["log_size"]),
            log_root=Digest(bytes.fromhex(state["log_root"])),
            epsilon_micro=epsilon_to_micro(None if epsilon is None else float(epsilon)),
            manifest_cid=job.cid,
            idempotent=True,
        )
        job.tx, job.block = tx.tx_hash, tx.block_number

    def _run_key(self, registry: Any, run_id: bytes) -> bytes:
        """The key the run was registered under: recorded by the registration job, else (a registration made
        before keys were recorded) the key of this outbox's signer, who registered it."""
        recorded = [j.run_key for j in self.jobs() if j.kind == "register" and j.run_key]
        return bytes.fromhex(recorded[0]) if recorded else registry.run_key(run_id)
