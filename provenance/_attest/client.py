"""The AttestationRegistry client: deploy it beside a ProvenanceRegistry (version 2), register, rotate and revoke
auditor keys (with their proof of possession), anchor aggregate attestations and read them back, each event checked
against what the contract stores.

It shares the registry's connection and signer (`registry.transport`), with a decoder for its own custom errors.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from provenance._attest import bls
from provenance._attest.errors import AttestationRevertDecoder
from provenance._attest.statement import Statement
from provenance._chain.artifact import Artifact
from provenance._chain.errors import InconsistentChain, NotARegistry, RegistryNotConfigured
from provenance._chain.records import TxInfo
from provenance._chain.transport import Transport, wrap_rpc
from provenance.errors import ChainError
from provenance.hashing import Digest
from provenance.keys import PublicKey, RegisteredKey, SecretKey

ARTIFACT_NAME = "AttestationRegistry.json"
_STATEMENT_KEYS = ("runKey", "index", "weightsDigest", "checkpointDigest", "logSize", "logRoot", "epsilonMicro",
                   "level", "verificationDigest", "reportCid")
_RECORD_TYPES = ["bytes32", "uint64", "address", "bytes32[]",
                 "((bytes32,uint64,bytes32,bytes32,uint64,bytes32,uint64,string,bytes32,string),address[],"
                 "(uint256,uint256),(uint256[2],uint256[2]))"]


class RegistryLike(Protocol):
    """What the client needs of a ProvenanceRegistry client: its connection and its address."""

    transport: Transport

    @property
    def address(self) -> str | None: ...


@functools.cache
def load_artifact() -> Artifact:
    path = resources.files("provenance") / "contracts" / ARTIFACT_NAME
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(abi=value["abi"], bytecode=bytes.fromhex(value["bytecode"].removeprefix("0x")),
                        deployed_bytecode=bytes.fromhex(value["deployedBytecode"].removeprefix("0x")),
                        compiler_version=value["compiler"]["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(f"the packaged artifact {ARTIFACT_NAME} is missing or corrupt ({exc}); reinstall prov") \
            from None


def g1_arg(point: bls.G1Affine) -> tuple[int, int]:
    return (point[0], point[1])


def g2_arg(point: bls.G2Affine) -> tuple[list[int], list[int]]:
    return (list(point[0]), list(point[1]))


@dataclass(frozen=True)
class Anchored:
    """An attestation read from the chain (its event checked against the stored record hash)."""

    number: int
    statement: Statement
    message: bytes
    signers: tuple[str, ...]
    key_ids: tuple[str, ...]
    signature: bls.G1Affine
    aggregate_key: bls.G2Affine
    submitter: str
    block_number: int
    tx_hash: str


class AttestationClient:
    """An AttestationRegistry bound to `registry` (a ProvenanceRegistry client), at `address` or not yet deployed."""

    def __init__(self, registry: RegistryLike, address: str | None = None) -> None:
        self.registry = registry
        self._artifact = load_artifact()
        self.transport = copy.copy(registry.transport)
        self.transport.decoder = AttestationRevertDecoder(self._artifact.errors())
        self._contract: Any = None
        if address is not None:
            self._bind(address)

    @property
    def web3(self) -> Any:
        return self.transport.web3

    @property
    def chain_id(self) -> int:
        return self.transport.chain_id

    @property
    def address(self) -> str | None:
        return None if self._contract is None else str(self._contract.address)

    @property
    def sender(self) -> str:
        """The account this client signs with: the auditor identity of its key operations."""
        return str(self.transport.signer.address)

    @property
    def contract(self) -> Any:
        if self._contract is None:
            raise RegistryNotConfigured("no attestation registry address: pass --attestations ADDRESS or deploy one")
        return self._contract

    @wrap_rpc
    def _bind(self, address: str) -> None:
        contract = self.transport.contract_at(address, self._artifact, name="AttestationRegistry",
                                              hint="; deploy one with `prov attest-deploy`")
        bound = contract.functions.provenanceRegistry().call()
        if bound != self.registry.address:
            raise NotARegistry(f"the AttestationRegistry at {contract.address} attests registry {bound}, "
                               f"not {self.registry.address}")
        self._contract = contract

    def deploy(self) -> TxInfo:
        """Deploy an AttestationRegistry for the bound ProvenanceRegistry (version 2) and bind this client to it."""
        factory = self.web3.eth.contract(abi=self._artifact.abi, bytecode=self._artifact.bytecode)
        receipt = self.transport.transact(factory.constructor(self.registry.address),
                                          what="deploy AttestationRegistry")
        self._bind(receipt["contractAddress"])
        return _tx_info(receipt)

    # --- writes ---------------------------------------------------------------------------------------------------

    def possession_message(self, auditor: str, key: PublicKey) -> bytes:
        return bls.possession_message(chain_id=self.chain_id, contract=self.contract.address, auditor=auditor,
                                      pk1=key.pk1, pk2=key.pk2)

    def _key_call(self, function: str, key: SecretKey, name: str | None, pop: bls.G1Affine | None) -> TxInfo:
        auditor = self.sender
        proof = pop if pop is not None else key.prove_possession(self.possession_message(auditor, key.public))
        call = getattr(self.contract.functions, function)(name or key.public.name, g1_arg(key.public.pk1),
                                                          g2_arg(key.public.pk2), g1_arg(proof))
        return _tx_info(self.transport.transact(call, what=f"{function} {key.public.key_id} for {auditor}"))

    def register_auditor(self, key: SecretKey, *, name: str | None = None,
                         pop: bls.G1Affine | None = None) -> TxInfo:
        """Register `key` for the signing account, proving possession (`pop` overrides the proof: tests only)."""
        return self._key_call("registerAuditor", key, name, pop)

    def rotate_key(self, key: SecretKey, *, name: str | None = None, pop: bls.G1Affine | None = None) -> TxInfo:
        """Replace the signing account's active key by `key` (the old one is retired in this block)."""
        return self._key_call("rotateKey", key, name, pop)

    def revoke_key(self, key_id: str) -> TxInfo:
        """Revoke one of the signing account's keys (current or retired)."""
        call = self.contract.functions.revokeKey(bytes.fromhex(key_id.removeprefix("0x")))
        return _tx_info(self.transport.transact(call, what=f"revoke key {key_id}"))

    def submit(self, statement: Statement, *, signers: Sequence[str], signature: bls.G1Affine,
               aggregate_key: bls.G2Affine) -> TxInfo:
        """Anchor an aggregate attestation (the contract re-checks everything and reverts with a typed reason)."""
        call = self.contract.functions.attest((statement.abi_tuple(), list(signers), g1_arg(signature),
                                               g2_arg(aggregate_key)))
        return _tx_info(self.transport.transact(call, what=f"attest weights {statement.weights_digest}"))

    # --- reads ----------------------------------------------------------------------------------------------------

    @wrap_rpc
    def _view(self, fn: Any) -> Any:
        return self.transport.view(fn)

    @wrap_rpc
    def key(self, key_id: str) -> RegisteredKey | None:
        """The registered key `key_id` (its G2 part and name from its event, checked against storage), or None."""
        raw_id = bytes.fromhex(key_id.removeprefix("0x"))
        auditor, _number, revoked, registered, retired, pk1 = self._view(self.contract.functions.getKey(raw_id))
        if int(auditor, 16) == 0:
            return None
        logs = self.contract.events.AuditorRegistered.get_logs(
            argument_filters={"keyId": raw_id}, from_block=registered, to_block=registered)
        if len(logs) != 1:
            raise InconsistentChain(f"{len(logs)} AuditorRegistered events for key {key_id} in block {registered}")
        a = logs[0]["args"]
        pk2x, pk2y = _field(a["pk2"], "x", 0), _field(a["pk2"], "y", 1)
        public = PublicKey(a["name"], (_field(a["pk1"], "x", 0), _field(a["pk1"], "y", 1)),
                           ((pk2x[0], pk2x[1]), (pk2y[0], pk2y[1])))
        if bls.key_id(public.pk2) != raw_id or public.pk1 != (pk1[0], pk1[1]) or a["auditor"] != auditor:
            raise InconsistentChain(f"the AuditorRegistered event for key {key_id} does not match the stored key")
        return RegisteredKey(auditor=auditor, key=public, registered_block=registered, retired_block=retired,
                             revoked_block=revoked, tx_hash=logs[0]["transactionHash"].to_0x_hex())

    @wrap_rpc
    def current_key(self, auditor: str) -> RegisteredKey | None:
        """The auditor's current key (possibly revoked), or None if they never registered one."""
        key_id = bytes(self._view(self.contract.functions.currentKey(auditor)))
        return None if not any(key_id) else self.key("0x" + key_id.hex())

    @wrap_rpc
    def attestations(self, weights_digest: Digest) -> list[Anchored]:
        """Every attestation naming `weights_digest`, oldest first."""
        count = int(self._view(self.contract.functions.attestationCount(weights_digest.value)))
        found = []
        for number in range(count):
            block, stored = self._view(self.contract.functions.getAttestation(weights_digest.value, number))
            logs = [log for log in self.contract.events.Attested.get_logs(
                argument_filters={"weightsDigest": weights_digest.value}, from_block=block, to_block=block)
                if log["args"]["number"] == number]
            if len(logs) != 1:
                raise InconsistentChain(f"{len(logs)} Attested events #{number} for {weights_digest} in block {block}")
            found.append(self._anchored(number, logs[0], bytes(stored)))
        return found

    def _anchored(self, number: int, log: Any, stored: bytes) -> Anchored:
        a = log["args"]
        att = a["attestation"]
        st, signers, sig, apk = (_field(att, k, i) for i, k in enumerate(("statement", "signers", "signature",
                                                                           "aggregateKey")))
        fields = [_field(st, k, i) for i, k in enumerate(_STATEMENT_KEYS)]
        sig_t = (_field(sig, "x", 0), _field(sig, "y", 1))
        apk_x, apk_y = list(_field(apk, "x", 0)), list(_field(apk, "y", 1))
        key_ids = [bytes(k) for k in a["keyIds"]]
        record = (tuple(fields), list(signers), sig_t, (apk_x, apk_y))
        if _record_hash(bytes(a["message"]), number, a["submitter"], key_ids, record) != stored:
            raise InconsistentChain(f"the Attested event #{number} does not match the stored record hash (reorg or "
                                    "untrustworthy node)")
        run_key, index, weights, ck, log_size, log_root, eps, level, verification, cid = fields
        statement = Statement(
            chain_id=self.chain_id, provenance_registry=str(self.registry.address),
            attestation_registry=self.contract.address, run_key=bytes(run_key), checkpoint_index=index,
            weights_digest=Digest(bytes(weights)), checkpoint_digest=Digest(bytes(ck)), log_size=log_size,
            log_root=Digest(bytes(log_root)), epsilon_micro=eps, level=level,
            verification_digest=Digest(bytes(verification)), report_cid=cid)
        return Anchored(number=number, statement=statement,
                        message=bytes(a["message"]), signers=tuple(signers),
                        key_ids=tuple("0x" + k.hex() for k in key_ids), signature=sig_t,
                        aggregate_key=((apk_x[0], apk_x[1]), (apk_y[0], apk_y[1])), submitter=a["submitter"],
                        block_number=int(log["blockNumber"]), tx_hash=log["transactionHash"].to_0x_hex())

    def message_onchain(self, statement: Statement) -> bytes:
        return bytes(self._view(self.contract.functions.attestationMessage(statement.abi_tuple())))

    def hash_to_g1_onchain(self, message: bytes, *, pop: bool = False) -> bls.G1Affine:
        x, y = self._view(self.contract.functions.hashToG1(message, pop))
        return int(x), int(y)


def _field(value: Any, name: str, position: int) -> Any:
    """A struct member from web3's decoding, which gives structs as mappings or as tuples depending on the path."""
    return value[name] if isinstance(value, Mapping) else value[position]


def _record_hash(message: bytes, number: int, submitter: str, key_ids: list[bytes],
                 attestation: tuple[Any, ...]) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(encode(_RECORD_TYPES, [message, number, submitter, key_ids, attestation]))[:24]


def _tx_info(receipt: Any) -> TxInfo:
    return TxInfo(receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]))
