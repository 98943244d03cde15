"""Bookkeeping for the verifier's checks: each check passes, fails (with expected/found) or is skipped (why)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from provenance.errors import ChainError, ProvenanceError, StoreError, VerificationError

TITLES = {
    "record": "On-chain record for this file",
    "checkpoint_manifest": "Checkpoint contents match the on-chain commitment",
    "run_manifest": "Run manifest matches the registration",
    "history": "Checkpoint history is complete and in order",
    "step_log": "Training-step log matches every committed root",
    "committers": "Every commitment was made by the run's owner or an authorised writer",
    "base_model": "Base model matches the registered one",
    "privacy": "Privacy budget (ε) recomputed from the recorded parameters",
    "dataset": "Training data matches the committed dataset root",
    "replay": "Re-running sampled training segments reproduces the weights",
}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return str(value)


class CheckFailed(VerificationError):
    """Raised inside a check to fail it with a summary and expected/found values."""


@dataclass
class Check:
    id: str
    status: str = "skipped"
    summary: str = ""
    expected: str | None = None
    found: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": TITLES[self.id], "status": self.status, "summary": self.summary,
                "expected": self.expected, "found": self.found}


@dataclass
class Checks:
    """The ordered checks of one verification, and the first reach error (store/chain) if any."""

    items: dict[str, Check] = field(default_factory=lambda: {k: Check(k) for k in TITLES})
    error: ProvenanceError | None = None

    def passed(self, check_id: str, summary: str) -> None:
        self.items[check_id].status, self.items[check_id].summary = "passed", summary

    def skipped(self, check_id: str, why: str) -> None:
        self.items[check_id].status, self.items[check_id].summary = "skipped", why

    def failed(self, check_id: str, summary: str, *, expected: Any = None, found: Any = None) -> None:
        item = self.items[check_id]
        item.status, item.summary, item.expected, item.found = "failed", summary, _text(expected), _text(found)

    def ok(self, check_id: str) -> bool:
        return self.items[check_id].status == "passed"

    @contextmanager
    def run(self, check_id: str) -> Iterator[None]:
        """Run a check body: a VerificationError fails it; a store/chain reach error marks the run unverifiable."""
        try:
            yield
        except VerificationError as exc:
            message = str(exc)
            if exc.expected is not None or exc.found is not None:
                message = message.split(" (expected ")[0]
            self.failed(check_id, message, expected=exc.expected, found=exc.found)
        except (StoreError, ChainError) as exc:
            self.items[check_id].status = "skipped"
            self.items[check_id].summary = f"could not run: {' '.join(str(exc).split())}"
            if self.error is None:
                self.error = exc

    def skip_rest(self, why: str) -> None:
        for item in self.items.values():
            if item.status == "skipped" and not item.summary:
                item.summary = why

    def verdict(self) -> tuple[str, int]:
        statuses = [c.status for c in self.items.values()]
        if "failed" in statuses:
            return "failed", 1
        if self.error is not None or not self.ok("record"):
            return "error", 2
        return "verified", 0

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.items.values()]
