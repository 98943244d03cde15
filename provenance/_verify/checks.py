"""The verifier's checks as typed results: each check passes, fails (with expected/found), is inconclusive (could
not be decided here, with why), or did not run (with why: a missing input, or a prerequisite that failed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from provenance.cid import CidMismatch
from provenance.errors import (
    EXIT_INCONCLUSIVE,
    ChainError,
    FormatError,
    ProvenanceError,
    StoreError,
    UsageError,
    VerificationError,
    one_line,
)


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    NOT_RUN = "not_run"


TITLES = {
    "record": "On-chain record for this file",
    "run_manifest": "Run manifest matches the registration",
    "checkpoint": "Checkpoint contents match the on-chain commitment",
    "merge": "Merged weights are the committed adapter merged into the base model",
    "merged_files": "Every file a loader reads from the merged model directory is bound",
    "history": "Checkpoint history is complete and in order",
    "step_log": "Training-step log matches every committed root",
    "committers": "Every commitment was made by the run's owner or an authorised writer",
    "chain": "Chain and registry identity",
    "base_model": "Base model matches the registered one",
    "privacy": "Privacy budget (ε) recomputed for every checkpoint",
    "dataset": "Training data matches the committed dataset root",
    "steps": "Every step's sampled batch, size, learning rate and noise index recomputed",
    "checkpoint_zero": "Checkpoint 0 rebuilt from the base model, LoRA config and seed",
    "replay": "Re-running training segments reproduces every committed checkpoint bit for bit",
}
# Checks every verification must pass (or be inconclusive) to say anything: the others add what the auditor's
# inputs (base model, data, secrets) allow, and set the verdict's level.
REQUIRED = ("record", "run_manifest", "checkpoint", "history", "step_log", "committers", "chain", "privacy")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return str(value)


class CheckFailed(VerificationError):
    """Raised inside a check to fail it with a summary and expected/found values."""


class CheckInconclusive(ProvenanceError):
    """Raised inside a check that could not be decided on this machine (never a pass)."""

    exit_code = EXIT_INCONCLUSIVE


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    summary: str
    expected: str | None = None
    found: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": TITLES[self.id], "status": str(self.status), "summary": self.summary,
                "expected": self.expected, "found": self.found}


@dataclass
class Checks:
    """The results of one verification, in the fixed order of TITLES, and the first reach error (store or chain
    unreachable) that kept a check from running."""

    results: dict[str, CheckResult] = field(default_factory=dict)
    reach_error: ProvenanceError | None = None

    def set(self, check_id: str, status: Status, summary: str, *, expected: Any = None, found: Any = None) -> None:
        if check_id not in TITLES:
            raise KeyError(check_id)
        self.results[check_id] = CheckResult(check_id, status, summary, _text(expected), _text(found))

    def passed(self, check_id: str, summary: str) -> None:
        self.set(check_id, Status.PASSED, summary)

    def failed(self, check_id: str, summary: str, *, expected: Any = None, found: Any = None) -> None:
        self.set(check_id, Status.FAILED, summary, expected=expected, found=found)

    def inconclusive(self, check_id: str, summary: str) -> None:
        self.set(check_id, Status.INCONCLUSIVE, summary)

    def not_run(self, check_id: str, why: str) -> None:
        self.set(check_id, Status.NOT_RUN, why)

    def status(self, check_id: str) -> Status | None:
        result = self.results.get(check_id)
        return None if result is None else result.status

    def ok(self, check_id: str) -> bool:
        return self.status(check_id) is Status.PASSED

    def why_missing(self, check_id: str, what: str) -> str:
        """Why a check that needs `what` (produced by `check_id`) could not run: names the real cause."""
        result = self.results.get(check_id)
        if result is None or result.status is Status.PASSED:
            return f"needs {what}"
        if result.status is Status.FAILED:
            return f"needs {what}, which failed its check"
        return f"needs {what}, which could not be read ({result.summary})"

    @contextmanager
    def run(self, check_id: str) -> Iterator[None]:
        """Run a check body: a VerificationError fails it; so does content that does not parse (FormatError: the
        trainer published it) and any unexpected exception on that content (named, never a pass).
        CheckInconclusive makes it inconclusive; a store or chain reach error (or a store serving bytes that do not
        match their CID) leaves it not run and is remembered: the verdict is then 'error'."""
        try:
            yield
        except CidMismatch as exc:
            self._unreachable(check_id, exc)
        except VerificationError as exc:
            message = str(exc)
            if exc.expected is not None or exc.found is not None:
                message = message.split(" (expected ")[0]
            self.failed(check_id, message, expected=exc.expected, found=exc.found)
        except CheckInconclusive as exc:
            self.inconclusive(check_id, one_line(exc))
        except (StoreError, ChainError) as exc:
            self._unreachable(check_id, exc)
        except UsageError:
            raise  # the auditor's own input (a missing file, a bad option): a one-line error, not a verdict
        except FormatError as exc:
            self.failed(check_id, f"published content does not parse: {one_line(exc)}")
        except (ProvenanceError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            self.failed(check_id, f"the content could not be checked ({type(exc).__name__}: "
                                  f"{one_line(exc, 200)})")

    def _unreachable(self, check_id: str, exc: ProvenanceError) -> None:
        self.not_run(check_id, f"could not run: {one_line(exc)}")
        if self.reach_error is None:
            self.reach_error = exc

    def fill(self, why: str) -> None:
        """Every check that has no result yet did not run, for `why`."""
        for check_id in TITLES:
            if check_id not in self.results:
                self.not_run(check_id, why)

    def ordered(self) -> list[CheckResult]:
        return [self.results[c] for c in TITLES if c in self.results]

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.ordered()]
