"""RFC 6962 Merkle tree: known answers, a naive reference cross-check, mutated proofs, round-trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance import merkle
from provenance.errors import ProofError, RootMismatch, VerificationError

# The eight leaf inputs of the certificate-transparency / transparency-dev test vectors
# (transparency-dev/merkle testonly/constants.go), and the roots of their first n leaves published there.
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# --- naive reference: RFC 6962 §2.1 definitions, transcribed literally -----------------------------------

def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def leaves(d: list[bytes]) -> list[bytes]:
    return [merkle.hash_leaf(x) for x in d]


def test_empty_tree_root_is_hash_of_empty_string() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT


@pytest.mark.parametrize("n", range(1, 9))
def test_known_answer_roots(n: int) -> None:
    assert merkle.root_of_data(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


def test_reference_cross_check_all_sizes_up_to_130() -> None:
    for n in range(0, 131):
        d = data(n)
        hs = leaves(d)
        expected = ref_mth(d)
        assert merkle.root(hs) == expected, n
        rng = merkle.CompactRange()
        for h in hs:
            rng.append(h)
        assert rng.root() == expected and rng.size == n
        # Re-hydrating a compact range from its persisted form gives the same root.
        assert merkle.CompactRange(rng.size, rng.hashes).root() == expected
        for m in range(n):
            proof = merkle.inclusion_proof(m, hs)
            assert proof == ref_path(m, d), (m, n)
            merkle.verify_inclusion(hs[m], m, n, proof, expected)


def test_consistency_matches_reference_all_pairs_up_to_70() -> None:
    for n in range(1, 71):
        d = data(n)
        hs = leaves(d)
        root2 = ref_mth(d)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, hs)
            assert proof == (ref_subproof(m, d, True) if m < n else []), (m, n)
            merkle.verify_consistency(m, n, proof, ref_mth(d[:m]), root2)


# --- mutated proofs must fail ---------------------------------------------------------------------------

def _flip(b: bytes, bit: int = 0) -> bytes:
    return bytes([b[0] ^ (1 << bit)]) + b[1:]


@pytest.mark.parametrize("n", [2, 3, 5, 7, 8, 13, 64, 100])
def test_mutated_inclusion_proofs_fail(n: int) -> None:
    hs = leaves(data(n))
    root = merkle.root(hs)
    for m in range(n):
        proof = merkle.inclusion_proof(m, hs)
        bad_cases: list[tuple[bytes, int, int, list[bytes]]] = [
            (_flip(hs[m]), m, n, proof),                      # flipped bit in the leaf
            (hs[m], m, n, [*proof, hs[0]]),                     # extra node
            # Wrong size. An inclusion proof alone does not bind the size (a leaf off the right edge has the
            # same path in a tree one larger; the committed (size, root) pair does), so use a size whose
            # path is necessarily longer.
            (hs[m], m, 2 * n + 1, proof),
        ]
        if proof:
            bad_cases.append((hs[m], m, n, proof[:-1]))         # missing node
            for i in range(len(proof)):
                mutated = list(proof)
                mutated[i] = _flip(mutated[i], 7)
                bad_cases.append((hs[m], m, n, mutated))        # flipped bit in each node
        if n > 1:
            bad_cases.append((hs[m], (m + 1) % n, n, proof))    # wrong index
        for leaf, idx, size, p in bad_cases:
            with pytest.raises(VerificationError):
                merkle.verify_inclusion(leaf, idx, size, p, root)


def test_inclusion_preconditions() -> None:
    hs = leaves(data(4))
    root = merkle.root(hs)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(hs[0], 4, 4, [], root)  # index == size
    with pytest.raises(ProofError):
        merkle.verify_inclusion(hs[0], -1, 4, [], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(hs[0][:31], 0, 4, merkle.inclusion_proof(0, hs), root)  # short digest
    with pytest.raises(ProofError):
        merkle.verify_inclusion(hs[0], 0, 4, [b"\x00" * 33, *merkle.inclusion_proof(0, hs)[1:]], root)
    with pytest.raises(ProofError):
        merkle.inclusion_proof(4, hs)
    with pytest.raises(ProofError):
        merkle.CompactRange(3, [hs[0]])  # size 3 needs two hashes


@pytest.mark.parametrize("n", [3, 7, 8, 9, 33])
def test_mutated_consistency_proofs_fail(n: int) -> None:
    hs = leaves(data(n))
    root2 = merkle.root(hs)
    for m in range(1, n):
        root1 = merkle.root(hs[:m])
        proof = merkle.consistency_proof(m, hs)
        bad: list[tuple[int, int, list[bytes], bytes, bytes]] = [
            (m, n, [*proof, hs[0]], root1, root2),           # extra node
            (m, n, proof[:-1], root1, root2),                # missing node
            (m, n, proof, _flip(root1), root2),              # wrong first root
            (m, n, proof, root1, _flip(root2)),              # wrong second root
            (n, m, proof, root2, root1),                     # sizes swapped
        ]
        if m + 1 < n:
            bad.append((m + 1, n, proof, root1, root2))      # wrong size
        for i in range(len(proof)):
            mutated = list(proof)
            mutated[i] = _flip(mutated[i], 3)
            bad.append((m, n, mutated, root1, root2))
        for s1, s2, p, r1, r2 in bad:
            with pytest.raises(VerificationError):
                merkle.verify_consistency(s1, s2, p, r1, r2)


def test_consistency_edge_cases() -> None:
    hs = leaves(data(5))
    r = merkle.root(hs)
    merkle.verify_consistency(5, 5, [], r, r)
    merkle.verify_consistency(0, 5, [], merkle.EMPTY_ROOT, r)
    with pytest.raises(RootMismatch):
        merkle.verify_consistency(5, 5, [], r, _flip(r))
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 5, [r], r, r)
    with pytest.raises(ProofError):
        merkle.verify_consistency(2, 5, [], merkle.root(hs[:2]), r)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=300), st.data())
def test_roundtrip_random_trees(items: list[bytes], draw: st.DataObject) -> None:
    hs = leaves(items)
    n = len(hs)
    root = merkle.root(hs)
    assert root == ref_mth(items)
    m = draw.draw(st.integers(0, n - 1))
    merkle.verify_inclusion(hs[m], m, n, merkle.inclusion_proof(m, hs), root)
    s1 = draw.draw(st.integers(0, n))
    merkle.verify_consistency(s1, n, merkle.consistency_proof(s1, hs), merkle.root(hs[:s1]), root)
