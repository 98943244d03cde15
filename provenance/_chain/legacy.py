"""Version 1 read methods on the version 2 client, as thin wrappers over `run()` and `claims()`, so the verifier
keeps working until it moves to `RegistryReader`. New code should not use them.

They take the run key. For callers that pass a run id (the old verifier passes a record's `run_id`; old tests pass
the id they registered), a run id this client has already seen in a verified history is mapped to its key — unless
two owners registered that id (then the key is needed) — and an id that is no run key is tried as the signer's run.
"""

from __future__ import annotations

from provenance._chain.errors import SignerError, UnknownCheckpoint, UnknownRun
from provenance._chain.heads import run_key_of
from provenance._chain.keys import Signer
from provenance._chain.records import CheckpointRecord, RegistryEvent, RunHistory, RunRecord, parse_run_id
from provenance.errors import UsageError
from provenance.hashing import Digest

RunKey = bytes | str


class LegacyReads:
    """`get_run`, `get_checkpoint`, `find_by_weights`, `checkpoints`, `writer_events`, `verify_inclusion_onchain`."""

    def run(self, run_key: RunKey) -> RunHistory:
        raise NotImplementedError

    @property
    def signer(self) -> Signer:
        raise NotImplementedError

    def claims(self, *, weights: Digest | None = None, tensors: Digest | None = None) -> list[CheckpointRecord]:
        raise NotImplementedError

    def verify_inclusion(self, record: CheckpointRecord, *, leaf_hash: bytes, leaf_index: int,
                         proof: list[bytes]) -> bool:
        raise NotImplementedError

    def _remember(self, history: RunHistory) -> None:
        """Note which key a run id belongs to (None once two owners used the same id)."""
        known = self.__dict__.setdefault("_keys_by_id", {})
        previous = known.get(history.run_id, history.run_key)
        known[history.run_id] = history.run_key if previous == history.run_key else None

    def _legacy_key(self, run: RunKey) -> bytes:
        value = parse_run_id(run)
        known = self.__dict__.get("_keys_by_id", {})
        if value not in known:
            return value
        key = known[value]
        if key is None:
            raise UsageError(f"run id {value.hex()} was registered by several accounts: name the run by its run key")
        return key

    def _legacy_history(self, run: RunKey) -> RunHistory:
        key = self._legacy_key(run)
        try:
            return self.run(key)
        except UnknownRun:
            try:
                mine = run_key_of(self.signer.address, key)
            except SignerError:
                raise UnknownRun({"runKey": key}) from None
            return self.run(mine)

    def get_run(self, run: RunKey) -> RunRecord:
        """The run's registration record (verified), by run key (or run id, see the module docstring)."""
        return self._legacy_history(run).registration

    def get_checkpoint(self, run: RunKey, index: int) -> CheckpointRecord:
        """Checkpoint `index` of a run; UnknownCheckpoint if it has no such checkpoint."""
        history = self._legacy_history(run)
        if not 0 <= index < len(history.checkpoints):
            raise UnknownCheckpoint({"runKey": history.run_key, "index": index, "count": len(history.checkpoints)})
        return history.checkpoints[index]

    def find_by_weights(self, weights_digest: Digest) -> CheckpointRecord | None:
        """The earliest checkpoint claiming these weights, or None. (Any number of runs may claim them: use
        `claims()` to see all.)"""
        found = self.claims(weights=weights_digest)
        return found[0] if found else None

    def checkpoints(self, run: RunKey, *, limit: int | None = None) -> list[CheckpointRecord]:
        """The run's checkpoints 0..n-1 in index order (the first `limit` of them if given)."""
        records = list(self._legacy_history(run).checkpoints)
        return records if limit is None else records[:limit]

    def writer_events(self, run: RunKey, *, from_block: int = 0) -> list[RegistryEvent]:
        """The run's WriterAuthorized / WriterRevoked events in chain order, shaped as version 1's (args `runId`,
        `writer`; `runKey` too)."""
        history = self._legacy_history(run)
        return [RegistryEvent(w.name, w.args, w.block_number, w.tx_hash, w.log_index)
                for w in history.writers if w.block_number >= from_block]

    def verify_inclusion_onchain(self, run: RunKey, index: int, *, leaf_hash: bytes, leaf_index: int,
                                 proof: list[bytes]) -> bool:
        """Whether `proof` puts `leaf_hash` at `leaf_index` of the log committed by checkpoint `index`."""
        record = self.get_checkpoint(run, index)
        return self.verify_inclusion(record, leaf_hash=leaf_hash, leaf_index=leaf_index, proof=proof)
