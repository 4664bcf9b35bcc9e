"""Events as an async iterator (§6, §13).

The node has one event queue; each ``subscribe(pattern)`` binds it to the
pattern (once per distinct pattern) and gets its own bounded buffer, fed by
the bus in arrival order. A subscriber that falls behind loses the newest
events rather than growing without bound, and ``lagged`` says how many, as
the Rust subscription does by default.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: Events a subscription buffers before it drops new ones.
DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class Event:
    """One event as received: its ``type``, JSON ``body`` and who sent it."""

    type: str
    body: Any
    source: str
    message_id: str
    api_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, type_name: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    words, parts = pattern.split("."), type_name.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(parts)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        if j == len(parts):
            return False
        return (words[i] == "*" or words[i] == parts[j]) and match(i + 1, j + 1)

    return match(0, 0)


class Subscription:
    """``async for event in subscription`` until it is closed (or the bus is).

    Close it with ``await sub.close()`` or use it as ``async with``; the
    binding goes when the last subscription of its pattern does.
    """

    _END: Any = object()

    def __init__(
        self,
        pattern: str,
        release: Callable[[Subscription], Awaitable[None]],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.pattern = pattern
        self.lagged = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=capacity + 1)
        self._capacity = capacity
        self._release = release
        self._closed = False

    def matches(self, type_name: str) -> bool:
        return topic_matches(self.pattern, type_name)

    def deliver(self, event: Event) -> None:
        """Called by the bus, in arrival order; never blocks."""
        if self._closed:
            return
        if self._queue.qsize() >= self._capacity:
            self.lagged += 1
            return
        self._queue.put_nowait(event)

    def end(self) -> None:
        """No more events: iteration stops once the buffer is read."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(self._END)

    async def close(self) -> None:
        if not self._closed:
            self.end()
            await self._release(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is self._END:
            self._queue.put_nowait(self._END)  # stay ended
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most ``timeout`` s (``TimeoutError``)."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def parse_body(body: bytes) -> Any:
    """An event body's JSON; the raw text if it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
