"""The bus: a node of its own on a cloudbus bus over RabbitMQ.

A Python process joins exactly as a Rust node does (§12): its own node id,
node queue (replies and the built-in ``cloudbus`` service), event queue,
and one static queue per service it serves. It calls with publisher
confirms and ``mandatory`` so that a request nobody can take fails at once
with ``NO_SUCH_SERVICE``; it routes by node, by the owner of a resource on
the MD5 ring, or to a member running the service; as a member it sends
heartbeats, as an observer it only listens and asks (``discover``).

Connections: one for queues, consumers, requests and replies, and a second
one only for membership events, as the Rust node does, so that heavy
traffic on the first cannot delay this node's heartbeats at the broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from . import __version__, wire
from .address import (
    BUILTIN_SERVICE,
    DEFAULT_BUS,
    MEMBERSHIP_PATTERN,
    Names,
    check_pattern,
    check_service,
    check_type,
    new_id,
    node_id,
    routing_key,
)
from .errors import (
    BROKER_UNAVAILABLE,
    INVALID_ARGUMENT,
    NO_SUCH_SERVICE,
    NODE_UNAVAILABLE,
    SHUTTING_DOWN,
    TIMEOUT,
    UNKNOWN_MESSAGE,
    CloudbusError,
)
from .membership import DISCOVER, HEARTBEAT, JOINED, LEFT, ClusterView, Membership, read_announcement
from .service import Service, inherited_headers
from .serving import ServiceRuntime
from .subscription import DEFAULT_CAPACITY, Event, Subscription, parse_body

log = logging.getLogger("cloudbus")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
#: How long a call waits for its reply unless told otherwise (as in Rust).
DEFAULT_TIMEOUT = 30.0
#: Queues of a node that is gone disappear after this (``x-expires``).
DEFAULT_QUEUE_EXPIRY = 600.0
#: A node's event queue keeps at most this many events (oldest dropped).
EVENT_QUEUE_MAX = 10_000
#: Events the event consumer takes at a time.
EVENT_PREFETCH = 256
#: Discovery: the silence after which every member has answered, and the cap.
DISCOVERY_QUIET = 0.3
DISCOVERY_LIMIT = 3.0


#: The queue types a bus may use (§1).
QUEUE_TYPES = ("classic", "quorum")


def redact(url: str) -> str:
    """The URL with its password hidden, for errors and logs."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


class _Unconfirmed(CloudbusError):
    """Handed to the broker, then the connection went before its confirm:
    the message may have arrived. ``BROKER_UNAVAILABLE`` to a caller that
    sends a plain message; a call waits for its reply instead."""

    def __init__(self, description: str) -> None:
        super().__init__(BROKER_UNAVAILABLE, description, details={"delivered": "unknown"})


class _Pending:
    __slots__ = ("future", "node")

    def __init__(self, future: asyncio.Future[Any], node: str) -> None:
        self.future = future
        self.node = node


