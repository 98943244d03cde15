"""RFC 6962 / RFC 9162 Merkle trees over SHA-256.

Leaves are hashed as `H(0x00 || data)`, interior nodes as `H(0x01 || left || right)`, the empty tree's root is
`H("")`. Functions work on *leaf hashes* (as transparency-dev/merkle does). Proof construction is index
arithmetic over a list of leaf hashes; verification (RFC 9162 §2.1.3.2, §2.1.4.2) is separate and checks every
precondition: index < size, digest lengths, proof lengths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from provenance.errors import ProofError, RootMismatch

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes", expected=HASH_SIZE, found=len(value))


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree over `leaf_hashes`, level by level (a lone right node is promoted unchanged,
    which yields exactly RFC 6962's split at the largest power of two)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    prefix = NODE_PREFIX
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        it = iter(level)
        level = [sha(prefix + a + b).digest() for a, b in zip(it, it, strict=False)]
        if odd is not None:
            level.append(odd)
    return level[0]


def root_of_data(leaves: Iterable[bytes]) -> bytes:
    """The root of the tree whose leaves are the given data items (each hashed with the 0x00 prefix)."""
    sha = _sha256
    return root([sha(LEAF_PREFIX + d).digest() for d in leaves])


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The frontier of a growing tree: one perfect-subtree root per set bit of `size`, largest first.

    Appending is O(log n) hashes; `root()` is O(log n). Persist it as `(size, hashes)`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ProofError("compact range size must be >= 0", found=size)
        if len(hashes) != size.bit_count():
            raise ProofError("compact range needs one hash per set bit of its size",
                             expected=size.bit_count(), found=len(hashes))
        for h in hashes:
            _check_hash(h, "compact range hash")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        _check_hash(leaf_hash, "leaf hash")
        hashes = self._hashes
        hashes.append(leaf_hash)
        n = self._size
        while n & 1:
            right = hashes.pop()
            hashes[-1] = hash_children(hashes[-1], right)
            n >>= 1
        self._size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = hash_children(h, acc)
        return acc

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)


# --- proof construction (index arithmetic over leaf hashes) ---------------------------------------------


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]) for the tree over all of `leaf_hashes`, bottom-up."""
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ProofError("inclusion proof index out of range", expected=f"< {size}", found=index)
    proof: list[bytes] = []
    lo, hi = 0, size
    # Walk down recording siblings, then reverse to get the bottom-up order.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo : lo + k]))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PROOF(size1, D[n]) that the tree of the first `size1` leaves is a prefix of the whole tree."""
    size2 = len(leaf_hashes)
    if not 0 <= size1 <= size2:
        raise ProofError("consistency proof sizes out of order", expected=f"0 <= size1 <= {size2}", found=size1)
    if size1 == 0 or size1 == size2:
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(root(leaf_hashes[lo:hi]))
            break
        k = _split(n)
        if m <= k:
            proof.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    proof.reverse()
    return proof


# --- verification --------------------------------------------------------------------------------------


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2); raises ProofError if malformed."""
    _check_hash(leaf_hash, "leaf hash")
    if not 0 <= index < size:
        raise ProofError("inclusion proof index out of range", expected=f"< {size}", found=index)
    for p in proof:
        _check_hash(p, "proof node")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof has too many nodes", found=len(proof))
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has too few nodes", found=len(proof))
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """Raise unless `proof` shows `leaf_hash` at `index` in the tree of `size` leaves with `root_hash`."""
    _check_hash(root_hash, "root")
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root_hash:
        raise RootMismatch("inclusion proof does not lead to the committed root", expected=root_hash, found=computed)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise unless `proof` shows the tree (size1, root1) is a prefix of (size2, root2) (RFC 9162 §2.1.4.2)."""
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    for p in proof:
        _check_hash(p, "proof node")
    if not 0 <= size1 <= size2:
        raise ProofError("consistency proof sizes out of order", expected=f"0 <= {size1} <= {size2}", found=size1)
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty", found=len(proof))
        if root1 != root2:
            raise RootMismatch("equal-size trees have different roots", expected=root1, found=root2)
        return
    if size1 == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty", found=len(proof))
        return
    if not proof:
        raise ProofError("consistency proof is empty", expected="at least one node", found=0)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof has too many nodes", found=len(proof))
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has too few nodes", found=len(proof))
    if fr != root1:
        raise RootMismatch("consistency proof does not lead to the first root", expected=root1, found=fr)
    if sr != root2:
        raise RootMismatch("consistency proof does not lead to the second root", expected=root2, found=sr)
