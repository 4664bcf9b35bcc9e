"""Messages on the wire: properties, ``cb-*`` headers and bodies (§2, §3, §5).

Outbound, one function per kind builds the AMQP properties exactly as a Rust
node would. They are aiormq's (pamqp's) frames, the layer under aio-pika,
rather than ``aio_pika.Message`` objects: building one of those per message
cost more than the rest of a call, and the package publishes and consumes
on aio-pika's channels through that layer (see ``bus.py``). Inbound, ``decode`` checks a delivery the way a Rust node does
and says whether a bad one may still be answered (``MALFORMED`` to its
caller) or must be dropped; the reply body is read by ``read_reply``. Kept
free of any connection so it is unit tested without a broker.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from aiormq import spec

from .address import node_id
from .errors import MALFORMED, CloudbusError

CONTENT_TYPE = "application/json"
#: Bodies above this are refused (``AmqpConfig::max_body`` in Rust).
MAX_BODY = 4 * 1024 * 1024
#: ``expiration`` is left out above this (§2).
MAX_EXPIRATION_MS = 2**31 - 1

REQUEST, MESSAGE, REPLY, EVENT = "request", "message", "reply", "event"
KINDS = frozenset({REQUEST, MESSAGE, REPLY, EVENT})

#: Application headers that a handler's sends inherit (task context, §2).
TRACEPARENT = "traceparent"
CONTEXT_PREFIX = "ctx-"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_body(body: Any) -> bytes:
    """A message body: a JSON object. ``bytes``/``str`` are taken as JSON text."""
    if body is None:
        return b"{}"
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        try:
            return _dumps(body).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise CloudbusError(
                "cloudbus.INVALID_ARGUMENT", f"the body is not JSON-serializable: {error}"
            ) from None
    try:
        json.loads(data)
    except ValueError as error:
        raise CloudbusError("cloudbus.INVALID_ARGUMENT", f"the body is not JSON: {error}") from None
    return data


class Outgoing(NamedTuple):
    """A message ready to publish: its properties and JSON body."""

    properties: spec.Basic.Properties
    body: bytes

    @property
    def message_id(self) -> str:
        return self.properties.message_id  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return self.properties.message_type  # type: ignore[no-any-return]

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers  # type: ignore[no-any-return]


_now: tuple[int, datetime] = (0, datetime.fromtimestamp(0, timezone.utc))


def _timestamp() -> datetime:
    """Now, in whole seconds (§2), made once per second."""
    global _now
    second = int(time.time())
    if _now[0] != second:
        _now = (second, datetime.fromtimestamp(second, timezone.utc))
    return _now[1]


def _properties(
    kind: str,
    type_name: str,
    source: str,
    headers: dict[str, Any] | None,
    **more: Any,
) -> spec.Basic.Properties:
    all_headers: dict[str, Any] = dict(headers) if headers else {}
    all_headers["cb-kind"] = kind
    all_headers["cb-source"] = source
    return spec.Basic.Properties(
        message_id=uuid.uuid4().hex,
        message_type=type_name,
        content_type=CONTENT_TYPE,
        timestamp=_timestamp(),
        headers=all_headers,
        **more,
    )


def request(
    type_name: str,
    body: bytes,
    *,
    source: str,
    reply_to: str,
    timeout_ms: int,
    headers: dict[str, Any] | None = None,
) -> Outgoing:
    """A request (§4): ``reply_to``, ``cb-timeout-ms`` and ``expiration``."""
    headers = dict(headers) if headers else {}
    headers["cb-timeout-ms"] = timeout_ms
    expiration = max(timeout_ms, 1)
    props = _properties(
        REQUEST,
        type_name,
        source,
        headers,
        reply_to=reply_to,
        expiration=str(expiration) if expiration <= MAX_EXPIRATION_MS else None,
    )
    return Outgoing(props, body)


def plain(
    type_name: str,
    body: bytes,
    *,
    source: str,
    headers: dict[str, Any] | None = None,
    persistent: bool = False,
) -> Outgoing:
    """A plain message (§4): never answered, so no ``reply_to``; persistent
    (delivery mode 2) on a bus of quorum queues (§1)."""
    more = {"delivery_mode": 2} if persistent else {}
    return Outgoing(_properties(MESSAGE, type_name, source, headers, **more), body)


def event(
    type_name: str, body: bytes, *, source: str, headers: dict[str, Any] | None = None
) -> Outgoing:
    """An event (§6), published with routing key = its type."""
    return Outgoing(_properties(EVENT, type_name, source, headers), body)


def reply(
    answering: str,
    reply_type: str,
    result: Any = None,
    *,
    source: str,
    error: CloudbusError | None = None,
) -> Outgoing:
    """A reply to request ``answering`` (§5): success, or failure if ``error``."""
    if error is not None:
        body = _dumps({"success": False, "error": error.to_json()}).encode("utf-8")
        reply_type = "cloudbus.ErrorReply"
    else:
        if result is None:
            payload = b"{}"
        elif isinstance(result, (bytes, bytearray)):
            payload = bytes(result)  # already JSON text
        else:
            payload = _dumps(result).encode("utf-8")  # TypeError if not JSON
        body = b'{"success":true,"reply":' + payload + b"}"
    props = _properties(REPLY, reply_type or "cloudbus.Reply", source, None, correlation_id=answering)
    return Outgoing(props, body)


def read_reply(body: bytes) -> Any:
    """A reply body's result, or raises its error (``MALFORMED`` if neither)."""
    try:
        value = json.loads(body)
    except ValueError:
        raise CloudbusError(MALFORMED, "a reply body that is not JSON") from None
    if isinstance(value, dict):
        if value.get("success") is True and "reply" in value:
            return value["reply"]
        if value.get("success") is False and "error" in value:
            raise CloudbusError.from_json(value["error"])
    raise CloudbusError(MALFORMED, f"a reply body of unknown shape: {body[:200]!r}")


