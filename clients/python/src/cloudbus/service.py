"""Serving a service: handlers per message type and what they are given.

A ``Service`` is a name, a concurrency limit and a handler per message
type, declared before registration so that ``bus.register`` can answer
unknown types with ``cloudbus.UNKNOWN_MESSAGE`` at once. A handler is
``async def handler(body, ctx)``: ``body`` is the message's JSON object,
the return value is the reply (any JSON value; ``None`` is ``{}``), and
raising ``CloudbusError`` sends a failure reply with its code. Any other
exception is ``cloudbus.INTERNAL`` to the caller, as a Rust handler's panic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .address import check_service, check_type

if TYPE_CHECKING:
    from .bus import Bus

#: The default concurrency limit: requests handled at once per service,
#: which is the prefetch of its queue.
DEFAULT_CONCURRENCY = 64

Handler = Callable[[Any, "Context"], Awaitable[Any]]

#: Task-context headers of the message being handled, inherited by every
#: message the handler sends (§2: ``ctx-*`` and ``traceparent``).
inherited_headers: ContextVar[dict[str, str] | None] = ContextVar(
    "cloudbus_inherited_headers", default=None
)


@dataclass(frozen=True, slots=True)
class Entry:
    """A handler and the type name of its replies (informative on the wire)."""

    handler: Handler
    reply_type: str


@dataclass(slots=True)
class Context:
    """What a handler knows about the message it handles."""

    bus: Bus
    type: str
    message_id: str
    #: The sending node's id.
    source: str
    #: ``request`` (answered) or ``message`` (plain, never answered).
    kind: str
    #: Application headers (``cb-*`` ones are the protocol's, not here).
    headers: dict[str, str] = field(default_factory=dict)
    #: How long the caller waits, in ms, for a request.
    timeout_ms: int | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Service:
    """A named service with one handler per message type.

    >>> images = Service("image", concurrency=8)
    >>> @images.handler("image.GetImage", reply="image.Image")
    ... async def get_image(body, ctx):
    ...     return {"name": body["name"]}
    """

    def __init__(self, name: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.name = check_service(name)
        if name == "cloudbus":
            raise ValueError("'cloudbus' is the built-in service of every node")
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 65535:
            raise ValueError("concurrency is the queue's prefetch: an integer from 1 to 65535")
        self.concurrency = concurrency
        self.entries: dict[str, Entry] = {}

    def on(self, type_name: str, handler: Handler, *, reply: str | None = None) -> None:
        """Handles ``type_name`` with ``handler``; ``reply`` names the reply type."""
        check_type(type_name)
        if type_name in self.entries:
            raise ValueError(f"{type_name} already has a handler in service {self.name}")
        if not callable(handler):
            raise TypeError("a handler is an async function (body, ctx)")
        self.entries[type_name] = Entry(handler, check_type(reply) if reply else type_name + "Reply")

    def handler(self, type_name: str, *, reply: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator form of ``on``."""

        def register(handler: Handler) -> Handler:
            self.on(type_name, handler, reply=reply)
            return handler

        return register

    def __repr__(self) -> str:
        return f"Service({self.name!r}, types={sorted(self.entries)})"
