"""One registered service on this node: its queue, consumer and handlers (§4).

The queue is the protocol's static queue ``<bus>.message.<service>.<node>``
and the service's concurrency limit is its consumer's prefetch: the broker
hands this node at most that many requests at a time and each is acked
once handled, so a busy Python service leaves the rest queued on the
broker (where ``expiration`` discards what nobody took in time) instead of
in memory. Answers follow §4's table, including ``UNKNOWN_MESSAGE``,
``MALFORMED`` and ``NO_SUCH_SERVICE`` once the service is stopping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import aio_pika
from aiormq.abc import DeliveredMessage

from . import wire
from .errors import INTERNAL, MALFORMED, NO_SUCH_SERVICE, UNKNOWN_MESSAGE, CloudbusError
from .service import Context, Service, inherited_headers

if TYPE_CHECKING:
    from .bus import Bus

log = logging.getLogger("cloudbus")


class ServiceRuntime:
    """A service being served: created by ``Bus.register``."""

    def __init__(self, bus: Bus, service: Service) -> None:
        self.bus = bus
        self.service = service
        self.queue_name = bus.names.service_queue(service.name)
        self.routing_key = f"{service.name}.{bus.node_id}"
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.queue: aio_pika.abc.AbstractQueue | None = None
        self.consumer_tag: str | None = None
        self.in_flight = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._handling: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Declares and binds the queue, then consumes it with the limit as
        prefetch; again on the new connection after a reconnect."""
        self.channel = await self.bus.connection.channel(publisher_confirms=False)
        await self.channel.set_qos(prefetch_count=self.service.concurrency)
        self.queue = await self.bus.declare_queue(self.channel, self.queue_name)
        await self.queue.bind(self.bus.names.p2p, routing_key=self.routing_key)
        # Consumed on the aiormq channel under aio-pika's: no per-message
        # aio_pika.IncomingMessage and no second task per delivery.
        self._amqp = await self.channel.get_underlay_channel()
        ok = await self._amqp.basic_consume(self.queue_name, self._on_message)
        self.consumer_tag = ok.consumer_tag
        self.bus._watch(self.channel, self._amqp)

    async def stop(self, drain_limit: float) -> None:
        """Unbinds (new requests bounce as NO_SUCH_SERVICE), answers what was
        queued and in flight, then deletes the queue, unless it still holds
        messages (kept for a node restarted with the same id, as in Rust)."""
        if self.queue is None or self.channel is None:
            return
        try:
            await self.queue.unbind(self.bus.names.p2p, routing_key=self.routing_key)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain_limit
            while loop.time() < deadline:
                declared = await self.channel.declare_queue(self.queue_name, passive=True)
                if declared.declaration_result.message_count == 0 and self.in_flight == 0:
                    break
                # What is still queued keeps coming to our consumer: look again
                # soon (the broker does not tell when a queue becomes empty).
                try:
                    async with asyncio.timeout(0.05):
                        await self._idle.wait()
                        await asyncio.sleep(0.01)
                except TimeoutError:
                    pass
            self.stopping = True
            if self.consumer_tag is not None:
                await self._amqp.basic_cancel(self.consumer_tag)
            if self.in_flight:
                try:
                    async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                        await self._idle.wait()
                except TimeoutError:
                    log.warning(
                        "service %s: %d handlers still running after %g s; cancelled",
                        self.service.name, self.in_flight, drain_limit,
                    )
                    for task in list(self._handling):
                        task.cancel()
                    await asyncio.gather(*self._handling, return_exceptions=True)
            await self.queue.delete(if_unused=False, if_empty=True)
        except Exception as error:  # noqa: BLE001 - stopping goes on regardless
            log.warning("service %s: queue %s not deleted: %r", self.service.name, self.queue_name, error)
        finally:
            if not self.channel.is_closed:
                await self.channel.close()

    async def _on_message(self, message: DeliveredMessage) -> None:
        self.in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
        acked = False
        try:
            acked = await self._handle(message)
        finally:
            self._handling.discard(task)  # type: ignore[arg-type]
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            if not acked:
                await self._ack(message)

    async def _ack(self, message: DeliveredMessage) -> None:
        # On the channel it came on: after a reconnect the runtime consumes on
        # a new one, where this tag would be unknown (and close the channel).
        try:
            await message.channel.basic_ack(message.delivery.delivery_tag, wait=False)  # type: ignore[union-attr]
        except Exception as error:  # noqa: BLE001 - the channel is gone
            log.debug("ack failed: %r", error)

    async def _handle(self, message: DeliveredMessage) -> bool:
        """Handles and answers a delivery; ``True`` if it acked it already."""
        try:
            inbound = wire.decode(message.header.properties, message.body)
        except wire.Malformed as bad:
            self.bus.stats["malformed"] += 1
            log.warning("service %s: malformed message dropped or refused: %s", self.service.name, bad.reason)
            if bad.answerable and bad.message_id and bad.reply_to:
                await self.bus.answer(bad.reply_to, bad.message_id, "", error=CloudbusError(MALFORMED, bad.reason))
            return False
        if inbound.kind not in (wire.REQUEST, wire.MESSAGE):
            log.warning("service %s: a %s on a service queue; dropped", self.service.name, inbound.kind)
            return False
        answer = inbound.kind == wire.REQUEST
        if answer and not inbound.reply_to:
            log.warning("service %s: a request without reply_to; dropped", self.service.name)
            return False
        if self.stopping or self.bus.closing:
            if answer:
                await self._fail(inbound, CloudbusError(NO_SUCH_SERVICE, f"service {self.service.name} is stopping on node {self.bus.node_id}"))
            return False
        entry = self.service.entries.get(inbound.type)
        if entry is None:
            if answer:
                await self._fail(inbound, CloudbusError(UNKNOWN_MESSAGE, f"service {self.service.name} does not handle {inbound.type}"))
            else:
                log.warning("service %s: no handler for message %s; dropped", self.service.name, inbound.type)
            return False
        try:
            body = json.loads(inbound.body)
        except ValueError as error:
            body = None
            problem = f"the body of {inbound.type} is not JSON: {error}"
        else:
            problem = None if isinstance(body, dict) else f"the body of {inbound.type} is not a JSON object"
        if problem is not None:
            self.bus.stats["malformed"] += 1
            if answer:
                await self._fail(inbound, CloudbusError(MALFORMED, problem))
            return False
        ctx = Context(
            bus=self.bus,
            type=inbound.type,
            message_id=inbound.message_id,
            source=inbound.source,
            kind=inbound.kind,
            headers=inbound.headers,
            timeout_ms=inbound.timeout_ms,
        )
        token = inherited_headers.set(wire.inherited(inbound.headers) or None)
        error: CloudbusError | None = None
        result: Any = None
        try:
            result = await entry.handler(body, ctx)
        except CloudbusError as raised:
            error = raised
        except Exception as crashed:  # noqa: BLE001 - a handler bug is INTERNAL, like a panic
            log.exception("service %s: handler of %s failed", self.service.name, inbound.type)
            error = CloudbusError(INTERNAL, f"the handler of {inbound.type} failed: {crashed!r:.300}")
        finally:
            inherited_headers.reset(token)
        # Acked before the reply goes out, so that the broker counts the slot
        # free before the caller can send its next request (prefetch = limit).
        await self._ack(message)
        if not answer:
            if error is not None:
                log.warning("service %s: message %s failed: %s", self.service.name, inbound.type, error)
            return True
        assert inbound.reply_to is not None
        try:
            await self.bus.answer(inbound.reply_to, inbound.message_id, entry.reply_type, result, error=error)
        except TypeError as not_json:
            await self._fail(inbound, CloudbusError(INTERNAL, f"the reply of {inbound.type} is not JSON: {not_json}"))
        return True

    async def _fail(self, inbound: wire.Inbound, error: CloudbusError) -> None:
        assert inbound.reply_to is not None
        await self.bus.answer(inbound.reply_to, inbound.message_id, "", error=error)
