"""Chain errors: connection and configuration problems, transaction outcomes, and one class per custom error of
ProvenanceRegistry (version 2, and the errors only version 1 has, for reading old deployments), decoded from the
4-byte selector of the revert data on every backend.

Backends report a revert differently: py-evm (eth-tester) raises with the raw revert bytes as an argument of an
inner exception and a Python bytes repr in the outer message; anvil and Hardhat return a JSON-RPC error whose
`data` holds the hex (sometimes nested in an object). `revert_from_exception` digs through all of them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from provenance.errors import EXIT_FAILED, ChainError, ChainUnavailable

_PREFIX = "ProvenanceRegistry"
_HEX = re.compile(r"0x([0-9a-fA-F]{8,})")
_BYTES_REPR = re.compile(r"""b(['"]).*\1""")
_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


class RpcUnreachable(ChainUnavailable):
    """The JSON-RPC endpoint does not answer."""


class WrongChainId(ChainError):
    """The endpoint serves another chain than the one expected."""


class NoContract(ChainError):
    """There is no contract at the registry address."""


class NotARegistry(ChainError):
    """The contract at the registry address is not this ProvenanceRegistry."""


class RegistryNotConfigured(ChainError):
    """No registry address was given or recorded in the project config."""


class SignerError(ChainError):
    """No usable signing key (missing, malformed, or a keystore that does not open)."""


class InsufficientFunds(ChainError):
    """The signing account cannot pay for the transaction (retried: someone may fund it)."""

    transient = True


class TransactionError(ChainError):
    """A sent transaction did not succeed; `tx_hash` names it."""

    def __init__(self, message: str, *, tx_hash: str) -> None:
        self.tx_hash = tx_hash
        super().__init__(message)


class TransactionDropped(TransactionError):
    """A sent transaction disappeared from the node before it was mined."""

    transient = True


class TransactionTimeout(TransactionError):
    """A sent transaction is still pending after the receipt timeout (it may still be mined)."""

    transient = True


class TransactionFailed(TransactionError):
    """A transaction was mined with status 0 and no reason could be decoded."""


class InconsistentChain(ChainError):
    """The node's events do not fold to the head (v2) or match the record hash (v1) the registry stores: a reorg, a
    provider that lost events, or a lying node. The records cannot be trusted from this node."""


class ReadOnlyRegistry(ChainError):
    """A write was asked of a version 1 registry, which this client only reads."""


class CheckpointConflict(ChainError):
    """An idempotent retry found the index (or run) already committed with different values."""


def _show(value: Any) -> str:
    if isinstance(value, bytes) and len(value) == 32:
        return value.hex()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class RegistryRevert(ChainError):
    """The registry refused a call with one of its custom errors. `values` holds the error's arguments by their
    Solidity names; each is also an attribute in snake case (`run_id`, `expected`, ...)."""

    solidity: ClassVar[str] = ""
    template: ClassVar[str] = "the registry reverted"
    exit_code = EXIT_FAILED  # a rejection, like the same rule failing off chain

    def __init__(self, values: dict[str, Any] | None = None, *, tx_hash: str | None = None) -> None:
        self.values = dict(values or {})
        self.tx_hash = tx_hash
        for name, value in self.values.items():
            setattr(self, _snake(name), value)
        shown = {k: _show(v) for k, v in self.values.items()}
        shown.setdefault("run", shown.get("runKey") or shown.get("runId", "?"))  # v2 names runs by key, v1 by id
        message = self.template.format(**shown) + self._detail()
        if tx_hash:
            message += f" (transaction {tx_hash})"
        super().__init__(message)

    def _detail(self) -> str:
        return ""


class Unauthorized(RegistryRevert):
    solidity = f"{_PREFIX}Unauthorized"
    template = "{caller} may not write to run {run}: only its owner (or, to commit, a writer it authorised) may"


class RunAlreadyRegistered(RegistryRevert):
    solidity = f"{_PREFIX}RunAlreadyRegistered"
    template = "run {run} is already registered (owner {owner})"


class UnknownRun(RegistryRevert):
    solidity = f"{_PREFIX}UnknownRun"
    template = "run {run} is not registered in this registry"


class InvalidRunId(RegistryRevert):
    solidity = f"{_PREFIX}InvalidRunId"
    template = "run id {runId} is reserved; use 32 random bytes"


class EmptyContentAddress(RegistryRevert):
    solidity = f"{_PREFIX}EmptyContentAddress"
    template = "run {run}: the manifest content address (CID) is empty"


class InvalidWriter(RegistryRevert):
    solidity = f"{_PREFIX}InvalidWriter"
    template = "run {run}: {writer} cannot be authorised as a writer"


class NoCheckpoint(RegistryRevert):
    solidity = f"{_PREFIX}NoCheckpoint"
    template = "run {run} has no checkpoint yet: commit checkpoint 0 before finalizing it"


class RunFinalized(RegistryRevert):
    solidity = f"{_PREFIX}RunFinalized"
    template = "run {run} is finalized: nothing more can be written to it"


class NonSequentialIndex(RegistryRevert):
    solidity = f"{_PREFIX}NonSequentialIndex"
    template = "run {run}: the next checkpoint index is {expected}, not {given}"

    @property
    def already_committed(self) -> bool:
        """True when the index given is one the run already has (a retried commit), not a gap."""
        return int(self.values["given"]) < int(self.values["expected"])

    def _detail(self) -> str:
        if self.already_committed:
            return f" (checkpoint {self.values['given']} is already committed; retries can pass idempotent=True)"
        return ""


class InvalidLogSize(RegistryRevert):
    solidity = f"{_PREFIX}InvalidLogSize"
    template = "run {run}: checkpoint {index} cannot have a step log of {givenSize} entries"

    def _detail(self) -> str:
        if int(self.values["index"]) == 0:
            return " (checkpoint 0 is the adapter before any step: its log is empty)"
        return (f" (it must add at least one step to the previous checkpoint's {self.values['previousSize']}: "
                "a checkpoint without new steps is refused)")


class LogSizeTooLarge(RegistryRevert):
    solidity = f"{_PREFIX}LogSizeTooLarge"
    template = "run {run}: a step log of {givenSize} entries exceeds the registry's limit of {maxSize}"


class EpsilonDecreased(RegistryRevert):
    solidity = f"{_PREFIX}EpsilonDecreased"
    template = "run {run}: ε spent cannot decrease from {previousMicro} to {givenMicro} micro-ε"


# --- errors only version 1 of the registry has (decoded when reading an old deployment) ------------------------


class LogShrank(RegistryRevert):
    solidity = f"{_PREFIX}LogShrank"
    template = "run {run}: the step log cannot shrink from {previousSize} to {givenSize} entries"


class WeightsAlreadyCommitted(RegistryRevert):
    solidity = f"{_PREFIX}WeightsAlreadyCommitted"
    template = "weights sha256:{weightsDigest} are already committed as checkpoint {index} of run {run}"


class UnknownCheckpoint(RegistryRevert):
    solidity = f"{_PREFIX}UnknownCheckpoint"
    template = "run {run} has no checkpoint {index} (it has {count})"


class RecordMismatch(RegistryRevert):
    solidity = f"{_PREFIX}RecordMismatch"
    template = "checkpoint {index} of run {run}: the record given hashes to {given}, the registry holds {stored}"


class InvalidProof(RegistryRevert):
    solidity = f"{_PREFIX}InvalidProof"
    template = "malformed inclusion proof: {proofLength} nodes for leaf {leafIndex} of a {treeSize}-leaf tree"


class OtherRevert(RegistryRevert):
    """A revert that is not one of the registry's custom errors (Error(string), Panic(uint256), or unknown)."""

    template = "the contract reverted: {reason}"


REVERT_CLASSES: tuple[type[RegistryRevert], ...] = (
    Unauthorized, RunAlreadyRegistered, UnknownRun, InvalidRunId, EmptyContentAddress, InvalidWriter, RunFinalized,
    NonSequentialIndex, InvalidLogSize, LogSizeTooLarge, EpsilonDecreased, InvalidProof, NoCheckpoint,
)
"""The custom errors of ProvenanceRegistry versions 3 and 2 (version 2 lacks NoCheckpoint)."""
V1_REVERT_CLASSES: tuple[type[RegistryRevert], ...] = (
    Unauthorized, RunAlreadyRegistered, UnknownRun, InvalidRunId, EmptyContentAddress, InvalidWriter, RunFinalized,
    NonSequentialIndex, LogShrank, EpsilonDecreased, WeightsAlreadyCommitted, UnknownCheckpoint, RecordMismatch,
    InvalidProof,
)
"""The custom errors of ProvenanceRegistry version 1 (read-only support for old deployments)."""
_BY_NAME = {cls.solidity: cls for cls in REVERT_CLASSES}


class RevertDecoder:
    """Maps 4-byte selectors of the ABI's custom errors to the Python classes above."""

    def __init__(self, abi_errors: list[dict[str, Any]], classes: Sequence[type[RegistryRevert]] = (),
                 *, contract: str = "registry") -> None:
        """`classes`: the typed errors of the contract whose ABI errors these are (default: ProvenanceRegistry's)."""
        from eth_utils import keccak

        by_name = {cls.solidity: cls for cls in classes} if classes else _BY_NAME
        self._by_selector: dict[bytes, tuple[type[RegistryRevert], list[str], list[str]]] = {}
        for item in abi_errors:
            cls = by_name.get(item["name"])
            if cls is None:
                raise ChainError(f"{contract} ABI error {item['name']} has no Python class; update provenance")
            types = [i["type"] for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            self._by_selector[selector] = (cls, [i["name"] for i in item["inputs"]], types)

    def decode(self, data: bytes, *, tx_hash: str | None = None) -> RegistryRevert | None:
        """The typed error for revert `data`, or None if `data` is not a revert payload this knows."""
        from eth_abi import decode
        from eth_abi.exceptions import DecodingError
        from eth_utils import to_checksum_address

        selector, body = data[:4], data[4:]
        try:
            if selector in self._by_selector:
                cls, names, types = self._by_selector[selector]
                values = [to_checksum_address(v) if t == "address" else v
                          for t, v in zip(types, decode(types, body), strict=True)]
                return cls(dict(zip(names, values, strict=True)), tx_hash=tx_hash)
            if selector == _ERROR_STRING:
                return OtherRevert({"reason": _one_line(decode(["string"], body)[0])}, tx_hash=tx_hash)
            if selector == _PANIC:
                return OtherRevert({"reason": f"panic 0x{decode(['uint256'], body)[0]:02x}"}, tx_hash=tx_hash)
        except (DecodingError, OverflowError, UnicodeDecodeError, ValueError):
            return None  # not a well-formed payload of this ABI: the caller reports the revert without a reason
        return None

    def from_exception(self, exc: BaseException, *, tx_hash: str | None = None) -> RegistryRevert | None:
        """The typed error hidden anywhere in `exc` (its data, arguments, message, or chained exceptions)."""
        for payload in _payloads(exc):
            decoded = self.decode(payload, tx_hash=tx_hash)
            if decoded is not None:
                return decoded
        return None


def _payloads(exc: BaseException) -> Iterator[bytes]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield from _candidates(getattr(current, "data", None))
        for arg in current.args:
            yield from _candidates(arg)
        current = current.__cause__ or current.__context__


def _candidates(value: Any, depth: int = 0) -> Iterator[bytes]:
    if depth > 4 or value is None:
        return
    if isinstance(value, bytes | bytearray):
        yield bytes(value)
    elif isinstance(value, str):
        for match in _HEX.finditer(value):
            if len(match.group(1)) % 2 == 0:
                yield bytes.fromhex(match.group(1))
        for match in _BYTES_REPR.finditer(value):  # eth-tester: "execution reverted: b'...'"
            try:
                literal = ast.literal_eval(match.group(0))
            except (ValueError, SyntaxError):
                continue
            if isinstance(literal, bytes):
                yield literal
    elif isinstance(value, dict):
        for item in value.values():
            yield from _candidates(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _candidates(item, depth + 1)


def _one_line(reason: str, limit: int = 200) -> str:
    """A contract's revert reason is untrusted text: one line, control characters escaped, bounded length."""
    text = " ".join(str(reason).split())
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
