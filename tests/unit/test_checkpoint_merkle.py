"""The RFC 9162 Merkle tree of `dee.checkpoint.merkle` against the Certificate Transparency
test vectors (transparency-dev/merkle, from the C++ and Go CT implementations): the 8 leaves,
the root of every prefix, inclusion and consistency proofs, and proofs that must fail."""

from __future__ import annotations

import pytest

from dee.checkpoint import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # the empty tree
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (0, 8, h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]  # fmt: skip
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]  # fmt: skip


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == ROOTS[0]


@pytest.mark.parametrize("size", range(1, 9))
def test_the_root_of_every_prefix_is_the_vectors(size: int) -> None:
    assert merkle.root(HASHES[:size]) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_are_the_vectors_and_verify(index: int, size: int, path: list[bytes]) -> None:
    assert merkle.inclusion_proof(HASHES[:size], index) == path
    assert merkle.verify_inclusion(HASHES[index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_a_spoiled_inclusion_proof_fails(index: int, size: int, path: list[bytes]) -> None:
    leaf, root = HASHES[index], ROOTS[size]
    assert not merkle.verify_inclusion(leaf, index ^ 1, size, path, root)
    assert not merkle.verify_inclusion(leaf, index, size * 2, path, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), index, size, path, root)
    assert not merkle.verify_inclusion(leaf, index, size, path, ROOTS[0])
    assert not merkle.verify_inclusion(leaf, index, size, [*path, root], root)
    assert not merkle.verify_inclusion(leaf, index, size, path[:-1], root)
    for i in range(len(path)):
        flipped = [bytes([p[0] ^ 8]) + p[1:] if j == i else p for j, p in enumerate(path)]
        assert not merkle.verify_inclusion(leaf, index, size, flipped, root)


@pytest.mark.parametrize("size", range(1, 9))
def test_every_leaf_of_every_tree_up_to_8_proves_its_inclusion(size: int) -> None:
    for index in range(size):
        path = merkle.inclusion_proof(HASHES[:size], index)
        assert merkle.verify_inclusion(HASHES[index], index, size, path, ROOTS[size])
        assert not merkle.verify_inclusion(HASHES[(index + 1) % 8], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_are_the_vectors_and_verify(old: int, new: int, proof: list[bytes]) -> None:
    assert merkle.consistency_proof(HASHES[:new], old) == proof
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize(("old", "new", "proof"), [v for v in CONSISTENCY if v[2]])
def test_a_spoiled_consistency_proof_fails(old: int, new: int, proof: list[bytes]) -> None:
    assert not merkle.verify_consistency(old - 1, new, ROOTS[old], ROOTS[new], proof)
    assert not merkle.verify_consistency(old, new, ROOTS[new], ROOTS[old], proof)
    assert not merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], [])
    assert not merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof[:-1])
    assert not merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], [proof[0], *proof])
    for i in range(len(proof)):
        flipped = [bytes([p[0] ^ 16]) + p[1:] if j == i else p for j, p in enumerate(proof)]
        assert not merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], flipped)


def test_every_pair_of_sizes_up_to_8_is_consistent_and_a_forged_old_root_is_not() -> None:
    for new in range(1, 9):
        for old in range(new + 1):
            proof = merkle.consistency_proof(HASHES[:new], old)
            assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
            if 0 < old < new:
                forged = merkle.root([*HASHES[: old - 1], merkle.leaf_hash(b"forged")])
                assert not merkle.verify_consistency(old, new, forged, ROOTS[new], proof)


def test_a_shrinking_tree_is_never_consistent() -> None:
    assert not merkle.verify_consistency(3, 2, ROOTS[3], ROOTS[2], [])
    with pytest.raises(ValueError):
        merkle.consistency_proof(HASHES[:2], 3)
