"""The consistent hash ring that decides which node owns a resource (§10).

Normative, so that a Python caller and a Rust node send a resource's
messages to the same node: 100 virtual points per node, point ``i`` of node
``n`` is the first 8 bytes (big-endian) of ``MD5("<n>#<i>")``, a key hashes
to the first 8 bytes of ``MD5(key)``, and the owner is the node of the
first point at or after the key's hash, wrapping around. Equal points: the
smaller node id first. Checked against the protocol's vectors in
``tests/test_ring.py``.
"""

from __future__ import annotations

import bisect
from hashlib import md5
from collections.abc import Iterable

#: Virtual points per node.
POINTS_PER_NODE = 100


def key_hash(key: str) -> int:
    """A key's place on the ring: the first 8 bytes of MD5 of its UTF-8 bytes."""
    return int.from_bytes(md5(key.encode("utf-8")).digest()[:8], "big")


def point(node: str, index: int) -> int:
    """Virtual point ``index`` of ``node`` (32-hex form)."""
    return key_hash(f"{node}#{index}")


class HashRing:
    """An immutable ring over a set of node ids (32-hex strings).

    Built once per membership change and read on every routed call, so
    lookups are a bisect over a sorted list.
    """

    __slots__ = ("_values", "_owners", "nodes")

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self.nodes: frozenset[str] = frozenset(nodes)
        points = sorted(
            (point(node, i), node) for node in self.nodes for i in range(POINTS_PER_NODE)
        )
        self._values = [value for value, _ in points]
        self._owners = [node for _, node in points]

    def owner(self, key: str) -> str | None:
        """The node that owns ``key``, or ``None`` on an empty ring."""
        if not self._values:
            return None
        at = bisect.bisect_left(self._values, key_hash(key))
        return self._owners[at if at < len(self._owners) else 0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"HashRing({sorted(self.nodes)!r})"