class Bus:
    """A node on a bus. Use ``await cloudbus.connect(...)`` or ``async with Bus(...)``.

    ``member=True`` makes this process a cluster member: it sends heartbeats,
    owns a share of the ring and is routed calls for the services it
    registers. Otherwise it is an observer, like the ``cloudbus`` command
    line: it calls, publishes, subscribes and serves by node id only.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        bus: str = DEFAULT_BUS,
        *,
        member: bool = False,
        node: str | None = None,
        heartbeat: float = 1.0,
        heartbeat_misses: int = 3,
        timeout: float = DEFAULT_TIMEOUT,
        queue_expiry: float = DEFAULT_QUEUE_EXPIRY,
        drain_limit: float = 30.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 10.0,
        queue_type: str = "classic",
        tls_ca_pem: str | None = None,
        rebind_every: float = 30.0,
    ) -> None:
        self.url = url
        self.node_id = node_id(node) if node else new_id()
        self.names = Names(bus, self.node_id)
        self.name = bus
        _positive("heartbeat", heartbeat)
        _positive("timeout", timeout)
        _positive("queue_expiry", queue_expiry)
        _positive("reconnect_min", reconnect_min)
        _positive("reconnect_max", reconnect_max)
        _positive("rebind_every", rebind_every)
        self.rebind_every = rebind_every
        if queue_type not in QUEUE_TYPES:
            raise CloudbusError(
                INVALID_ARGUMENT, f"queue_type is one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}"
            )
        #: ``classic``, or ``quorum`` (replicated across a RabbitMQ cluster);
        #: the same for every node of a bus, as ``--queue-type`` in Rust.
        self.queue_type = queue_type
        self._tls = _tls_context(tls_ca_pem)
        if not isinstance(heartbeat_misses, int) or heartbeat_misses < 1:
            raise CloudbusError(INVALID_ARGUMENT, "heartbeat_misses is an integer of at least 1")
        self.default_timeout = timeout
        self.queue_expiry = queue_expiry
        self.drain_limit = drain_limit
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.membership = Membership(
            self.node_id, member=member, interval=heartbeat, misses=heartbeat_misses
        )
        #: Counters: malformed input, late replies, dropped events, reconnects.
        self.stats: Counter[str] = Counter()
        self.connection: aio_pika.abc.AbstractConnection = None  # type: ignore[assignment]
        self.closing = False
        self._started = False
        # Connected, with the whole topology declared; False while reconnecting.
        self._online = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._api_waits: dict[str, _Pending] = {}
        self._runtimes: dict[str, ServiceRuntime] = {}
        self._subscriptions: list[Subscription] = []
        # Every pattern the event queue is bound to, with how many want it.
        self._bindings: Counter[str] = Counter({MEMBERSHIP_PATTERN: 1})
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._discovery: asyncio.Task[ClusterView] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> Bus:
        """Connects, declares this node's queues and joins (or observes) the cluster."""
        if self._started:
            return self
        self._started = True
        try:
            await self._open()
        except CloudbusError:
            await self._abort()
            raise
        except (aiormq.exceptions.AMQPError, OSError, asyncio.TimeoutError) as error:
            await self._abort()
            raise CloudbusError(BROKER_UNAVAILABLE, f"bus {self.name} at {redact(self.url)}: {error!r}") from None
        self._online = True
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="cloudbus heartbeats"))
        self._tasks.append(asyncio.create_task(self._keep_bound(), name="cloudbus bindings"))
        if self.membership.member:
            await self._publish_membership(JOINED, self.membership.announcement(self.services()))
        else:
            await self._publish_membership(DISCOVER, {"node": self.node_id})
        self._discovery = asyncio.create_task(
            self.membership.settled(DISCOVERY_QUIET, DISCOVERY_LIMIT), name="cloudbus discovery"
        )
        return self

    async def _open(self) -> None:
        """Connects (both connections) and declares everything this node needs."""
        self.connection = await _connect(self.url, f"cloudbus {self.name} {self.node_id}", self._tls)
        self._membership_connection = await _connect(
            self.url, f"cloudbus {self.name} {self.node_id} membership", self._tls
        )
        self.connection.close_callbacks.add(self._on_connection_lost)
        self._membership_connection.close_callbacks.add(self._on_connection_lost)
        await self._declare()

    async def _declare(self) -> None:
        conn = self.connection
        # Requests, plain messages and events: confirmed; requests mandatory.
        self._confirmed = await conn.channel(publisher_confirms=True, on_return_raises=True)
        # Replies: neither confirmed nor mandatory (§5).
        self._unconfirmed = await conn.channel(publisher_confirms=False)
        self._p2p = await self._confirmed.declare_exchange(
            self.names.p2p, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._broadcast = await self._confirmed.declare_exchange(
            self.names.broadcast, aio_pika.ExchangeType.TOPIC, durable=True
        )
        # Messages are published on the aiormq channels under aio-pika's.
        self._confirmed_amqp = await self._confirmed.get_underlay_channel()
        self._unconfirmed_amqp = await self._unconfirmed.get_underlay_channel()
        membership_channel = await self._membership_connection.channel(publisher_confirms=False)
        self._membership_amqp = await membership_channel.get_underlay_channel()
        self._node_channel = await conn.channel(publisher_confirms=False)
        node_queue = await self.declare_queue(self._node_channel, self.names.node_queue)
        await node_queue.bind(self.names.p2p, routing_key=self.names.reply_to)
        self._event_channel = await conn.channel(publisher_confirms=False)
        await self._event_channel.set_qos(prefetch_count=EVENT_PREFETCH)
        self._event_queue = await self.declare_queue(
            self._event_channel, self.names.event_queue, {"x-max-length": EVENT_QUEUE_MAX}
        )
        for pattern in list(self._bindings):
            await self._event_queue.bind(self.names.broadcast, routing_key=pattern)
        # Replies are taken in at once, so no acks (and no prefetch) for them.
        node_amqp = await self._node_channel.get_underlay_channel()
        await node_amqp.basic_consume(self.names.node_queue, self._on_node_queue, no_ack=True)
        event_amqp = await self._event_channel.get_underlay_channel()
        await event_amqp.basic_consume(self.names.event_queue, self._on_event)
        self._node_queue = node_queue
        for channel in (self._confirmed, self._unconfirmed, membership_channel):
            self._watch(channel)
        self._watch(self._node_channel, node_amqp)
        self._watch(self._event_channel, event_amqp)

    def _watch(self, channel: aio_pika.abc.AbstractChannel, consuming: Any = None) -> None:
        """From now on (the channel is set up and in use), the broker closing
        ``channel`` or cancelling the consumer on ``consuming`` (its aiormq
        channel) rebuilds the session, as a lost connection does: a deleted
        exchange or queue must not leave this node half dead."""
        channel.close_callbacks.add(self._on_channel_closed)
        if consuming is not None:
            consuming.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)

    def _on_channel_closed(self, _channel: Any, exc: BaseException | None) -> None:
        # Only the broker's close carries a reply code or text; ours, and a
        # lost connection's, do not (the latter is handled on its own).
        if isinstance(exc, aiormq.exceptions.ChannelClosed) and exc.args and exc.args[0] is not None:
            self._session_lost(f"the broker closed a channel: {exc!r}")

    def _on_consumer_cancelled(self, frame: Any) -> None:
        self._session_lost(
            f"the broker cancelled consumer {frame.consumer_tag} (its queue was deleted or is unavailable)"
        )

    async def close(self) -> None:
        """Leaves gracefully: stops taking work, finishes it, says ``left``,
        deletes this node's queues. Calls still waiting fail ``SHUTTING_DOWN``."""
        if self.closing or not self._started:
            return
        self.closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        try:
            for runtime in list(self._runtimes.values()):
                await runtime.stop(self.drain_limit)
            self._runtimes.clear()
            for task in self._tasks:
                task.cancel()
            if self._discovery is not None:
                self._discovery.cancel()
            if self.membership.member and not self.connection.is_closed:
                try:
                    await self._publish_membership(LEFT, {"node": self.node_id})
                except CloudbusError as error:
                    log.warning("could not announce that this node leaves: %s", error)
            self._fail_all(CloudbusError(SHUTTING_DOWN, f"node {self.node_id} is shutting down"))
            if not self.connection.is_closed:
                try:
                    # Queues first, on a channel of their own, then the
                    # consumers' channels: an ack still in flight on a
                    # channel closed under it would be a connection error
                    # (504 "expected channel.open") that stops the deletes.
                    channel = await self.connection.channel(publisher_confirms=False)
                    for queue in (self.names.event_queue, self.names.node_queue):
                        await channel.queue_delete(queue)
                    await self._event_channel.close()
                    await self._node_channel.close()
                except Exception as error:  # noqa: BLE001
                    log.warning("queues of node %s not deleted: %r", self.node_id, error)
        finally:
            for sub in list(self._subscriptions):
                sub.end()
            self._subscriptions.clear()
            await self._abort()
            self._closed.set()

    async def _abort(self) -> None:
        for conn in (self.connection, getattr(self, "_membership_connection", None)):
            if conn is not None and not conn.is_closed:
                conn.close_callbacks.discard(self._on_connection_lost)
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass

    def _on_connection_lost(self, _conn: Any, error: BaseException | None) -> None:
        self._session_lost(f"lost the broker connection ({error!r})")

    def _session_lost(self, why: str) -> None:
        """Either connection failed, or the broker took part of the session
        away: reconnect, as a Rust node does. Calls already waiting keep
        waiting within their timeout (their replies wait in the node queue);
        new ones fail fast until the node is back."""
        if self.closing or not self._online:
            return
        self._online = False
        log.warning("bus %s: %s; reconnecting", self.name, why)
        self._reconnecting = asyncio.get_running_loop().create_task(
            self._reconnect(), name="cloudbus reconnect"
        )

    async def _keep_bound(self) -> None:
        """Binds this node's queues again every ``rebind_every`` seconds, as
        a Rust node does: an operator deleting an exchange takes every
        binding with it, and a node that only serves would never notice.
        Binding is idempotent; a missing exchange closes the channel, which
        rebuilds the session."""
        while not self.closing:
            await asyncio.sleep(self.rebind_every)
            if not self._online:
                continue
            try:
                await self._node_queue.bind(self.names.p2p, routing_key=self.names.reply_to)
                for runtime in list(self._runtimes.values()):
                    if runtime.queue is not None:
                        await runtime.queue.bind(self.names.p2p, routing_key=runtime.routing_key)
                for pattern in list(self._bindings):
                    await self._event_queue.bind(self.names.broadcast, routing_key=pattern)
            except (aiormq.exceptions.AMQPError, RuntimeError) as error:
                log.debug("bus %s: binding this node's queues again: %r", self.name, error)

    async def _reconnect(self) -> None:
        """Tries with exponential backoff and jitter until connected with
        the whole topology (queues, bindings, consumers) or closed."""
        delay = self.reconnect_min
        attempt = 0
        while not self.closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if self.closing:
                return
            attempt += 1
            try:
                await self._abort()
                await self._open()
                for runtime in list(self._runtimes.values()):
                    await runtime.start()
            except (CloudbusError, aiormq.exceptions.AMQPError, OSError, asyncio.TimeoutError, RuntimeError) as error:
                log.debug("bus %s: reconnect attempt %d failed: %r", self.name, attempt, error)
                delay = min(delay * 2, self.reconnect_max)
                continue
            self._online = True
            self.stats["reconnects"] += 1
            log.info("bus %s: reconnected to the broker after %d attempts; topology restored", self.name, attempt)
            self._wake.set()
            return

    @property
    def connected(self) -> bool:
        """Connected to the broker with the whole topology declared; ``False``
        while reconnecting, when sends fail with ``cloudbus.BROKER_UNAVAILABLE``."""
        return self._online and not self.closing

    async def __aenter__(self) -> Bus:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def wait_closed(self) -> None:
        """Returns once the bus is closed by ``close`` (a lost connection is
        reconnected, not closed)."""
        await self._closed.wait()

    async def declare_queue(
        self,
        channel: aio_pika.abc.AbstractChannel,
        name: str,
        extra: dict[str, Any] | None = None,
    ) -> aio_pika.abc.AbstractQueue:
        """Declares one of this node's queues as §1 says for the bus's queue
        type; a queue that exists with the other type is ``INVALID_ARGUMENT``
        naming both (every node of a bus must use the same type)."""
        quorum = self.queue_type == "quorum"
        arguments = {**self.queue_arguments(), **(extra or {})}
        if quorum:
            arguments["x-queue-type"] = "quorum"
        try:
            # Quorum queues are always durable: replicated, on disk.
            return await channel.declare_queue(name, durable=quorum, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            if "x-queue-type" not in str(error) and "durable" not in str(error):
                raise
            theirs = "classic" if quorum else "quorum"
            raise CloudbusError(
                INVALID_ARGUMENT,
                f"the queues of this node on bus `{self.name}` exist as {theirs} queues but this "
                f"node is configured for {self.queue_type} queues: every node of a bus must use "
                f"the same queue type (queue_type, --queue-type)",
            ) from None

    def queue_arguments(self) -> dict[str, Any]:
        return {"x-expires": max(1, round(self.queue_expiry * 1000))}

    # -- the cluster ----------------------------------------------------------

    def cluster(self) -> ClusterView:
        """The live members as this node sees them now."""
        return self.membership.view

    async def wait_for_cluster(
        self, ready: Callable[[ClusterView], bool], timeout: float = 10.0
    ) -> ClusterView:
        """Waits until ``ready(view)``; ``cloudbus.TIMEOUT`` after ``timeout`` s."""
        try:
            return await self.membership.wait_for(ready, timeout)
        except TimeoutError:
            raise CloudbusError(TIMEOUT, f"the cluster did not reach the expected state within {timeout} s") from None

    async def settled_cluster(self) -> ClusterView:
        """The view once the members' answers to this node's arrival stopped."""
        if self._discovery is None:
            return self.membership.view
        return await asyncio.shield(self._discovery)

    def services(self) -> list[str]:
        """The services this node serves, sorted, the built-in ``cloudbus`` included
        (as a Rust node announces them)."""
        return sorted({BUILTIN_SERVICE, *self._runtimes})

    # -- calling ----------------------------------------------------------------

    async def call(
        self,
        service: str,
        type: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        node: str | None = None,
        owner_of: str | None = None,
        headers: dict[str, str] | None = None,
        api_event: str | None = None,
    ) -> Any:
        """Sends a request and returns the reply's JSON, or raises ``CloudbusError``.

        Where it goes: ``node`` if given, else the owner of resource
        ``owner_of`` by the ring, else this node if it serves ``service``,
        else the members running it in turn. ``api_event``: the request is
        a non-blocking API answered by an event of that type (§6).
        """
        timeout = self._timeout(timeout)
        check_service(service)
        check_type(type)
        data = wire.encode_body(body)
        if api_event is not None:
            check_type(api_event)
            await self._bind(api_event)
        try:
            target = await self._route(service, node, owner_of)
            message = wire.request(
                type,
                data,
                source=self.node_id,
                reply_to=self.names.reply_to,
                timeout_ms=_ms(timeout),
                headers=_outgoing_headers(headers),
            )
            message_id = message.message_id
            assert message_id is not None
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pending = _Pending(future, target)
            self._pending[message_id] = pending
            if api_event is not None:
                self._api_waits[message_id] = pending
            try:
                async with asyncio.timeout(timeout):
                    try:
                        await self._publish_p2p(message, service, target)
                    except _Unconfirmed:
                        # The request may be running: its reply comes to the
                        # node queue and is taken after the reconnect (as in
                        # Rust), or the call times out.
                        log.debug("bus %s: %s was sent but not confirmed; waiting for its reply", self.name, type)
                    return await future
            except TimeoutError:
                raise CloudbusError(
                    TIMEOUT, f"no reply to {type} from node {target} within {timeout:g} s"
                ) from None
            finally:
                del self._pending[message_id]
                self._api_waits.pop(message_id, None)
        finally:
            if api_event is not None:
                await self._unbind(api_event)

    async def send(
        self,
        service: str,
        type: str,
        body: Any = None,
        *,
        node: str | None = None,
        owner_of: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Sends a plain message (no reply); returns once the broker has it.
        ``NO_SUCH_SERVICE`` if no queue takes it."""
        self._check_open()
        check_service(service)
        check_type(type)
        data = wire.encode_body(body)
        target = await self._route(service, node, owner_of)
        message = wire.plain(
            type,
            data,
            source=self.node_id,
            headers=_outgoing_headers(headers),
            # On quorum queues a plain message survives a broker node's loss.
            persistent=self.queue_type == "quorum",
        )
        await self._publish_p2p(message, service, target)

    async def publish(
        self,
        type: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        api_id: str | None = None,
    ) -> None:
        """Publishes an event to every subscriber on the bus (this node's included).

        ``api_id``: the ``message_id`` of the non-blocking API request this
        event answers (``cb-api-id``, §6)."""
        self._check_open()
        check_type(type)
        data = wire.encode_body(body)
        all_headers = _outgoing_headers(headers)
        if api_id is not None:
            api_id = node_id(api_id)
            all_headers = {**(all_headers or {}), "cb-api-id": api_id}
        message = wire.event(type, data, source=self.node_id, headers=all_headers)
        try:
            await self._confirmed_amqp.basic_publish(
                message.body,
                exchange=self.names.broadcast,
                routing_key=type,
                properties=message.properties,
            )
        except (aiormq.exceptions.AMQPError, RuntimeError) as error:
            raise CloudbusError(BROKER_UNAVAILABLE, f"publishing {type}: {error!r}") from None
        # Own events are ignored when they come back (§6): subscribers here get them now.
        self._dispatch(type, data, self.node_id, message.message_id, api_id, message.headers)

    async def subscribe(self, pattern: str, *, capacity: int = DEFAULT_CAPACITY) -> Subscription:
        """Events whose type matches the topic ``pattern`` (``vm.*``, ``vm.#``, ``#``),
        as an async iterator, from now on."""
        self._check_open()
        check_pattern(pattern)
        if capacity < 1:
            raise CloudbusError(INVALID_ARGUMENT, "a subscription's capacity is at least 1")
        sub = Subscription(pattern, self._release, capacity)
        await self._bind(pattern)
        self._subscriptions.append(sub)
        return sub

    # -- serving ------------------------------------------------------------

    async def register(self, service: Service) -> None:
        """Serves ``service`` on this node; a member announces it at once."""
        self._check_open()
        if service.name in self._runtimes:
            raise CloudbusError(INVALID_ARGUMENT, f"service {service.name} is already registered")
        runtime = ServiceRuntime(self, service)
        self._runtimes[service.name] = runtime
        try:
            await runtime.start()
        except Exception:
            del self._runtimes[service.name]
            raise
        self._services_changed()

    async def unregister(self, name: str) -> None:
        """Stops serving ``name``: what was queued is answered, then the queue goes."""
        runtime = self._runtimes.get(name)
        if runtime is None:
            raise CloudbusError(NO_SUCH_SERVICE, f"service {name} is not registered on this node")
        await runtime.stop(self.drain_limit)
        self._runtimes.pop(name, None)
        self._services_changed()

    async def answer(
        self,
        reply_to: str,
        answering: str,
        reply_type: str,
        result: Any = None,
        *,
        error: CloudbusError | None = None,
    ) -> None:
        """Publishes a reply to ``reply_to`` (not mandatory, not confirmed: §5)."""
        message = wire.reply(answering, reply_type, result, source=self.node_id, error=error)
        try:
            # Not confirmed (§5), so not even waiting for the socket to drain.
            await self._unconfirmed_amqp.basic_publish(
                message.body,
                exchange=self.names.p2p,
                routing_key=reply_to,
                properties=message.properties,
                wait=False,
            )
        except (aiormq.exceptions.AMQPError, RuntimeError) as lost:
            log.warning("reply to %s lost: %r", reply_to, lost)

    # -- internals: sending ---------------------------------------------------

    def _check_open(self) -> None:
        if not self._started:
            raise CloudbusError(SHUTTING_DOWN, "the bus is not started: await bus.start()")
        if self.closing:
            raise CloudbusError(SHUTTING_DOWN, f"node {self.node_id} is shutting down")
        if not self._online:
            raise CloudbusError(
                BROKER_UNAVAILABLE, f"not connected to the broker at {redact(self.url)}; reconnecting"
            )

    def _timeout(self, timeout: float | None) -> float:
        self._check_open()
        if timeout is None:
            return self.default_timeout
        _positive("timeout", timeout)
        return timeout

    async def _route(self, service: str, node: str | None, owner_of: str | None) -> str:
        if node is not None:
            if owner_of is not None:
                raise CloudbusError(INVALID_ARGUMENT, "name a node or a resource owner, not both")
            target = node_id(node)
            if target != self.node_id and self.membership.departed(target):
                raise CloudbusError(NODE_UNAVAILABLE, f"node {target} has left the cluster or is dead")
            return target
        if owner_of is not None:
            if not isinstance(owner_of, str):
                raise CloudbusError(INVALID_ARGUMENT, "owner_of is a resource id string")
            # The ring needs every member: learn them before the first lookup.
            view = await self.settled_cluster()
            view = self.membership.view
            owner = view.owner(owner_of)
            if owner is None:
                raise CloudbusError(NODE_UNAVAILABLE, f"no live member owns {owner_of!r}")
            return owner
        if service in self._runtimes:
            return self.node_id
        target = self.membership.pick(service)
        if target is None and self._discovery is not None and not self._discovery.done():
            await self.settled_cluster()
            target = self.membership.pick(service)
        if target is None:
            raise CloudbusError(NO_SUCH_SERVICE, f"no live member runs service {service}")
        return target

    async def _publish_p2p(self, message: wire.Outgoing, service: str, target: str) -> None:
        """Publishes mandatory and confirmed. ``_Unconfirmed`` (a
        ``BROKER_UNAVAILABLE`` error) when the connection went after the
        message was handed over but before the broker confirmed it: it may
        have arrived."""
        was_open = not self._confirmed_amqp.is_closed
        try:
            await self._confirmed_amqp.basic_publish(
                message.body,
                exchange=self.names.p2p,
                routing_key=routing_key(service, target),
                properties=message.properties,
                mandatory=True,
            )
        except aiormq.exceptions.PublishError:
            raise CloudbusError(
                NO_SUCH_SERVICE, f"no service {service} on node {target} (the broker returned {message.type})"
            ) from None
        except aiormq.exceptions.DeliveryError as nack:
            raise CloudbusError(BROKER_UNAVAILABLE, f"the broker refused {message.type}: {nack!r}") from None
        except (aiormq.exceptions.AMQPError, RuntimeError) as error:
            if was_open and self._confirmed_amqp.is_closed:
                raise _Unconfirmed(
                    f"the connection was lost before the broker confirmed {message.type}; "
                    "it may have been delivered"
                ) from None
            raise CloudbusError(BROKER_UNAVAILABLE, f"sending {message.type}: {error!r}") from None

    async def _publish_membership(self, type_name: str, body: dict[str, Any]) -> str:
        message = wire.event(type_name, wire.encode_body(body), source=self.node_id)
        try:
            await self._membership_amqp.basic_publish(
                message.body,
                exchange=self.names.broadcast,
                routing_key=type_name,
                properties=message.properties,
            )
        except (aiormq.exceptions.AMQPError, RuntimeError) as error:
            raise CloudbusError(BROKER_UNAVAILABLE, f"publishing {type_name}: {error!r}") from None
        return message.message_id

    async def _bind(self, pattern: str) -> None:
        self._bindings[pattern] += 1
        if self._bindings[pattern] == 1:
            try:
                await self._event_queue.bind(self.names.broadcast, routing_key=pattern)
            except Exception:
                self._bindings[pattern] -= 1
                raise

    async def _unbind(self, pattern: str) -> None:
        self._bindings[pattern] -= 1
        if self._bindings[pattern] <= 0:
            del self._bindings[pattern]
            if pattern != MEMBERSHIP_PATTERN and not self.closing:
                try:
                    await self._event_queue.unbind(self.names.broadcast, routing_key=pattern)
                except Exception as error:  # noqa: BLE001
                    log.warning("unbinding %s: %r", pattern, error)

    async def _release(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
            await self._unbind(sub.pattern)

    def _fail_all(self, error: CloudbusError) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)

    # -- internals: receiving -----------------------------------------------

    async def _on_node_queue(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        headers = properties.headers
        if headers and headers.get("cb-kind") == "reply":
            # The hot path: a reply to one of our calls.
            pending = self._pending.get(properties.correlation_id or "")
            if pending is None:
                self.stats["late_replies"] += 1
                return
            if not pending.future.done():
                try:
                    pending.future.set_result(wire.read_reply(message.body))
                except CloudbusError as error:
                    pending.future.set_exception(error)
            return
        try:
            inbound = wire.decode(properties, message.body)
        except wire.Malformed as bad:
            self.stats["malformed"] += 1
            log.warning("node queue: %s", bad.reason)
            if bad.answerable and bad.message_id and bad.reply_to:
                await self.answer(bad.reply_to, bad.message_id, "", error=CloudbusError("cloudbus.MALFORMED", bad.reason))
            return
        if inbound.kind == wire.REPLY:
            self.stats["late_replies"] += 1  # correlation id in dashed form, nobody waits
            return
        if inbound.kind != wire.REQUEST or not inbound.reply_to:
            return
        if inbound.type == "cloudbus.Ping":
            pong = {
                "node": self.node_id,
                "services": self.services(),
                "version": f"python-{__version__}",
            }
            await self.answer(inbound.reply_to, inbound.message_id, "cloudbus.Pong", pong)
        else:
            await self.answer(
                inbound.reply_to,
                inbound.message_id,
                "",
                error=CloudbusError(UNKNOWN_MESSAGE, f"the built-in service does not handle {inbound.type}"),
            )

    async def _on_event(self, message: DeliveredMessage) -> None:
        try:
            self._take_event(message)
        finally:
            try:
                # On the channel it came on (a reconnect makes a new one).
                await message.channel.basic_ack(message.delivery.delivery_tag, wait=False)
            except Exception:  # noqa: BLE001 - channel gone
                pass

    def _take_event(self, message: DeliveredMessage) -> None:
        try:
            inbound = wire.decode(message.header.properties, message.body)
        except wire.Malformed as bad:
            self.stats["malformed"] += 1
            log.warning("event queue: %s", bad.reason)
            return
        if inbound.type.startswith("cloudbus.node."):
            self._on_membership(inbound)
            return
        if inbound.source == self.node_id:
            return  # subscribers here had it when it was published
        if inbound.api_id is not None:
            pending = self._api_waits.get(inbound.api_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(parse_body(inbound.body))
        self._dispatch(inbound.type, inbound.body, inbound.source, inbound.message_id, inbound.api_id, inbound.headers)

    def _dispatch(
        self,
        type_name: str,
        body: bytes,
        source: str,
        message_id: str,
        api_id: str | None,
        headers: dict[str, Any],
    ) -> None:
        event: Event | None = None
        for sub in self._subscriptions:
            if sub.matches(type_name):
                if event is None:
                    app = {k: str(v) for k, v in headers.items() if not k.startswith("cb-")}
                    event = Event(type_name, parse_body(body), source, message_id, api_id, app)
                before = sub.lagged
                sub.deliver(event)
                self.stats["events_dropped"] += sub.lagged - before

    def _on_membership(self, inbound: wire.Inbound) -> None:
        try:
            body = json.loads(inbound.body)
            if inbound.type in (HEARTBEAT, JOINED):
                member = read_announcement(body)
                if member.node == self.node_id:
                    self.membership.beat_came_back(inbound.message_id)
                    return
                if self.membership.observe(member) == "joined":
                    log.info("node %s joined with services %s", member.node, list(member.services))
                if inbound.type == JOINED:
                    self._wake.set()  # the newcomer learns about us now
            elif inbound.type == LEFT:
                self._gone(node_id(body.get("node")), "left the cluster")
            elif inbound.type == DISCOVER:
                self._wake.set()
        except (ValueError, AttributeError, CloudbusError) as error:
            self.stats["malformed"] += 1
            log.warning("unreadable membership event %s ignored: %s", inbound.type, error)

    def _gone(self, node: str, why: str) -> None:
        if not self.membership.remove(node):
            return
        error = CloudbusError(NODE_UNAVAILABLE, f"node {node} {why}")
        failed = 0
        for pending in self._pending.values():
            if pending.node == node and not pending.future.done():
                pending.future.set_exception(error)
                failed += 1
        log.warning("node %s %s (%d calls failed)", node, why, failed)

    def _services_changed(self) -> None:
        if self.membership.member:
            self.membership.observe(self.membership.own(self.services()))
            self._wake.set()

    async def _heartbeats(self) -> None:
        """Beats every interval (and when woken), and declares the silent dead."""
        loop = asyncio.get_running_loop()
        interval = self.membership.interval
        next_tick = loop.time()
        while True:
            ticked = False
            try:
                async with asyncio.timeout_at(next_tick):
                    await self._wake.wait()
            except TimeoutError:
                ticked = True
                next_tick = max(next_tick + interval, loop.time())
            self._wake.clear()
            if self.closing:
                return
            if self.membership.member:
                try:
                    message_id = await self._publish_membership(
                        HEARTBEAT, self.membership.announcement(self.services())
                    )
                    self.membership.beat_sent(message_id)
                except CloudbusError as error:
                    log.debug("heartbeat not sent: %s", error)
            if ticked:
                misses = self.membership.misses
                for node in self.membership.silent():
                    self._gone(node, f"is dead: no heartbeat in {misses} intervals")


async def connect(url: str = DEFAULT_URL, bus: str = DEFAULT_BUS, **options: Any) -> Bus:
    """Starts a node on ``bus`` at ``url``: ``await cloudbus.connect(url, "prod", member=True)``.

    Options are ``Bus``'s. Close it with ``await bus.close()``.
    """
    return await Bus(url, bus, **options).start()


def _tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """What ``amqps://`` brokers are verified against, host name included:
    the system's roots, and the CA certificates of ``ca_pem`` (PEM), as
    ``AmqpConfig::tls_ca_pem`` does in Rust."""
    context = ssl.create_default_context()
    if ca_pem is not None:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError, TypeError) as error:
            raise CloudbusError(INVALID_ARGUMENT, f"tls_ca_pem is not usable PEM: {error}") from None
    return context


async def _connect(url: str, name: str, tls: ssl.SSLContext) -> aio_pika.abc.AbstractConnection:
    """Connects to the first broker that answers of a comma-separated list,
    starting at a random one so that many nodes spread over a cluster."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise CloudbusError(INVALID_ARGUMENT, "no broker URL")
    start = random.randrange(len(urls))
    errors = []
    for u in urls[start:] + urls[:start]:
        try:
            return await aio_pika.connect(
                u, client_properties={"connection_name": name}, timeout=10, ssl_context=tls
            )
        except (aiormq.exceptions.AMQPError, OSError, asyncio.TimeoutError, ValueError) as error:
            errors.append(f"{redact(u)}: {error!r}")
    raise CloudbusError(BROKER_UNAVAILABLE, "no broker reachable: " + "; ".join(errors))


def _positive(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise CloudbusError(INVALID_ARGUMENT, f"{what} is a positive number of seconds, not {value!r}")


def _ms(seconds: float) -> int:
    return max(1, min(round(seconds * 1000), 2**63 - 1))


def _outgoing_headers(headers: dict[str, str] | None) -> dict[str, Any] | None:
    """The caller's headers over those inherited from the message being handled."""
    inherited = inherited_headers.get()
    if headers:
        for name, value in headers.items():
            if not isinstance(name, str) or name.startswith("cb-"):
                raise CloudbusError(INVALID_ARGUMENT, f"header {name!r} is reserved or not a string")
            if not isinstance(value, str):
                raise CloudbusError(INVALID_ARGUMENT, f"header {name} is not a string")
    if not inherited:
        return headers
    if not headers:
        return dict(inherited)
    return {**inherited, **headers}
