// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IAttestationRegistry} from "./IAttestationRegistry.sol";
import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/**
 * @title AttestationRegistry (version 2)
 * @notice Co-signed auditor attestations of checkpoints committed in a ProvenanceRegistry (version 2), with BLS
 * signatures on BN254 verified on chain. No admin, no upgrade, nothing deleted: any account may register a key (with
 * a proof of possession), rotate or revoke its own keys, and anyone may anchor an attestation whose aggregate
 * signature verifies against the signers' current keys.
 *
 * Scheme (docs/attestations.md): secret key `sk`, keys `pk1 = sk·g1`, `pk2 = sk·g2`; a signature is `sk·H(m)` with
 * `H` a try-and-increment hash to G1 under a domain tag. For signers `S` with `apk1 = Σ pk1` (summed here with
 * 0x06 from storage) and the caller's `apk2`, one 0x08 call checks
 * `e(σ + γ·apk1, g2) · e(-(H(m) + γ·g1), apk2) = 1`, with `γ` a hash of every input: that is both
 * `e(σ, g2) = e(H(m), apk2)` and `e(apk1, g2) = e(g1, apk2)` except with probability 1/r. Registration and rotation
 * check the same equation with the proof of possession `sk·H_pop(auditor, pk1, pk2)`, which stops rogue-key attacks.
 *
 * What is bound on chain: the message (see {IAttestationRegistry}) covers the chain, both registries and every
 * statement field; the contract checks the run exists and has the checkpoint index. Whether the digests, log and ε
 * are those of that checkpoint is checked off chain against the run's verified history, because version 2 of the
 * ProvenanceRegistry keeps its records in events folded into one head per run, not in storage.
 *
 * Each auditor records a given statement once ({AttestationRegistryAlreadyAttested}): an attestation cannot be
 * replayed, and later auditors can still attest the same statement on their own. Gas does not depend on what is
 * attested; it grows by four storage reads and one point addition per co-signer.
 */
