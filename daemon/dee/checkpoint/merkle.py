"""RFC 9162 (Certificate Transparency 2.0) Merkle trees, pure: the tree hash, inclusion and
consistency proofs, and their verification (sections 2.1.1 to 2.1.4).

Leaves are given as their leaf hashes (`leaf_hash(data)`), so that a caller hashes each leaf
once however many proofs it draws from the tree. A leaf hash is SHA-256(0x00 || data), an
interior node SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the largest
power of two smaller than n; the empty tree's hash is SHA-256 of nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaf hashes, iteratively: the perfect subtrees from the left, then
    folded from the right (the same tree as the RFC's recursive split)."""
    if not leaves:
        return EMPTY_ROOT
    peaks: list[tuple[int, bytes]] = []  # (size, hash) of perfect subtrees, sizes decreasing
    for leaf in leaves:
        size, node = 1, leaf
        while peaks and peaks[-1][0] == size:
            node = node_hash(peaks.pop()[1], node)
            size *= 2
        peaks.append((size, node))
    node = peaks[-1][1]
    for _, left in reversed(peaks[:-1]):
        node = node_hash(left, node)
    return node


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)} leaves")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 section 2.1.4.1, n = len(leaves)."""
    if not 0 <= old_size <= len(leaves):
        raise ValueError(f"a tree of {old_size} leaves is not a prefix of one of {len(leaves)}")
    if old_size in (0, len(leaves)):
        return []
    return _subproof(leaves, old_size, True)


def _subproof(leaves: Sequence[bytes], m: int, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaves[:k], m, complete), root(leaves[k:])]
    return [*_subproof(leaves[k:], m - k, False), root(leaves[:k])]


def _to_right_child(fn: int, sn: int) -> tuple[int, int]:
    """The RFC's "right-shift fn and sn equally until LSB(fn) is set or fn is 0"."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does `proof` show the leaf hash at `index` in the tree of
    `size` leaves whose hash is `expected_root`?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    node = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(p, node)
            fn, sn = _to_right_child(fn, sn)
        else:
            node = node_hash(node, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == expected_root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree of `old_size` leaves hashing to `old_root` a
    prefix of the tree of `new_size` leaves hashing to `new_root`?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _to_right_child(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
