// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IAttestationRegistry} from "./IAttestationRegistry.sol";
import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/**
 * @title AttestationRegistry
 * @notice Co-signed auditor attestations of checkpoints committed in a ProvenanceRegistry, with BLS signatures on
 * BN254 verified on chain. No admin, no upgrade, nothing deleted: any account may register one key (with a proof of
 * possession) and anyone may anchor an attestation whose aggregate signature verifies.
 *
 * Scheme (docs/attestations.md): secret key `sk`, keys `pk1 = sk·g1`, `pk2 = sk·g2`; a signature is `sk·H(m)` with
 * `H` a try-and-increment hash to G1 under a domain tag. For signers `S` with `apk1 = Σ pk1` (summed here with
 * 0x06 from storage) and the caller's `apk2`, one 0x08 call checks
 * `e(σ + γ·apk1, g2) · e(-(H(m) + γ·g1), apk2) = 1`, with `γ` a hash of every input: that is both
 * `e(σ, g2) = e(H(m), apk2)` and `e(apk1, g2) = e(g1, apk2)` except with probability 1/r. Registration checks the
 * same equation with the proof of possession `sk·H_pop(auditor, pk1, pk2)`, which stops rogue-key attacks.
 *
 * Gas per attestation does not depend on what is attested (a fixed-size message; the report CID is a short
 * string); it grows by one storage read pair and one point addition per co-signer.
 */
