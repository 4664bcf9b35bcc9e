"""The ring against the normative vectors of docs/wire-protocol.md §10."""

import pytest

from cloudbus.ring import HashRing, key_hash, point


def node(n: int) -> str:
    return f"{n:032x}"


@pytest.mark.parametrize(
    "n, i, value",
    [
        (1, 0, "bb5b89d44987f55d"), (1, 1, "f04174c3b20b4dd4"), (1, 99, "77eff90974f3ca38"),
        (2, 0, "f447742d6496cf80"), (2, 1, "c91cf6d01ebf0325"), (2, 99, "99d04ffd7bdb5a1d"),
        (3, 0, "c5df6f82dbefd8f3"), (3, 1, "53b55d9173d5f07a"), (3, 99, "64198d1eac135c95"),
    ],
)
def test_virtual_points_match_the_vectors(n: int, i: int, value: str) -> None:
    assert f"{point(node(n), i):016x}" == value


@pytest.mark.parametrize(
    "key, value",
    [
        ("", "d41d8cd98f00b204"),
        ("vm-1", "8d4f7b9cc5444954"),
        ("0123456789abcdef0123456789abcdef", "8516ac99dc606032"),
        ("191fb10a8eaaa71e50495183fc123ce8", "ff8a31af495f529d"),
    ],
)
def test_key_hashes_match_the_vectors(key: str, value: str) -> None:
    assert f"{key_hash(key):016x}" == value


@pytest.mark.parametrize(
    "key, with_three, with_one_and_three",
    [
        ("21f402f25b1a0fd722b83169e10509f8", 3, 3),
        ("c2add694bf942dc77b376592d9c862cd", 1, 1),
        ("5d418dbd02ac1097f9ca517b13c92edb", 2, 3),
        ("de8297196545d1d595aea4b7ff4b9eca", 2, 1),
        ("dcfb113069f19d91d58f5c2d3a53a969", 3, 3),
        ("191fb10a8eaaa71e50495183fc123ce8", 2, 1),  # past the largest point: wraps
    ],
)
def test_owners_match_the_vectors(key: str, with_three: int, with_one_and_three: int) -> None:
    assert HashRing([node(1), node(2), node(3)]).owner(key) == node(with_three)
    assert HashRing([node(1), node(3)]).owner(key) == node(with_one_and_three)


def test_an_empty_ring_owns_nothing() -> None:
    assert HashRing().owner("vm-1") is None


def test_keys_are_hashed_as_utf8_without_normalisation() -> None:
    assert key_hash("é") != key_hash("e\u0301")
