"""Losing the broker connection: the Python node reconnects by itself and
declares its queues, bindings and consumers again; sends fail fast while it
is away; a call in flight across the outage still gets its reply; a
request sent to it meanwhile is answered once it is back.

A proxy inside the test stands between the node and the broker, so the
shared broker is never touched.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

import cloudbus
from conftest import echo_service, queue_names
from proxy import proxied_broker

WAIT = 20.0


async def until(what: str, done: Callable[[], bool]) -> None:
    """Looks again and again (every 10 ms) until ``done``; fails naming
    ``what`` after ``WAIT`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not done():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT} s")
        await asyncio.sleep(0.01)


def consumers(queue: str) -> str | None:
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "consumers", "-q", "--no-table-headers"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return count.strip()
    return None


async def until_broker_lists(queue: str, count: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while await asyncio.to_thread(consumers, queue) != count:
        if loop.time() > deadline:
            pytest.fail(f"the broker still lists consumers other than {count} on {queue}")


async def delete_exchange(url: str, exchange: str) -> None:
    """Deletes an exchange, as an operator might."""
    conn = await aio_pika.connect(url)
    try:
        await (await conn.channel()).exchange_delete(exchange)
    finally:
        await conn.close()


def gated_service(started: asyncio.Event, release: asyncio.Event) -> cloudbus.Service:
    """``slow``: its ``slow.Work`` handler says it started, then waits to be
    released before it answers ``n``."""
    slow = cloudbus.Service("slow")

    @slow.handler("slow.Work", reply="slow.Done")
    async def work(body: dict[str, Any], _ctx: cloudbus.Context) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"n": body["n"]}

    return slow


async def test_a_lost_connection_comes_back_with_its_topology_and_sends_fail_fast_meanwhile(
    url: str, bus_name: str
) -> None:
    proxy, proxied = await proxied_broker(url)
    # Long heartbeats: nobody is declared dead during the outage.
    options = {"member": True, "heartbeat": 10.0}
    a = await cloudbus.connect(proxied, bus_name, reconnect_min=0.02, reconnect_max=0.2, **options)
    b = await cloudbus.connect(url, bus_name, **options)
    try:
        await a.register(echo_service("api"))
        await b.register(echo_service("echo"))
        started, release = asyncio.Event(), asyncio.Event()
        slow = gated_service(started, release)

        await b.register(slow)
        events = await a.subscribe("vm.*")
        before = queue_names(bus_name)
        assert (await a.call("echo", "echo.Echo", {"text": "1"}, node=b.node_id))["text"] == "1"

        # A call is in flight when the connection goes.
        in_flight = asyncio.create_task(a.call("slow", "slow.Work", {"n": 7}, node=b.node_id, timeout=WAIT))
        await asyncio.wait_for(started.wait(), WAIT)
        proxy.cut()
        await until("A noticing the lost connection", lambda: not a.connected)

        # Meanwhile: fail fast, never wait for a timeout.
        with pytest.raises(cloudbus.Error) as raised:
            await a.call("echo", "echo.Echo", {"text": "2"}, node=b.node_id, timeout=WAIT)
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        with pytest.raises(cloudbus.Error) as raised:
            await a.publish("vm.Started", {"uuid": "x"})
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        # A request for A's service waits in A's queue meanwhile.
        queued = asyncio.create_task(b.call("api", "api.Echo", {"text": "q"}, node=a.node_id, timeout=WAIT))
        # The slow handler answers while A is away, as the broker sees it
        # (A's node queue is taken without acks: a reply handed to the old
        # consumer would be lost): the reply waits in A's node queue.
        await until_broker_lists(f"{bus_name}.message.cloudbus.{a.node_id}", "0")
        release.set()

        proxy.restore()
        await until("A reconnecting", lambda: a.connected)
        assert a.stats["reconnects"] == 1
        assert (await asyncio.wait_for(in_flight, WAIT))["n"] == 7, "the reply sent during the outage arrives"
        assert (await asyncio.wait_for(queued, WAIT))["text"] == "q", "the request sent meanwhile is answered"

        # Everything is back: calls out and in, events in, the same queues.
        assert (await a.call("echo", "echo.Echo", {"text": "3"}, node=b.node_id))["text"] == "3"
        assert (await b.call("api", "api.Echo", {"text": "4"}, node=a.node_id))["node"] == a.node_id
        await b.publish("vm.Started", {"uuid": "v1"})
        event = await events.next(timeout=WAIT)
        assert event.type == "vm.Started" and event.body == {"uuid": "v1"}
        assert queue_names(bus_name) == before
    finally:
        await a.close()
        await b.close()
        await proxy.close()


async def test_a_node_closed_while_reconnecting_closes_without_hanging(url: str, bus_name: str) -> None:
    proxy, proxied = await proxied_broker(url)
    a = await cloudbus.connect(proxied, bus_name, member=True, reconnect_min=0.02, reconnect_max=0.2)
    try:
        await a.register(echo_service("api"))
        proxy.cut()
        await until("A noticing the lost connection", lambda: not a.connected)
        with pytest.raises(cloudbus.Error) as raised:
            await a.register(echo_service("more"))
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        await asyncio.wait_for(a.close(), WAIT)
        await asyncio.wait_for(a.wait_closed(), WAIT)
        assert not a.connected
        with pytest.raises(cloudbus.Error) as raised:
            await a.call("api", "api.Echo", {"text": "late"}, node=a.node_id)
        assert raised.value.code == cloudbus.SHUTTING_DOWN, raised.value
    finally:
        await proxy.close()


async def test_a_service_queue_deleted_under_its_consumer_comes_back(url: str, bus_name: str) -> None:
    """The broker cancels the consumer of a queue an operator deleted while
    the connection stays up: the node builds its session again, so the
    service is back instead of answering ``NO_SUCH_SERVICE`` for good."""
    a = await cloudbus.connect(url, bus_name, member=True, heartbeat=10.0, reconnect_min=0.02, reconnect_max=0.2)
    b = await cloudbus.connect(url, bus_name, heartbeat=10.0)
    try:
        await a.register(echo_service("api"))
        assert (await b.call("api", "api.Echo", {"text": "1"}, node=a.node_id))["text"] == "1"
        await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "delete_queue", f"{bus_name}.message.api.{a.node_id}"],
            check=True, capture_output=True,
        )
        await until("A rebuilding its session", lambda: a.stats["reconnects"] == 1 and a.connected)
        assert (await b.call("api", "api.Echo", {"text": "2"}, node=a.node_id))["text"] == "2"
    finally:
        await a.close()
        await b.close()


async def test_a_channel_closed_by_the_broker_is_opened_again(url: str, bus_name: str) -> None:
    """An event published to an exchange an operator deleted: the broker
    closes the publishing channel (404). The node builds its session again,
    declaring the exchange anew, and goes on serving and publishing."""
    a = await cloudbus.connect(url, bus_name, member=True, heartbeat=10.0, reconnect_min=0.02, reconnect_max=0.2)
    b = await cloudbus.connect(url, bus_name, heartbeat=10.0)
    try:
        await a.register(echo_service("api"))
        await delete_exchange(url, f"{bus_name}.BROADCAST")
        with pytest.raises(cloudbus.Error) as raised:
            await a.publish("vm.Started", {"uuid": "lost"})
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        await until("A rebuilding its session", lambda: a.stats["reconnects"] == 1 and a.connected)
        await a.publish("vm.Started", {"uuid": "v1"})
        assert (await b.call("api", "api.Echo", {"text": "2"}, node=a.node_id))["text"] == "2"
    finally:
        await a.close()
        await b.close()


async def until_answered(a: cloudbus.Bus, b: cloudbus.Bus, text: str) -> None:
    """Calls B's ``api`` from A until a call is answered. Meanwhile calls
    fail: ``NO_SUCH_SERVICE`` while B's binding is missing,
    ``BROKER_UNAVAILABLE`` while A reconnects, ``TIMEOUT`` for a request
    whose channel the broker closed before confirming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        try:
            reply = await a.call("api", "api.Echo", {"text": text}, node=b.node_id, timeout=0.5)
            break
        except cloudbus.Error as error:
            retry = (cloudbus.NO_SUCH_SERVICE, cloudbus.BROKER_UNAVAILABLE, cloudbus.TIMEOUT)
            assert error.code in retry, error
            if loop.time() > deadline:
                pytest.fail(f"B's service did not come back within {WAIT} s: {error}")
            await asyncio.sleep(0.01)
    assert reply["text"] == text


async def test_a_node_that_only_serves_binds_its_queues_again_after_an_exchange_is_deleted(
    url: str, bus_name: str
) -> None:
    """An operator removes a node's binding, or deletes the ``P2P`` exchange
    and every binding with it. The node that only serves binds its queue
    again by itself: without a reconnect when only the binding went; when
    the exchange went, either once the caller has declared it again or by
    rebuilding its session when the broker refuses its binding."""
    a = await cloudbus.connect(url, bus_name, heartbeat=10.0, reconnect_min=0.02, reconnect_max=0.2)
    b = await cloudbus.connect(url, bus_name, member=True, heartbeat=10.0, rebind_every=0.1)
    try:
        await b.register(echo_service("api"))
        assert (await a.call("api", "api.Echo", {"text": "1"}, node=b.node_id))["text"] == "1"

        key = f"api.{b.node_id}"
        conn = await aio_pika.connect(url)
        try:
            queue = await (await conn.channel()).get_queue(f"{bus_name}.message.{key}", ensure=False)
            await queue.unbind(f"{bus_name}.P2P", routing_key=key)
        finally:
            await conn.close()
        await until_answered(a, b, "2")
        assert b.stats["reconnects"] == 0, "a binding alone needs no reconnect"

        await delete_exchange(url, f"{bus_name}.P2P")
        await until_answered(a, b, "3")
    finally:
        await a.close()
        await b.close()


async def test_a_call_whose_confirm_is_lost_with_the_connection_still_gets_its_reply(
    url: str, bus_name: str
) -> None:
    """The connection drops after a request reached the broker but before
    its confirm came back: the request is running, so the call waits for
    its reply (taken after the reconnect) instead of failing and inviting a
    retry, as in Rust. A plain message caught the same way fails, saying it
    may have been delivered."""
    proxy, proxied = await proxied_broker(url)
    a = await cloudbus.connect(proxied, bus_name, heartbeat=10.0, reconnect_min=0.02, reconnect_max=0.2)
    b = await cloudbus.connect(url, bus_name, member=True, heartbeat=10.0)
    try:
        started, release = asyncio.Event(), asyncio.Event()
        slow = gated_service(started, release)

        noted: asyncio.Queue[int] = asyncio.Queue()
        notes = cloudbus.Service("notes")

        @notes.handler("notes.Note")
        async def note_taken(body: dict[str, Any], _ctx: cloudbus.Context) -> None:
            noted.put_nowait(body["n"])

        await b.register(slow)
        await b.register(notes)

        # Nothing from the broker reaches A any more: no confirm, no reply.
        proxy.stall_downstream()
        in_flight = asyncio.create_task(a.call("slow", "slow.Work", {"n": 7}, node=b.node_id, timeout=WAIT))
        note = asyncio.create_task(a.send("notes", "notes.Note", {"n": 8}, node=b.node_id))
        # Both reached B; their confirms wait in the proxy, and go with it.
        await asyncio.wait_for(started.wait(), WAIT)
        assert await asyncio.wait_for(noted.get(), WAIT) == 8
        proxy.cut()
        with pytest.raises(cloudbus.Error) as raised:
            await asyncio.wait_for(note, WAIT)
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        assert raised.value.details == {"delivered": "unknown"}, raised.value
        assert not in_flight.done(), "the call still waits for its reply"

        # The reply goes to A's node queue once the broker no longer lists
        # the old consumer (before that it would be lost: no acks there).
        await until_broker_lists(f"{bus_name}.message.cloudbus.{a.node_id}", "0")
        release.set()
        proxy.restore()
        await until("A reconnecting", lambda: a.connected)
        assert (await asyncio.wait_for(in_flight, WAIT))["n"] == 7
    finally:
        await a.close()
        await b.close()
        await proxy.close()