contract AttestationRegistry is IAttestationRegistry {
    uint256 private constant _P = 21888242871839275222246405745257275088696311157297823662689037894645226208583;
    uint256 private constant _R = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 private constant _TWO_256_MOD_P =
        6350874878119819312338956282401532409788428879151445726012394534686998597021;
    uint256 private constant _SQRT_EXPONENT =
        5472060717959818805561601436314318772174077789324455915672259473661306552146; // (p + 1) / 4
    uint256 private constant _HALF_P =
        10944121435919637611123202872628637544348155578648911831344518947322613104291; // (p - 1) / 2

    // The G2 generator, [imaginary, real] per coordinate.
    uint256 private constant _G2_X_IM = 11559732032986387107991004021392285783925812861821192530917403151452391805634;
    uint256 private constant _G2_X_RE = 10857046999023057135944570762232829481370756359578518086990519993285655852781;
    uint256 private constant _G2_Y_IM = 4082367875863433681332203403145435568316851327593401208105741076214120093531;
    uint256 private constant _G2_Y_RE = 8495653923123431417604973247489272438418190587263600148770280649306958101930;

    bytes private constant _ATTEST_DST = "PROV-V1-BN254G1-KECCAK-TAI-ATTEST";
    bytes private constant _POP_DST = "PROV-V1-BN254G1-KECCAK-TAI-POP";
    bytes32 private constant _MESSAGE_TAG = keccak256("prov.attestation.v1");
    bytes32 private constant _POP_TAG = keccak256("prov.auditor-pop.v1");

    IProvenanceRegistry private _registry;
    mapping(address auditor => Auditor) private _auditors;
    mapping(bytes32 keyId => address auditor) private _keyOwners;
    mapping(bytes32 weightsDigest => AttestationLocation[]) private _attestations;

    constructor(IProvenanceRegistry registry) {
        _registry = registry;
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - the caller has no key yet and `pk2` is not registered by anyone;
     * - `pk1` is a point of G1 other than infinity, and `pop` a point of G1;
     * - `pop` is the caller's signature over {possessionMessage} and `pk1`, `pk2` share one secret.
     *
     * Emits an {AuditorRegistered} event.
     */
    function registerAuditor(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external
    {
        bytes32 keyId = keccak256(abi.encode(pk2));
        Auditor storage auditor = _auditors[msg.sender];
        if (auditor.keyId != bytes32(0)) revert AttestationRegistryAuditorAlreadyRegistered(msg.sender, auditor.keyId);
        address owner = _keyOwners[keyId];
        if (owner != address(0)) revert AttestationRegistryKeyAlreadyRegistered(keyId, owner);
        _requireG1(pk1, false);
        _requireG1(pop, true);
        G1Point memory h = _hashToG1(_possessionMessage(msg.sender, pk1, pk2), _POP_DST);
        if (!_verify(pop, pk1, h, pk2)) revert AttestationRegistryInvalidProofOfPossession(msg.sender, keyId);

        auditor.pk1 = pk1;
        auditor.keyId = keyId;
        auditor.registeredBlock = uint64(block.number);
        _keyOwners[keyId] = msg.sender;
        emit AuditorRegistered(msg.sender, keyId, name, pk1, pk2);
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - a checkpoint of the ProvenanceRegistry commits `attestation.weightsDigest`;
     * - `signers` is not empty, in strictly ascending order, and every signer has a registered key;
     * - `signature` is a point of G1 and verifies, with `aggregateKey`, over {attestationMessage} for the signers.
     *
     * Emits an {Attested} event.
     */
    function attest(Attestation calldata attestation) external {
        bytes32 weightsDigest = attestation.weightsDigest;
        IProvenanceRegistry.CheckpointLocation memory checkpoint = _requireCheckpoint(weightsDigest);
        bytes32 message =
            _attestationMessage(checkpoint, weightsDigest, attestation.verificationDigest, attestation.reportCid);
        G1Point memory apk1 = _aggregateSigners(attestation.signers);
        _requireG1(attestation.signature, true);
        if (!_verify(attestation.signature, apk1, _hashToG1(message, _ATTEST_DST), attestation.aggregateKey)) {
            revert AttestationRegistryInvalidSignature(weightsDigest, message);
        }

        AttestationLocation[] storage list = _attestations[weightsDigest];
        uint64 number = uint64(list.length);
        list.push(AttestationLocation(uint64(block.number), _recordHash(message, msg.sender, attestation)));
        emit Attested(weightsDigest, checkpoint.runId, checkpoint.index, number, message, msg.sender, attestation);
    }

    /// @inheritdoc IAttestationRegistry
    function provenanceRegistry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IAttestationRegistry
    function getAuditor(address auditor) external view returns (Auditor memory) {
        return _auditors[auditor];
    }

    /// @inheritdoc IAttestationRegistry
    function attestationCount(bytes32 weightsDigest) external view returns (uint256) {
        return _attestations[weightsDigest].length;
    }

    /// @inheritdoc IAttestationRegistry
    function getAttestation(bytes32 weightsDigest, uint256 number) external view returns (AttestationLocation memory) {
        AttestationLocation[] storage list = _attestations[weightsDigest];
        if (number >= list.length) revert AttestationRegistryUnknownAttestation(weightsDigest, number, list.length);
        return list[number];
    }

    /// @inheritdoc IAttestationRegistry
    function attestationMessage(bytes32 weightsDigest, bytes32 verificationDigest, string calldata reportCid)
        external
        view
        returns (bytes32)
    {
        return _attestationMessage(_requireCheckpoint(weightsDigest), weightsDigest, verificationDigest, reportCid);
    }

    /// @inheritdoc IAttestationRegistry
    function possessionMessage(address auditor, G1Point calldata pk1, G2Point calldata pk2)
        external
        view
        returns (bytes32)
    {
        return _possessionMessage(auditor, pk1, pk2);
    }

    /// @inheritdoc IAttestationRegistry
    function hashToG1(bytes32 message, bool pop) external view returns (G1Point memory) {
        return _hashToG1(message, pop ? _POP_DST : _ATTEST_DST);
    }

    /// @inheritdoc IAttestationRegistry
    function attestationRecordHash(bytes32 message, address submitter, Attestation calldata attestation)
        external
        pure
        returns (bytes24)
    {
        return _recordHash(message, submitter, attestation);
    }

    // --- messages ---------------------------------------------------------------------------------------------

    function _requireCheckpoint(bytes32 weightsDigest)
        private
        view
        returns (IProvenanceRegistry.CheckpointLocation memory checkpoint)
    {
        checkpoint = _registry.findByWeights(weightsDigest);
        if (checkpoint.runId == bytes32(0)) revert AttestationRegistryUnknownCheckpoint(weightsDigest);
    }

    /// @dev Binds the chain, the registry, the checkpoint (its stored record hash covers every committed field) and
    /// what the auditors found: the digest of their verification result and the report's content address.
    function _attestationMessage(
        IProvenanceRegistry.CheckpointLocation memory checkpoint,
        bytes32 weightsDigest,
        bytes32 verificationDigest,
        string calldata reportCid
    ) private view returns (bytes32) {
        return keccak256(
            abi.encode(
                _MESSAGE_TAG,
                block.chainid,
                address(_registry),
                checkpoint.runId,
                checkpoint.index,
                weightsDigest,
                checkpoint.recordHash,
                verificationDigest,
                keccak256(bytes(reportCid))
            )
        );
    }

    function _possessionMessage(address auditor, G1Point calldata pk1, G2Point calldata pk2)
        private
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(_POP_TAG, block.chainid, address(this), auditor, pk1, pk2));
    }

    /// @dev First 24 bytes of keccak256(abi.encode(message, submitter, attestation)).
    function _recordHash(bytes32 message, address submitter, Attestation calldata attestation)
        private
        pure
        returns (bytes24)
    {
        return bytes24(keccak256(abi.encode(message, submitter, attestation)));
    }

    // --- BN254 ------------------------------------------------------------------------------------------------

    /// @dev Σ pk1 of `signers`, which must be registered, unique and ascending.
    function _aggregateSigners(address[] calldata signers) private view returns (G1Point memory sum) {
        if (signers.length == 0) revert AttestationRegistryNoSigners();
        address previous = address(0);
        for (uint256 i = 0; i < signers.length; ++i) {
            address signer = signers[i];
            if (i > 0 && signer <= previous) {
                if (signer == previous) revert AttestationRegistryDuplicateSigner(signer);
                revert AttestationRegistrySignersNotSorted(i, previous, signer);
            }
            Auditor storage auditor = _auditors[signer];
            if (auditor.keyId == bytes32(0)) revert AttestationRegistryUnknownAuditor(signer);
            if (i == 0) sum = auditor.pk1;
            else sum = _add(sum, auditor.pk1);
            previous = signer;
        }
    }

    /// @dev One pairing check of `e(σ + γ·pk1, g2) · e(-(h + γ·g1), pk2) = 1` with γ bound to every input.
    function _verify(G1Point memory sigma, G1Point memory pk1, G1Point memory h, G2Point memory pk2)
        private
        view
        returns (bool)
    {
        uint256 gamma = uint256(keccak256(abi.encode(sigma, pk1, h, pk2))) % _R;
        G1Point memory left = _add(sigma, _mul(pk1, gamma));
        G1Point memory right = _add(h, _mul(G1Point(1, 2), gamma));
        uint256[12] memory input = [
            left.x,
            left.y,
            _G2_X_IM,
            _G2_X_RE,
            _G2_Y_IM,
            _G2_Y_RE,
            right.x,
            right.y == 0 ? 0 : _P - right.y,
            pk2.x[0],
            pk2.x[1],
            pk2.y[0],
            pk2.y[1]
        ];
        uint256[1] memory out;
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(200000, 0x08, input, 384, out, 32)
        }
        return ok && out[0] == 1;
    }

    /// @dev Try-and-increment: for counter c = 0, 1, ..., x = (keccak(dst‖m‖c‖0) ‖ keccak(dst‖m‖c‖1)) mod p (512
    /// bits reduced: no visible bias); the first x with x³ + 3 a square gives (x, y) with the smaller root y.
    function _hashToG1(bytes32 message, bytes memory dst) private view returns (G1Point memory) {
        for (uint256 counter = 0; counter < 256; ++counter) {
            uint256 hi = uint256(keccak256(abi.encodePacked(dst, message, uint8(counter), uint8(0))));
            uint256 lo = uint256(keccak256(abi.encodePacked(dst, message, uint8(counter), uint8(1))));
            uint256 x = addmod(mulmod(hi, _TWO_256_MOD_P, _P), lo, _P);
            uint256 rhs = addmod(mulmod(mulmod(x, x, _P), x, _P), 3, _P);
            uint256 y = _modexp(rhs, _SQRT_EXPONENT);
            if (mulmod(y, y, _P) == rhs) return G1Point(x, y > _HALF_P ? _P - y : y);
        }
        revert AttestationRegistryInvalidG1Point(0, 0); // probability 2^-256
    }

    function _requireG1(G1Point memory point, bool allowInfinity) private pure {
        if (point.x == 0 && point.y == 0) {
            if (allowInfinity) return;
        } else if (
            point.x < _P && point.y < _P
                && mulmod(point.y, point.y, _P) == addmod(mulmod(mulmod(point.x, point.x, _P), point.x, _P), 3, _P)
        ) {
            return;
        }
        revert AttestationRegistryInvalidG1Point(point.x, point.y);
    }

    function _add(G1Point memory a, G1Point memory b) private view returns (G1Point memory sum) {
        uint256[4] memory input = [a.x, a.y, b.x, b.y];
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(1000, 0x06, input, 128, sum, 64)
        }
        if (!ok) revert AttestationRegistryInvalidG1Point(b.x, b.y);
    }

    function _mul(G1Point memory a, uint256 scalar) private view returns (G1Point memory product) {
        uint256[3] memory input = [a.x, a.y, scalar];
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(10000, 0x07, input, 96, product, 64)
        }
        if (!ok) revert AttestationRegistryInvalidG1Point(a.x, a.y);
    }

    function _modexp(uint256 base, uint256 exponent) private view returns (uint256 result) {
        uint256[6] memory input = [uint256(32), 32, 32, base, exponent, _P];
        uint256[1] memory out;
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(10000, 0x05, input, 192, out, 32)
        }
        if (!ok) revert AttestationRegistryInvalidG1Point(base, 0);
        result = out[0];
    }
}
