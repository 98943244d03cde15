"""The AttestationRegistry client: deploy it beside a ProvenanceRegistry, register auditor keys (with their proof of
possession), anchor aggregate attestations and read them back, each event checked against the stored record hash.

It shares the registry's connection and signer (`Registry.transport`), with a decoder for its own custom errors.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from provenance._attest import bls
from provenance._attest.errors import AttestationRevertDecoder
from provenance._attest.keys import PublicKey, SecretKey
from provenance._chain.artifact import Artifact
from provenance._chain.errors import InconsistentChain, NotARegistry, RegistryNotConfigured
from provenance._chain.records import TxInfo
from provenance._chain.transport import wrap_rpc
from provenance.errors import ChainError
from provenance.hashing import Digest

ARTIFACT_NAME = "AttestationRegistry.json"


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
class Auditor:
    """A registered auditor: account, self-declared name, keys, and where it was registered."""

    address: str
    name: str
    key: PublicKey
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class Anchored:
    """An attestation read from the chain (its event checked against the stored record hash)."""

    weights_digest: Digest
    number: int
    run_id: bytes
    index: int
    verification_digest: Digest
    report_cid: str
    message: bytes
    signers: tuple[str, ...]
    signature: bls.G1Affine
    aggregate_key: bls.G2Affine
    submitter: str
    block_number: int
    tx_hash: str


class AttestationClient:
    """An AttestationRegistry bound to `registry` (a provenance.chain.Registry), at `address` or not yet deployed."""

    def __init__(self, registry: Any, address: str | None = None) -> None:
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
    def address(self) -> str | None:
        return None if self._contract is None else str(self._contract.address)

    @property
    def contract(self) -> Any:
        if self._contract is None:
            raise RegistryNotConfigured("no attestation registry address: pass --attestations ADDRESS or deploy one")
        return self._contract

    @wrap_rpc
    def _bind(self, address: str) -> None:
        contract = self.transport.contract_at(address, self._artifact, name="AttestationRegistry",
                                              hint="; deploy one with `prov attest-deploy`")
        checksum = contract.address
        bound = contract.functions.provenanceRegistry().call()
        if bound != self.registry.address:
            raise NotARegistry(f"the AttestationRegistry at {checksum} attests registry {bound}, "
                               f"not {self.registry.address}")
        self._contract = contract

    def deploy(self) -> TxInfo:
        """Deploy an AttestationRegistry for the bound ProvenanceRegistry and bind this client to it."""
        factory = self.web3.eth.contract(abi=self._artifact.abi, bytecode=self._artifact.bytecode)
        receipt = self.transport.transact(factory.constructor(self.registry.contract.address),
                                          what="deploy AttestationRegistry")
        self._bind(receipt["contractAddress"])
        return _tx_info(receipt)

    # --- writes ---------------------------------------------------------------------------------------------------

    def possession_message(self, auditor: str, key: PublicKey) -> bytes:
        return bls.possession_message(chain_id=self.transport.chain_id, contract=self.contract.address,
                                      auditor=auditor, pk1=key.pk1, pk2=key.pk2)

    def register_auditor(self, key: SecretKey, *, name: str | None = None,
                         pop: bls.G1Affine | None = None) -> TxInfo:
        """Register `key` for the signing account, proving possession (`pop` overrides the proof: tests only)."""
        auditor = self.transport.signer.address
        proof = pop if pop is not None else key.prove_possession(self.possession_message(auditor, key.public))
        call = self.contract.functions.registerAuditor(name or key.public.name, g1_arg(key.public.pk1),
                                                       g2_arg(key.public.pk2), g1_arg(proof))
        return _tx_info(self.transport.transact(call, what=f"register auditor {auditor}"))

    def submit(self, *, weights_digest: Digest, verification_digest: Digest, report_cid: str, signers: list[str],
               signature: bls.G1Affine, aggregate_key: bls.G2Affine) -> TxInfo:
        """Anchor an aggregate attestation (the contract re-checks everything and reverts with a typed reason)."""
        call = self.contract.functions.attest((weights_digest.value, verification_digest.value, report_cid,
                                               list(signers), g1_arg(signature), g2_arg(aggregate_key)))
        return _tx_info(self.transport.transact(call, what=f"attest weights {weights_digest}"))

    # --- reads ----------------------------------------------------------------------------------------------------

    @wrap_rpc
    def _view(self, fn: Any) -> Any:
        return self.transport.view(fn)

    @wrap_rpc
    def auditor(self, address: str) -> Auditor | None:
        """The registered auditor at `address` (keys from its event, checked against the stored key id)."""
        pk1, key_id, block = self._view(self.contract.functions.getAuditor(address))
        if not any(key_id):
            return None
        logs = self.contract.events.AuditorRegistered.get_logs(
            argument_filters={"auditor": address}, from_block=block, to_block=block)
        if len(logs) != 1:
            raise InconsistentChain(f"{len(logs)} AuditorRegistered events for {address} in block {block}")
        a = logs[0]["args"]
        pk2x, pk2y = a["pk2"]["x"], a["pk2"]["y"]
        public = PublicKey(a["name"], (a["pk1"]["x"], a["pk1"]["y"]),
                           ((pk2x[0], pk2x[1]), (pk2y[0], pk2y[1])))
        if bls.key_id(public.pk2) != bytes(key_id) or public.pk1 != (pk1[0], pk1[1]):
            raise InconsistentChain(f"the AuditorRegistered event for {address} does not match the stored key")
        return Auditor(a["auditor"], a["name"], public, block, logs[0]["transactionHash"].to_0x_hex())

    @wrap_rpc
    def attestations(self, weights_digest: Digest) -> list[Anchored]:
        """Every attestation of `weights_digest`, oldest first."""
        count = int(self._view(self.contract.functions.attestationCount(weights_digest.value)))
        found = []
        for number in range(count):
            block, stored = self._view(self.contract.functions.getAttestation(weights_digest.value, number))
            logs = [log for log in self.contract.events.Attested.get_logs(
                argument_filters={"weightsDigest": weights_digest.value}, from_block=block, to_block=block)
                if log["args"]["number"] == number]
            if len(logs) != 1:
                raise InconsistentChain(f"{len(logs)} Attested events #{number} for {weights_digest} in block {block}")
            found.append(self._anchored(weights_digest, number, logs[0], bytes(stored)))
        return found

    def _anchored(self, weights_digest: Digest, number: int, log: Any, stored: bytes) -> Anchored:
        a = log["args"]
        att = a["attestation"]
        if isinstance(att, Mapping):
            att = tuple(att[k] for k in ("weightsDigest", "verificationDigest", "reportCid", "signers", "signature",
                                         "aggregateKey"))
        weights, verification, cid, signers, sig, apk = att
        sig_t = (sig["x"], sig["y"]) if isinstance(sig, Mapping) else tuple(sig)
        apk_x, apk_y = (apk["x"], apk["y"]) if isinstance(apk, Mapping) else apk
        record = (bytes(weights), bytes(verification), cid, list(signers), sig_t, (list(apk_x), list(apk_y)))
        if _record_hash(bytes(a["message"]), a["submitter"], record) != stored:
            raise InconsistentChain(f"the Attested event #{number} for {weights_digest} does not match the stored "
                                    "record hash (reorg or untrustworthy node)")
        return Anchored(weights_digest=weights_digest, number=number, run_id=bytes(a["runId"]), index=a["index"],
                        verification_digest=Digest(bytes(verification)), report_cid=cid, message=bytes(a["message"]),
                        signers=tuple(signers), signature=(sig_t[0], sig_t[1]),
                        aggregate_key=((apk_x[0], apk_x[1]), (apk_y[0], apk_y[1])), submitter=a["submitter"],
                        block_number=int(log["blockNumber"]), tx_hash=log["transactionHash"].to_0x_hex())

    def message_onchain(self, weights_digest: Digest, verification_digest: Digest, report_cid: str) -> bytes:
        return bytes(self._view(self.contract.functions.attestationMessage(
            weights_digest.value, verification_digest.value, report_cid)))

    def hash_to_g1_onchain(self, message: bytes, *, pop: bool = False) -> bls.G1Affine:
        x, y = self._view(self.contract.functions.hashToG1(message, pop))
        return int(x), int(y)


def _record_hash(message: bytes, submitter: str, attestation: tuple[Any, ...]) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    struct = "(bytes32,bytes32,string,address[],(uint256,uint256),(uint256[2],uint256[2]))"
    return keccak(encode(["bytes32", "address", struct], [message, submitter, attestation]))[:24]


def _tx_info(receipt: Any) -> TxInfo:
    return TxInfo(receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]))
