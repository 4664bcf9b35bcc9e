"""Who is on the bus: live members, their services, the ring (§9).

Members announce themselves with ``cloudbus.node.joined`` and a heartbeat
every ``interval_ms``; one that misses ``misses`` of its own intervals is
dead, one that sends ``left`` is gone. As in the Rust node, silence is
judged against how far this node has read its own event queue (its own
heartbeats come back through it in order with everything else), not the
wall clock, so a node that is behind on its events does not declare live
nodes dead. Everything here is synchronous bookkeeping; the bus feeds it
events and runs the heartbeat loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .address import node_id
from .ring import HashRing

JOINED = "cloudbus.node.joined"
HEARTBEAT = "cloudbus.node.heartbeat"
LEFT = "cloudbus.node.left"
DISCOVER = "cloudbus.node.discover"

#: Departed nodes remembered, so a call to one fails at once.
DEPARTED_MAX = 1024
#: Own heartbeats remembered while on their way back.
IN_FLIGHT_MAX = 64


@dataclass(frozen=True, slots=True)
class Member:
    """What a member last said about itself."""

    node: str
    services: tuple[str, ...]
    interval_ms: int
    started_at: int


class ClusterView:
    """An immutable snapshot of the live members and the ring over them."""

    __slots__ = ("members", "ring", "_by_service")

    def __init__(self, members: dict[str, Member]) -> None:
        self.members = dict(members)
        self.ring = HashRing(self.members)
        by_service: dict[str, list[str]] = {}
        for node in sorted(self.members):
            for service in self.members[node].services:
                by_service.setdefault(service, []).append(node)
        self._by_service = by_service

    def nodes(self) -> list[str]:
        """The live members' ids, sorted."""
        return sorted(self.members)

    def running(self, service: str) -> list[str]:
        """The live members that announce ``service``, sorted."""
        return list(self._by_service.get(service, ()))

    def owner(self, key: str) -> str | None:
        """The member that owns resource ``key`` by the ring, if any."""
        return self.ring.owner(key)

    def __contains__(self, node: object) -> bool:
        return node in self.members

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes())

    def __repr__(self) -> str:
        return f"ClusterView({ {n: list(m.services) for n, m in sorted(self.members.items())} })"


def announcement(node: str, services: list[str], interval: float, started_at: int) -> dict[str, Any]:
    """The body of a ``joined`` or ``heartbeat`` event."""
    return {
        "node": node,
        "services": sorted(services),
        "interval_ms": max(1, round(interval * 1000)),
        "started_at": started_at,
    }


def read_announcement(body: Any) -> Member:
    """A ``joined``/``heartbeat`` body; ``ValueError`` if it is not one."""
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    services = body.get("services")
    interval = body.get("interval_ms")
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise ValueError("services is not a list of names")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise ValueError("interval_ms is not a non-negative integer")
    started = body.get("started_at", 0)
    return Member(
        node=node_id(body.get("node")),
        services=tuple(sorted(services)),
        interval_ms=max(interval, 1),
        started_at=started if isinstance(started, int) else 0,
    )


class Membership:
    """This node's view of the cluster, kept up to date by the bus.

    ``member``: whether this node counts itself (it sends heartbeats and
    owns a share of the ring) or only observes.
    """

    def __init__(self, me: str, *, member: bool, interval: float, misses: int) -> None:
        self.me = me
        self.member = member
        self.interval = interval
        self.misses = max(1, misses)
        self.started_at = int(time.time())
        self._live: dict[str, tuple[Member, float]] = {}
        self._departed: OrderedDict[str, None] = OrderedDict()
        self._beats: deque[tuple[str, float]] = deque(maxlen=IN_FLIGHT_MAX)
        self._horizon: float | None = None
        self._round_robin = itertools.count()
        self._changed = asyncio.Event()
        self.view = ClusterView({})
        if member:
            self.observe(self.own([]))

    # -- what this node says ------------------------------------------------

    def own(self, services: list[str]) -> Member:
        return Member(self.me, tuple(sorted(services)), round(self.interval * 1000), self.started_at)

    def announcement(self, services: list[str]) -> dict[str, Any]:
        return announcement(self.me, services, self.interval, self.started_at)

    # -- what others say ----------------------------------------------------

    def observe(self, member: Member) -> str:
        """Records a heartbeat: ``joined`` (new), ``updated`` (services) or ``unchanged``."""
        known = self._live.get(member.node)
        self._live[member.node] = (member, time.monotonic())
        if known is None:
            self._departed.pop(member.node, None)
            change = "joined"
        elif known[0].services != member.services or known[0].interval_ms != member.interval_ms:
            change = "updated"
        else:
            return "unchanged"
        self._rebuild()
        return change

    def remove(self, node: str) -> bool:
        """Forgets a node that left or died; ``False`` if it was not live."""
        if node == self.me or self._live.pop(node, None) is None:
            return False
        self._departed[node] = None
        while len(self._departed) > DEPARTED_MAX:
            self._departed.popitem(last=False)
        self._rebuild()
        return True

    def departed(self, node: str) -> bool:
        return node in self._departed

    def beat_sent(self, message_id: str) -> None:
        self._beats.append((message_id, time.monotonic()))

    def beat_came_back(self, message_id: str) -> bool:
        """An own heartbeat read back from the event queue: the horizon moves."""
        for at, (sent, sent_at) in enumerate(self._beats):
            if sent == message_id:
                for _ in range(at + 1):
                    self._beats.popleft()
                self._horizon = sent_at if self._horizon is None else max(self._horizon, sent_at)
                return True
        return False

    def silent(self) -> list[str]:
        """The members that missed ``misses`` of their own intervals, up to the horizon."""
        now = time.monotonic()
        if self._horizon is None:
            reference = now
        else:
            reference = max(self._horizon, now - self.interval * self.misses * 10)
        return [
            node
            for node, (member, seen) in self._live.items()
            if node != self.me and reference - seen > member.interval_ms / 1000 * self.misses
        ]

    # -- routing ------------------------------------------------------------

    def pick(self, service: str) -> str | None:
        """A live member running ``service``, in turn."""
        nodes = self.view.running(service)
        if not nodes:
            return None
        return nodes[next(self._round_robin) % len(nodes)]

    # -- waiting for the view -----------------------------------------------

    def _rebuild(self) -> None:
        self.view = ClusterView({node: member for node, (member, _) in self._live.items()})
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, ready: Callable[[ClusterView], bool], timeout: float) -> ClusterView:
        """Waits until ``ready(view)`` holds; ``TimeoutError`` after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not ready(self.view):
                await self._changed.wait()
        return self.view

    async def settled(self, quiet: float, limit: float) -> ClusterView:
        """The view once it stayed unchanged for ``quiet`` s (at most ``limit`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if not self.view.members or (self.member and len(self.view) == 1):
            # Nobody yet: wait for the first answer, as long as allowed.
            try:
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError:
                return self.view
        while True:
            until = min(deadline, loop.time() + quiet)
            try:
                async with asyncio.timeout_at(until):
                    await self._changed.wait()
            except TimeoutError:
                return self.view
            if loop.time() >= deadline:
                return self.view