contract AttestationRegistry is IAttestationRegistry {
    // ProvenanceRegistry versions 2 and 3 share `getRun` and `VERSION` (3 adds pointers for readers).
    uint256 private constant _OLDEST_REGISTRY_VERSION = 2;
    uint256 private constant _NEWEST_REGISTRY_VERSION = 3;
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
    bytes32 private constant _MESSAGE_TAG = keccak256("prov.attestation.v2");
    bytes32 private constant _POP_TAG = keccak256("prov.auditor-pop.v1");

    // Storage, not immutable: clients recognise this contract by comparing its runtime code with the shipped
    // artifact, which an immutable (patched into the code at deployment) would break.
    IProvenanceRegistry private _registry;
    mapping(bytes32 keyId => Key) private _keys;
    mapping(address auditor => bytes32 keyId) private _currentKeys;
    mapping(bytes32 weightsDigest => AttestationLocation[]) private _attestations;
    // Which auditors (by number: bit `n % 256` of word `n / 256`) attested a message. Co-signers among the first 256
    // auditors share one word, so a co-signer adds ~100 gas for this instead of a new slot (22k).
    mapping(bytes32 message => mapping(uint256 word => uint256 bits)) private _attested;
    uint32 private _auditorCount;

    /// @dev Requirements: `registry` is a ProvenanceRegistry whose `VERSION()` is 2 or 3.
    constructor(IProvenanceRegistry registry) {
        uint256 version = 0;
        if (address(registry).code.length > 0) {
            try registry.VERSION() returns (uint256 answered) {
                version = answered;
            } catch {}
        }
        if (version < _OLDEST_REGISTRY_VERSION || version > _NEWEST_REGISTRY_VERSION) {
            revert AttestationRegistryUnsupportedRegistry(address(registry), version);
        }
        _registry = registry;
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - the caller has no active key (never registered, or its current key is revoked);
     * - `pk2` was never registered by anyone;
     * - `pk1` is a point of G1 other than infinity, and `pop` a point of G1;
     * - `pop` is the caller's signature over {possessionMessage} and `pk1`, `pk2` share one secret.
     *
     * Emits an {AuditorRegistered} event.
     */
    function registerAuditor(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external
    {
        bytes32 current = _currentKeys[msg.sender];
        if (current != bytes32(0) && _keys[current].revokedBlock == 0) {
            revert AttestationRegistryAuditorAlreadyRegistered(msg.sender, current);
        }
        _addKey(name, pk1, pk2, pop);
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - the caller has an active key (registered and not revoked);
     * - the new key meets every requirement of {registerAuditor}.
     *
     * The previous key is retired in this block: attestations recorded with it stay valid.
     *
     * Emits an {AuditorRegistered} and an {AuditorKeyRotated} event.
     */
    function rotateKey(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external
    {
        bytes32 previous = _currentKeys[msg.sender];
        if (previous == bytes32(0) || _keys[previous].revokedBlock != 0) {
            revert AttestationRegistryNoActiveKey(msg.sender);
        }
        bytes32 keyId = _addKey(name, pk1, pk2, pop);
        _keys[previous].retiredBlock = uint64(block.number);
        emit AuditorKeyRotated(msg.sender, previous, keyId);
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - `keyId` is a key the caller registered, not yet revoked.
     *
     * Emits an {AuditorKeyRevoked} event.
     */
    function revokeKey(bytes32 keyId) external {
        Key storage key = _keys[keyId];
        if (key.auditor != msg.sender) revert AttestationRegistryNotKeyOwner(keyId, msg.sender, key.auditor);
        if (key.revokedBlock != 0) revert AttestationRegistryKeyAlreadyRevoked(keyId, key.revokedBlock);
        key.revokedBlock = uint64(block.number);
        emit AuditorKeyRevoked(msg.sender, keyId);
    }

    /**
     * @inheritdoc IAttestationRegistry
     * @dev Requirements:
     * - the ProvenanceRegistry has run `runKey` with more than `index` checkpoints;
     * - `signers` is not empty, in strictly ascending order, and every signer has a current, unrevoked key and has
     *   not attested this statement (same message) before;
     * - `signature` is a point of G1 and verifies, with `aggregateKey`, over {attestationMessage} for the signers'
     *   current keys.
     *
     * Emits an {Attested} event.
     */
    function attest(Attestation calldata attestation) external {
        Statement calldata statement = attestation.statement;
        _requireCheckpoint(statement.runKey, statement.index);
        bytes32 message = _attestationMessage(statement);
        (G1Point memory apk1, bytes32[] memory keyIds) = _recordSigners(attestation.signers, message);
        _requireG1(attestation.signature, true);
        if (!_verify(attestation.signature, apk1, _hashToG1(message, _ATTEST_DST), attestation.aggregateKey)) {
            revert AttestationRegistryInvalidSignature(statement.weightsDigest, message);
        }

        AttestationLocation[] storage list = _attestations[statement.weightsDigest];
        uint64 number = uint64(list.length);
        bytes24 recordHash = _recordHash(message, number, msg.sender, keyIds, attestation);
        list.push(AttestationLocation(uint64(block.number), recordHash));
        emit Attested(statement.weightsDigest, statement.runKey, message, number, msg.sender, keyIds, attestation);
    }

    /// @inheritdoc IAttestationRegistry
    function provenanceRegistry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IAttestationRegistry
    function currentKey(address auditor) external view returns (bytes32) {
        return _currentKeys[auditor];
    }

    /// @inheritdoc IAttestationRegistry
    function getKey(bytes32 keyId) external view returns (Key memory) {
        return _keys[keyId];
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
    function hasAttested(bytes32 message, address signer) external view returns (bool) {
        bytes32 keyId = _currentKeys[signer];
        if (keyId == bytes32(0)) return false;
        uint32 number = _keys[keyId].auditorNumber;
        return _attested[message][number >> 8] & (1 << (number & 0xff)) != 0;
    }

    /// @inheritdoc IAttestationRegistry
    function attestationMessage(Statement calldata statement) external view returns (bytes32) {
        return _attestationMessage(statement);
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
    function attestationRecordHash(
        bytes32 message,
        uint64 number,
        address submitter,
        bytes32[] calldata keyIds,
        Attestation calldata attestation
    ) external pure returns (bytes24) {
        return _recordHash(message, number, submitter, keyIds, attestation);
    }

    // --- keys -------------------------------------------------------------------------------------------------

    /// @dev Checks and stores a new key for the caller, makes it current and emits {AuditorRegistered}.
    function _addKey(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        private
        returns (bytes32 keyId)
    {
        keyId = keccak256(abi.encode(pk2));
        address owner = _keys[keyId].auditor;
        if (owner != address(0)) revert AttestationRegistryKeyAlreadyRegistered(keyId, owner);
        _requireG1(pk1, false);
        _requireG1(pop, true);
        G1Point memory h = _hashToG1(_possessionMessage(msg.sender, pk1, pk2), _POP_DST);
        if (!_verify(pop, pk1, h, pk2)) revert AttestationRegistryInvalidProofOfPossession(msg.sender, keyId);

        bytes32 previous = _currentKeys[msg.sender];
        Key storage key = _keys[keyId];
        key.auditor = msg.sender;
        key.auditorNumber = previous == bytes32(0) ? ++_auditorCount : _keys[previous].auditorNumber;
        key.registeredBlock = uint64(block.number);
        key.pk1 = pk1;
        _currentKeys[msg.sender] = keyId;
        emit AuditorRegistered(msg.sender, keyId, name, pk1, pk2);
    }

    /// @dev Σ pk1 of the signers' current keys and those key ids; the signers must be unique, ascending, have an
    /// unrevoked key and not have attested `message` before (each is marked as having attested it now).
    function _recordSigners(address[] calldata signers, bytes32 message)
        private
        returns (G1Point memory sum, bytes32[] memory keyIds)
    {
        if (signers.length == 0) revert AttestationRegistryNoSigners();
        keyIds = new bytes32[](signers.length);
        address previous = address(0);
        for (uint256 i = 0; i < signers.length; ++i) {
            address signer = signers[i];
            if (i > 0 && signer <= previous) {
                if (signer == previous) revert AttestationRegistryDuplicateSigner(signer);
                revert AttestationRegistrySignersNotSorted(i, previous, signer);
            }
            bytes32 keyId = _currentKeys[signer];
            if (keyId == bytes32(0)) revert AttestationRegistryUnknownAuditor(signer);
            Key storage key = _keys[keyId];
            if (key.revokedBlock != 0) revert AttestationRegistryKeyRevoked(signer, keyId);
            uint32 number = key.auditorNumber;
            mapping(uint256 => uint256) storage attested = _attested[message];
            uint256 bits = attested[number >> 8];
            uint256 bit = 1 << (number & 0xff);
            if (bits & bit != 0) revert AttestationRegistryAlreadyAttested(message, signer);
            attested[number >> 8] = bits | bit;
            keyIds[i] = keyId;
            sum = i == 0 ? key.pk1 : _add(sum, key.pk1);
            previous = signer;
        }
    }

    // --- messages ---------------------------------------------------------------------------------------------

    /// @dev The run exists on the ProvenanceRegistry and has checkpoint `index` (its `getRun` reverts for an
    /// unknown run).
    function _requireCheckpoint(bytes32 runKey, uint64 index) private view {
        try _registry.getRun(runKey) returns (IProvenanceRegistry.RunState memory run) {
            if (run.owner == address(0)) revert AttestationRegistryUnknownRun(runKey);
            if (index >= run.checkpointCount) {
                revert AttestationRegistryUnknownCheckpoint(runKey, index, run.checkpointCount);
            }
        } catch {
            revert AttestationRegistryUnknownRun(runKey);
        }
    }

    /// @dev The statement message (see {IAttestationRegistry}); two `abi.encode` halves concatenate to exactly the
    /// encoding of all fields (every field is a static word), which keeps the stack shallow.
    function _attestationMessage(Statement calldata s) private view returns (bytes32) {
        return keccak256(
            bytes.concat(
                abi.encode(
                    _MESSAGE_TAG, block.chainid, address(_registry), address(this), s.runKey, s.index, s.weightsDigest
                ),
                abi.encode(
                    s.checkpointDigest,
                    s.logSize,
                    s.logRoot,
                    s.epsilonMicro,
                    keccak256(bytes(s.level)),
                    s.verificationDigest,
                    keccak256(bytes(s.reportCid))
                )
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

    /// @dev First 24 bytes of keccak256(abi.encode(message, number, submitter, keyIds, attestation)).
    function _recordHash(
        bytes32 message,
        uint64 number,
        address submitter,
        bytes32[] memory keyIds,
        Attestation calldata attestation
    ) private pure returns (bytes24) {
        return bytes24(keccak256(abi.encode(message, number, submitter, keyIds, attestation)));
    }

    // --- BN254 ------------------------------------------------------------------------------------------------

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
