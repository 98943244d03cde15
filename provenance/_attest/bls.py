"""BLS signatures on BN254 (alt_bn128) with py-ecc, matching AttestationRegistry.sol bit for bit.

Keys: secret `sk` in [1, r), public keys `pk1 = sk·g1` (G1) and `pk2 = sk·g2` (G2). Signatures and hashed
messages live in G1 (64-byte points, cheap on chain); verification is `e(σ, g2) = e(H(m), pk2)`.
`H` is try-and-increment with a domain tag: for c = 0, 1, ...: `x = (keccak(dst‖m‖c‖0) ‖ keccak(dst‖m‖c‖1)) mod p`;
the first `x` with `x³ + 3` a square gives `(x, y)`, `y` the smaller root. Proofs of possession sign the key itself
under another tag. The same-message aggregate of signers S verifies as `e(Σσ, g2) = e(H(m), Σpk2)`; that is sound
only for keys whose possession was proven (rogue-key attack), which the registry checks at registration.

Encodings: a G1 point is `(x, y)` ints ((0, 0) is infinity); a G2 point is `((x_im, x_re), (y_im, y_re))`, the order
of the EVM precompile. Each parse checks the point is on its curve and, for G2, in the prime-order subgroup.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from eth_utils import keccak

from provenance.errors import FormatError

P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
ATTEST_DST = b"PROV-V1-BN254G1-KECCAK-TAI-ATTEST"
POP_DST = b"PROV-V1-BN254G1-KECCAK-TAI-POP"

G1Affine = tuple[int, int]
G2Affine = tuple[tuple[int, int], tuple[int, int]]
INFINITY_G1: G1Affine = (0, 0)


def _curve() -> Any:
    import py_ecc.optimized_bn128 as curve

    return curve


# --- conversions between affine ints and py-ecc's projective points -------------------------------------------


def g1_from_affine(point: G1Affine) -> Any:
    """A py-ecc G1 point from affine ints, checked on the curve (G1 has cofactor 1: on the curve is in G1)."""
    c = _curve()
    x, y = point
    if (x, y) == INFINITY_G1:
        return c.Z1
    if not (0 <= x < P and 0 <= y < P) or (y * y - x * x * x - 3) % P != 0:
        raise FormatError(f"({x:#x}, {y:#x}) is not a point of BN254 G1")
    return (c.FQ(x), c.FQ(y), c.FQ.one())


def g1_to_affine(point: Any) -> G1Affine:
    c = _curve()
    if c.is_inf(point):
        return INFINITY_G1
    x, y = c.normalize(point)
    return int(x), int(y)


def g2_from_affine(point: G2Affine) -> Any:
    """A py-ecc G2 point from `((x_im, x_re), (y_im, y_re))`, checked on the twist and in the order-r subgroup."""
    c = _curve()
    (x_im, x_re), (y_im, y_re) = point
    if not all(0 <= v < P for v in (x_im, x_re, y_im, y_re)):
        raise FormatError("a BN254 G2 coordinate is out of range")
    if (x_im, x_re, y_im, y_re) == (0, 0, 0, 0):
        return c.Z2
    q = (c.FQ2([x_re, x_im]), c.FQ2([y_re, y_im]), c.FQ2.one())
    if not c.is_on_curve(q, c.b2):
        raise FormatError("not a point of the BN254 G2 twist")
    if not c.is_inf(c.multiply(q, R)):
        raise FormatError("a BN254 G2 point outside the order-r subgroup")
    return q


def g2_to_affine(point: Any) -> G2Affine:
    c = _curve()
    if c.is_inf(point):
        return ((0, 0), (0, 0))
    x, y = c.normalize(point)
    return ((int(x.coeffs[1]), int(x.coeffs[0])), (int(y.coeffs[1]), int(y.coeffs[0])))


# --- hashing ------------------------------------------------------------------------------------------------------


def hash_to_field(message: bytes, dst: bytes, counter: int) -> int:
    """512 hash bits reduced mod p (as RFC 9380's hash_to_field does with L = 64): the bias is below 2^-250."""
    prefix = dst + message + bytes([counter])
    return int.from_bytes(keccak(prefix + b"\x00") + keccak(prefix + b"\x01"), "big") % P


def hash_to_g1(message: bytes, dst: bytes = ATTEST_DST) -> G1Affine:
    """Try-and-increment hash of a 32-byte message to G1 (what the contract's `hashToG1` computes)."""
    if len(message) != 32:
        raise ValueError("the message hashed to G1 is a 32-byte digest")
    for counter in range(256):
        x = hash_to_field(message, dst, counter)
        rhs = (x * x * x + 3) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            return x, min(y, P - y)
    raise ValueError("no curve point in 256 tries (probability 2^-256)")


# --- keys, signing, verification ---------------------------------------------------------------------------------


def new_secret() -> int:
    """A uniformly random secret scalar in [1, r)."""
    return secrets.randbelow(R - 1) + 1


def public_keys(sk: int) -> tuple[G1Affine, G2Affine]:
    """`(sk·g1, sk·g2)`."""
    c = _curve()
    if not 0 < sk < R:
        raise ValueError("a BN254 secret key is an integer in [1, r)")
    return g1_to_affine(c.multiply(c.G1, sk)), g2_to_affine(c.multiply(c.G2, sk))


def key_id(pk2: G2Affine) -> bytes:
    """keccak256 of the ABI encoding of the G2 key (four uint256 words, precompile order): the contract's keyId."""
    (x_im, x_re), (y_im, y_re) = pk2
    return keccak(b"".join(v.to_bytes(32, "big") for v in (x_im, x_re, y_im, y_re)))


def sign(sk: int, message: bytes, dst: bytes = ATTEST_DST) -> G1Affine:
    """`sk·H(message)`."""
    c = _curve()
    return g1_to_affine(c.multiply(g1_from_affine(hash_to_g1(message, dst)), sk))


def _pairing_product_is_one(pairs: Sequence[tuple[Any, Any]]) -> bool:
    """Whether Π e(P_i, Q_i) = 1, with one final exponentiation for all Miller loops."""
    c = _curve()
    from py_ecc.optimized_bn128.optimized_pairing import pairing

    acc = c.FQ12.one()
    for g1, g2 in pairs:
        acc = acc * pairing(g2, g1, final_exponentiate=False)
    return bool(c.final_exponentiate(acc) == c.FQ12.one())


def verify(pk2: G2Affine, message: bytes, signature: G1Affine, dst: bytes = ATTEST_DST) -> bool:
    """Whether `signature` is a signature of `message` by the key(s) summing to `pk2`."""
    c = _curve()
    try:
        sigma, key = g1_from_affine(signature), g2_from_affine(pk2)
    except FormatError:
        return False
    if c.is_inf(key):
        return False
    h = g1_from_affine(hash_to_g1(message, dst))
    return _pairing_product_is_one([(sigma, c.G2), (c.neg(h), key)])


def keys_match(pk1: G1Affine, pk2: G2Affine) -> bool:
    """Whether `pk1` and `pk2` share one secret: `e(pk1, g2) = e(g1, pk2)`."""
    c = _curve()
    try:
        a, b = g1_from_affine(pk1), g2_from_affine(pk2)
    except FormatError:
        return False
    return _pairing_product_is_one([(a, c.G2), (c.neg(c.G1), b)])


def aggregate_signatures(signatures: Sequence[G1Affine]) -> G1Affine:
    """Σ σ_i (G1 point additions)."""
    c = _curve()
    acc = c.Z1
    for s in signatures:
        acc = c.add(acc, g1_from_affine(s))
    return g1_to_affine(acc)


def aggregate_g1(keys: Sequence[G1Affine]) -> G1Affine:
    return aggregate_signatures(keys)


def aggregate_g2(keys: Sequence[G2Affine]) -> G2Affine:
    """Σ pk2_i (G2 point additions)."""
    c = _curve()
    acc = c.Z2
    for k in keys:
        acc = c.add(acc, g2_from_affine(k))
    return g2_to_affine(acc)


def possession_message(*, chain_id: int, contract: str, auditor: str, pk1: G1Affine, pk2: G2Affine) -> bytes:
    """What a proof of possession signs (the contract's `possessionMessage`): the key bound to the account that
    registers it, on one chain and one AttestationRegistry, so it cannot be replayed for another account."""
    from eth_abi import encode

    (x_im, x_re), (y_im, y_re) = pk2
    return keccak(encode(
        ["bytes32", "uint256", "address", "address", "uint256", "uint256", "uint256[2]", "uint256[2]"],
        [keccak(b"prov.auditor-pop.v1"), chain_id, contract, auditor, pk1[0], pk1[1], [x_im, x_re], [y_im, y_re]]))


def prove_possession(sk: int, message: bytes) -> G1Affine:
    """The proof of possession: a signature over `possession_message(...)` under the POP domain tag."""
    return sign(sk, message, POP_DST)


def verify_possession(pk1: G1Affine, pk2: G2Affine, message: bytes, pop: G1Affine) -> bool:
    """The registration check: the G1 and G2 keys match and `pop` signs `message` under the POP tag, both in one
    product of two pairings `e(pop + γ·pk1, g2) · e(-(H(m) + γ·g1), pk2) = 1` with a fresh random γ (the contract
    derives γ from a hash of the inputs instead)."""
    c = _curve()
    try:
        sigma, a, b = g1_from_affine(pop), g1_from_affine(pk1), g2_from_affine(pk2)
    except FormatError:
        return False
    if c.is_inf(a) or c.is_inf(b):
        return False
    gamma = secrets.randbelow(R - 1) + 1
    h = g1_from_affine(hash_to_g1(message, POP_DST))
    left = c.add(sigma, c.multiply(a, gamma))
    right = c.neg(c.add(h, c.multiply(c.G1, gamma)))
    return _pairing_product_is_one([(left, c.G2), (right, b)])
