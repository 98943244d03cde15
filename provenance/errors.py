"""The error hierarchy. Every failure a user can cause or meet is one of these, with a one-line message.

`ProvenanceError` is the base. Each class says what it is through two class attributes, so no caller re-lists
classes to decide what to do with an error:

- `exit_code`: what the CLI exits with. `EXIT_OK` 0; `EXIT_FAILED` 1 when a check failed or a request was
  *rejected* (by a check off chain or by a contract revert on chain: the same rejection has the same code in both
  places); `EXIT_ERROR` 2 when the command could not run (bad input, unreachable node, missing content);
  `EXIT_INCONCLUSIVE` 3 only for `prov verify` when a check could not be decided here (never "verified").
- `transient`: True when retrying later can succeed (an unreachable node, a timeout, a store that is down); the
  anchoring outbox retries exactly those and stops on every other error.

`VerificationError` and its subclasses are failed checks and carry what was expected and what was found (hex for
digests). The CLI prints `str(error)` on one line and exits with `exit_code`.
"""

from __future__ import annotations

from typing import Any


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return str(value)


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INCONCLUSIVE = 3


def one_line(value: object, limit: int | None = None) -> str:
    """An error (or any text) as one line: whitespace runs folded to one space, an empty exception message shown as
    the exception's type, cut to `limit` characters when given. For text an untrusted party chose, escape it too
    (`provenance.canonical.escape_controls`)."""
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if limit is None else text[:limit]


class ProvenanceError(Exception):
    """Base of every error prov raises on purpose. Its message is one line that says what to do."""

    exit_code: int = EXIT_ERROR
    transient: bool = False


class Rejected(ProvenanceError):
    """A request was refused by a rule (an off-chain check or a contract revert): retrying will not help."""

    exit_code = EXIT_FAILED


class UsageError(ProvenanceError):
    """Bad input from the user: a missing path, a malformed file, a wrong option."""


class FormatError(ProvenanceError):
    """A file or document at a trust boundary does not parse as the format it claims to be."""


class ConfigError(ProvenanceError):
    """A configuration file or value is invalid; the message names the field."""


class ChainError(ProvenanceError):
    """The chain could not be reached or answered something unusable."""


class ChainUnavailable(ChainError):
    """The chain node did not answer in time (or at all); retrying later can succeed."""

    transient = True


class StoreError(ProvenanceError):
    """The artifact store could not be reached or does not hold what was asked for."""


class StoreUnavailable(StoreError):
    """The store (a Kubo node) did not answer; retrying later can succeed."""

    transient = True


class VerificationError(Rejected):
    """A check failed. Carries what was expected and what was found."""

    def __init__(self, message: str, *, expected: Any = None, found: Any = None) -> None:
        self.expected = expected
        self.found = found
        detail = ""
        if expected is not None or found is not None:
            detail = f" (expected {_show(expected)}, found {_show(found)})"
        super().__init__(message + detail)


class DigestMismatch(VerificationError):
    """Content hashed to a different digest than the one it was committed under."""


class RootMismatch(VerificationError):
    """A Merkle root recomputed from data differs from the committed root."""


class ProofError(VerificationError):
    """An inclusion or consistency proof is malformed or does not verify."""


class TamperedRecord(VerificationError):
    """A stored step-log record no longer matches what was written."""

    def __init__(self, message: str, *, index: int, expected: Any = None, found: Any = None) -> None:
        self.index = index
        super().__init__(message, expected=expected, found=found)


class TornTail(ProvenanceError):
    """The step log ends in a partially written record (a crash mid-append). Nothing before it is lost."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, valid_records: int, torn_bytes: int) -> None:
        self.valid_records = valid_records
        self.torn_bytes = torn_bytes
        super().__init__(message)
