"""Every name the bus uses on the broker, built in one place (wire protocol §1).

Exchange, queue and routing-key names are the protocol: a name built twice
drifts, so the rest of the package asks this module and never formats one
itself. Input that would make an invalid or foreign name is refused here
with ``cloudbus.INVALID_ARGUMENT`` instead of reaching the broker.
"""

from __future__ import annotations

import re
import uuid

from .errors import INVALID_ARGUMENT, CloudbusError

#: The bus name when none is given, as in Rust.
DEFAULT_BUS = "cloudbus"
#: The built-in service of every node, on its node queue.
BUILTIN_SERVICE = "cloudbus"
#: Every node's event queue is bound to this pattern (§9).
MEMBERSHIP_PATTERN = "cloudbus.node.*"

_BUS = re.compile(r"^[A-Za-z0-9_-]+$")
_SERVICE = re.compile(r"^[a-z][a-z0-9_-]*$")
_TYPE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
_PATTERN_WORD = re.compile(r"^([^.*#\s]+|\*|#)$")


def new_id() -> str:
    """A fresh UUID as 32 lowercase hex digits: node and message ids."""
    return uuid.uuid4().hex


def node_id(value: str) -> str:
    """A node id in its 32-hex form; the dashed form is accepted too."""
    try:
        return uuid.UUID(value).hex
    except (ValueError, AttributeError, TypeError):
        raise CloudbusError(
            INVALID_ARGUMENT, f"not a node id (32 hex digits): {value!r:.80}"
        ) from None


def check_bus(name: str) -> str:
    if not isinstance(name, str) or not _BUS.match(name):
        raise CloudbusError(
            INVALID_ARGUMENT, f"a bus name is letters, digits, '_' and '-': {name!r:.80}"
        )
    return name


def check_service(name: str) -> str:
    if not isinstance(name, str) or not _SERVICE.match(name):
        raise CloudbusError(
            INVALID_ARGUMENT,
            f"a service name is [a-z][a-z0-9_-]*: {name!r:.80}",
        )
    return name


def check_type(name: str) -> str:
    if not isinstance(name, str) or not _TYPE.match(name):
        raise CloudbusError(
            INVALID_ARGUMENT, f"a message type is dotted words, e.g. vm.StartVm: {name!r:.80}"
        )
    return name


def check_pattern(pattern: str) -> str:
    """An AMQP topic pattern: dotted words, ``*`` one word, ``#`` any number."""
    if not isinstance(pattern, str) or not pattern or not all(
        _PATTERN_WORD.match(word) for word in pattern.split(".")
    ):
        raise CloudbusError(
            INVALID_ARGUMENT, f"a topic pattern is dotted words, '*' or '#': {pattern!r:.80}"
        )
    return pattern


def service_of(type_name: str) -> str:
    """The service a type goes to unless the caller names another: its first word."""
    return check_type(type_name).split(".", 1)[0]


class Names:
    """The broker names of one node on one bus."""

    __slots__ = ("bus", "node", "p2p", "broadcast", "node_queue", "event_queue", "reply_to")

    def __init__(self, bus: str, node: str) -> None:
        self.bus = check_bus(bus)
        self.node = node
        self.p2p = f"{bus}.P2P"
        self.broadcast = f"{bus}.BROADCAST"
        self.node_queue = self.service_queue(BUILTIN_SERVICE)
        self.event_queue = f"{bus}.event.{node}"
        # Replies come to the node queue: its routing key on P2P.
        self.reply_to = routing_key(BUILTIN_SERVICE, node)

    def service_queue(self, service: str) -> str:
        return f"{self.bus}.message.{service}.{self.node}"

    def owns_queue(self, queue: str) -> bool:
        return queue.startswith(f"{self.bus}.") and queue.endswith(f".{self.node}")


def routing_key(service: str, node: str) -> str:
    """The key on ``<bus>.P2P`` of a service's queue on a node."""
    return f"{service}.{node}"