class Malformed(Exception):
    """A delivery that breaks the protocol.

    ``answerable``: its ``message_id`` and ``reply_to`` are readable and it is
    a request (or of unknown kind), so the caller gets ``MALFORMED`` rather
    than silence (§4's table).
    """

    def __init__(self, reason: str, answerable: bool, message_id: str | None, reply_to: str | None):
        super().__init__(reason)
        self.reason = reason
        self.answerable = answerable
        self.message_id = message_id
        self.reply_to = reply_to


@dataclass(slots=True)
class Inbound:
    """One delivery, checked: what a handler's context and a reply need."""

    kind: str
    type: str
    message_id: str
    source: str
    body: bytes
    reply_to: str | None = None
    correlation_id: str | None = None
    timeout_ms: int | None = None
    api_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


_HEX = frozenset("0123456789abcdef")


def _id(value: Any) -> str | None:
    text = _text(value)
    if not text:
        return None
    if len(text) == 32 and _HEX.issuperset(text):
        return text  # the usual form, without parsing a UUID
    try:
        return node_id(text)
    except CloudbusError:
        return None


def _content_type_ok(value: str | None) -> bool:
    if value is None:
        return True
    return value.split(";", 1)[0].strip().lower() == CONTENT_TYPE


def decode(message: spec.Basic.Properties, body: bytes) -> Inbound:
    """Checks a delivery (its properties and body) as a Rust node does;
    raises ``Malformed`` if it is bad."""
    raw_headers = message.headers or {}
    kind = _text(raw_headers.get("cb-kind"))
    message_id = _id(message.message_id)
    reply_to = _text(message.reply_to) or None

    def bad(reason: str) -> Malformed:
        answerable = (
            message_id is not None
            and reply_to is not None
            and kind not in (MESSAGE, REPLY, EVENT)
        )
        return Malformed(reason, answerable, message_id, reply_to)

    if message_id is None:
        raise bad(f"message_id missing or not a UUID: {message.message_id!r:.80}")
    if kind not in KINDS:
        raise bad(f"cb-kind missing or unknown: {kind!r:.40}")
    type_name = _text(message.message_type)
    if not type_name:
        raise bad("the type property is missing")
    source = _id(raw_headers.get("cb-source"))
    if source is None:
        raise bad("cb-source missing or not a node id")
    if not _content_type_ok(message.content_type):
        raise bad(f"content_type is {message.content_type!r:.60}, not {CONTENT_TYPE}")
    if len(body) > MAX_BODY:
        raise bad(f"a body of {len(body)} bytes, above {MAX_BODY}")
    timeout_ms = None
    if kind == REQUEST and "cb-timeout-ms" in raw_headers:
        value = raw_headers["cb-timeout-ms"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"cb-timeout-ms is not a non-negative integer: {value!r:.40}")
        timeout_ms = value
    correlation_id = None
    if kind == REPLY:
        correlation_id = _id(message.correlation_id)
        if correlation_id is None:
            raise bad("a reply without a correlation_id")
    headers: dict[str, str] = {}
    for name, value in raw_headers.items():
        if name.startswith("cb-"):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            headers[name] = str(value)
        else:
            text = _text(value)
            if text is not None:
                headers[name] = text
    return Inbound(
        kind=kind,
        type=type_name,
        message_id=message_id,
        source=source,
        body=body,
        reply_to=reply_to,
        correlation_id=correlation_id,
        timeout_ms=timeout_ms,
        api_id=_id(raw_headers.get("cb-api-id")),
        headers=headers,
    )


def inherited(headers: dict[str, str]) -> dict[str, str]:
    """The task-context headers (``ctx-*``, ``traceparent``) a handler's sends carry on."""
    return {
        name: value
        for name, value in headers.items()
        if name == TRACEPARENT or name.startswith(CONTEXT_PREFIX)
    }
