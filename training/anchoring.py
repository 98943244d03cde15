"""The trainer's side of anchoring: it hands work to `provenance.anchor.Outbox` and never waits on the network.

Calls, in order: `Outbox.open(run_dir, store=..., chain=...)`; `enqueue_run(run_id=<32 bytes>, manifest_path=...)`
before step 0, then `wait_registered(timeout=anchor.register_timeout)` (training starts either way);
`enqueue_checkpoint(index=i, checkpoint_dir=...)` after each checkpoint is in place (the outbox reads `step`,
`log_size`, `log_root`, `epsilon` from its state.json); `status_line()` for the progress bar; at the end
`flush(timeout=anchor.flush_timeout)` and `close()`.

Destination (`resolve_target`): the configured `anchor.chain` (`"tester"` or an RPC URL) and `anchor.store`
(`"local"`, `"kubo:<addr>"`); when left out, the project config's `chain.rpc_url`/`chain.registry` and
`store.spec`, else the in-process tester chain and the local store. With anchoring disabled
(`anchor.enabled = false`, `--no-anchor`) a `NullOutbox` records nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from training.config import AnchorConfig


class OutboxLike(Protocol):
    def enqueue_run(self, *, run_id: bytes, manifest_path: Path) -> None: ...
    def wait_registered(self, *, timeout: float) -> bool: ...
    def enqueue_checkpoint(self, *, index: int, checkpoint_dir: Path) -> None: ...
    def status_line(self) -> str: ...
    def flush(self, *, timeout: float) -> bool: ...
    def close(self) -> None: ...


class NullOutbox:
    """Anchoring off: every call succeeds at once and nothing leaves the machine."""

    def __init__(self, reason: str = "anchoring off") -> None:
        self.reason = reason
        self.checkpoints: list[int] = []

    def enqueue_run(self, *, run_id: bytes, manifest_path: Path) -> None:
        return None

    def wait_registered(self, *, timeout: float) -> bool:
        return True

    def enqueue_checkpoint(self, *, index: int, checkpoint_dir: Path) -> None:
        self.checkpoints.append(index)

    def status_line(self) -> str:
        return self.reason

    def flush(self, *, timeout: float) -> bool:
        return True

    def close(self) -> None:
        return None


def resolve_target(config: AnchorConfig) -> tuple[str, str | None, str]:
    """(chain, registry address, store) for an enabled config: omitted values come from the project config
    (`chain.rpc_url` + `chain.registry`, `store.spec`), falling back to the in-process "tester" chain and "local"."""
    from provenance.config import get_section

    chain_section = get_section("chain")
    chain = config.chain or chain_section.get("rpc_url") or "tester"
    registry = chain_section.get("registry") if chain == chain_section.get("rpc_url") else None
    store = config.store or get_section("store").get("spec") or "local"
    return str(chain), registry, str(store)


def expected_owner(config: AnchorConfig) -> str | None:
    """The account the outbox will register the run from, when it is known without asking the network (recorded
    as the manifest's `owner`): `$PROV_PRIVATE_KEY`'s address, or anvil's dev account 0 on the project's local
    chain (chain id 31337 in the project config). None when anchoring is off or the key is only known later (the
    in-process tester chain, a keystore given to `prov anchor flush`)."""
    if not config.enabled:
        return None
    from provenance._chain import keys
    from provenance._chain.errors import SignerError
    from provenance.config import get_section

    chain, _, _ = resolve_target(config)
    section = get_section("chain")
    chain_id = section.get("chain_id") if chain == section.get("rpc_url") else None
    if chain == "tester" and not os.environ.get(keys.ENV_KEY):
        return None
    try:
        return keys.resolve(None, chain_id=chain_id).address
    except SignerError:
        return None


def open_outbox(run_dir: Path, config: AnchorConfig, *, reuse_target: bool = False) -> OutboxLike:
    """The run's outbox with its sending thread started, or a NullOutbox when anchoring is disabled.

    `reuse_target` (resume): keep the destination recorded in `outbox/target.json` when the run was started.
    """
    if not config.enabled:
        return NullOutbox()
    from provenance.anchor import Outbox  # owns retries, backoff and idempotency

    chain, registry, store = resolve_target(config)
    outbox = Outbox.open(run_dir, chain=chain, registry=registry, store=store, reuse_target=reuse_target)
    outbox.start()
    return outbox
