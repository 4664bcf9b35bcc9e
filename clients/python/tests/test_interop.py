"""The Python package and Rust nodes on one bus, on the real broker.

The Rust side is the ``cloudbus`` command line (``node``, ``call``, ``tail``,
``publish``) and, for many calls in one process, the ``interop_peer``
example; each test has a bus of its own and leaves nothing on the broker.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import cloudbus
from conftest import Proc, cli, queue_names


async def observer(url: str, bus: str, **options: object) -> cloudbus.Bus:
    return await cloudbus.connect(url, bus, **options)


# -- request/reply ---------------------------------------------------------------


async def test_python_calls_a_rust_service(url: str, bus_name: str, rust_node: Callable[..., Proc]) -> None:
    node = rust_node(bus_name, "--services", "storage")
    async with cloudbus.Bus(url, bus_name) as bus:
        capacity = await bus.call("storage", "storage.GetCapacity", {"primary_storage": "ps-1"}, timeout=10)
        assert capacity == {"primary_storage": "ps-1", "total_gb": 1000, "available_gb": 1000}

        pong = await bus.call("cloudbus", "cloudbus.Ping", node=node.node_id, timeout=10)
        assert pong["node"] == node.node_id and "storage" in pong["services"]

        failures = [
            ("storage.NOT_FOUND", lambda: bus.call("storage", "storage.GetCapacity", {"primary_storage": "nope"})),
            (cloudbus.MALFORMED, lambda: bus.call("storage", "storage.GetCapacity", {})),
            (cloudbus.UNKNOWN_MESSAGE, lambda: bus.call("storage", "storage.Nope", {})),
            (cloudbus.NO_SUCH_SERVICE, lambda: bus.call("billing", "billing.Charge", {})),
            (cloudbus.NO_SUCH_SERVICE, lambda: bus.call("storage", "storage.GetCapacity", {}, node=cloudbus.new_id())),
        ]
        for expected, call in failures:
            with pytest.raises(cloudbus.Error) as raised:
                await call()
            assert raised.value.code == expected, raised.value


async def test_rust_calls_a_python_service(
    url: str, bus_name: str, rust_bins: dict[str, Path], spawn: Callable[..., Proc]
) -> None:
    images = cloudbus.Service("pyimage", concurrency=4)

    @images.handler("pyimage.Describe", reply="pyimage.Description")
    async def describe(body: dict, ctx: cloudbus.Context) -> dict:
        if body.get("name") == "missing":
            raise cloudbus.Error(
                "pyimage.NOT_FOUND",
                "no such image",
                details={"name": "missing"},
                cause=cloudbus.Error("pyimage.CAUSE", "the reason"),
            )
        return {"name": body["name"], "size_gb": 8, "caller": ctx.source}

    async with cloudbus.Bus(url, bus_name, member=True) as bus:
        await bus.register(images)

        async def rust_call(*args: str) -> Proc:
            proc = spawn(cli(rust_bins, url, bus_name, "call", *args, "--timeout", "10s"))
            await proc.afinish()
            return proc

        ok = await rust_call("pyimage", "pyimage.Describe", '{"name": "debian-12"}')
        assert ok.popen.returncode == 0, ok.transcript()
        reply = json.loads("\n".join(ok.stdout))
        assert reply["name"] == "debian-12" and reply["size_gb"] == 8
        assert reply["caller"] != bus.node_id

        by_node = await rust_call("cloudbus", "cloudbus.Ping", "--node", bus.node_id)
        assert json.loads("\n".join(by_node.stdout))["services"] == ["cloudbus", "pyimage"], by_node.transcript()

        for args, code in [
            (("pyimage", "pyimage.Describe", '{"name": "missing"}'), "pyimage.NOT_FOUND: no such image (caused by pyimage.CAUSE: the reason)"),
            (("pyimage", "pyimage.Resize", "{}"), cloudbus.UNKNOWN_MESSAGE),
            (("cloudbus", "cloudbus.GetStatistics", "{}", "--node", bus.node_id), cloudbus.UNKNOWN_MESSAGE),
        ]:
            failed = await rust_call(*args)
            assert failed.popen.returncode != 0, failed.transcript()
            assert code in "\n".join(failed.stderr), failed.transcript()


async def test_python_services_answer_python_callers(url: str, bus_name: str) -> None:
    svc = cloudbus.Service("pyecho", concurrency=2)
    notes: asyncio.Queue[tuple[dict, dict]] = asyncio.Queue()

    @svc.handler("pyecho.Echo")
    async def echo(body: dict, ctx: cloudbus.Context) -> dict:
        # Sends while handling carry the task context on.
        await ctx.bus.send("pyecho", "pyecho.Note", {"text": body["text"]}, node=ctx.bus.node_id)
        return {"text": body["text"], "trace": ctx.header("traceparent")}

    @svc.handler("pyecho.Note")
    async def note(body: dict, ctx: cloudbus.Context) -> None:
        notes.put_nowait((body, ctx.headers))

    @svc.handler("pyecho.Hang")
    async def hang(body: dict, ctx: cloudbus.Context) -> None:
        await asyncio.Event().wait()

    # The hung handler is cancelled when the server stops, after its drain limit.
    async with cloudbus.Bus(url, bus_name, member=True, drain_limit=0.5) as server, cloudbus.Bus(url, bus_name) as client:
        await server.register(svc)
        await client.wait_for_cluster(lambda view: view.running("pyecho") == [server.node_id])
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        reply = await client.call(
            "pyecho", "pyecho.Echo", {"text": "hi"}, headers={"traceparent": trace, "ctx-user": "ann"}
        )
        assert reply == {"text": "hi", "trace": trace}
        body, headers = await asyncio.wait_for(notes.get(), 10)
        assert body == {"text": "hi"} and headers == {"traceparent": trace, "ctx-user": "ann"}

        with pytest.raises(cloudbus.Error) as raised:
            await client.call("pyecho", "pyecho.Hang", {}, timeout=0.3)
        assert raised.value.code == cloudbus.TIMEOUT
        with pytest.raises(cloudbus.Error) as raised:
            await client.call("pyecho", "pyecho.Echo", "not json")
        assert raised.value.code == cloudbus.INVALID_ARGUMENT
        with pytest.raises(cloudbus.Error) as raised:
            await client.call("pyecho", "pyecho.Echo", {"no": "text"})
        assert raised.value.code == cloudbus.INTERNAL  # a KeyError in the handler


# -- events ------------------------------------------------------------------------


async def test_events_flow_both_ways_by_pattern(
    url: str, bus_name: str, rust_bins: dict[str, Path], spawn: Callable[..., Proc]
) -> None:
    async with cloudbus.Bus(url, bus_name) as bus:
        # Python to Rust: `cloudbus tail` takes only what matches its pattern.
        tail = spawn(cli(rust_bins, url, bus_name, "tail", "py.*.done", "--count", "1", "--json"))
        await tail.await_for(lambda line: "listening" in line, stream="stderr", timeout=30)
        await bus.publish("py.job.started", {"job": 1})
        await bus.publish("py.job.step.done", {"job": 1})
        await bus.publish("py.job.done", {"job": 1})
        assert await tail.afinish() == 0, tail.transcript()
        seen = [json.loads(line) for line in tail.stdout]
        assert [(e["type"], e["body"], e["source"]) for e in seen] == [("py.job.done", {"job": 1}, bus.node_id)]

        # Rust to Python: `*` is one word, `#` any number.
        one_word = await bus.subscribe("vm.*")
        any_words = await bus.subscribe("vm.#")
        for type_name, body in [("host.Changed", {"n": 0}), ("vm.state.Changed", {"n": 1}), ("vm.Started", {"n": 2})]:
            proc = spawn(cli(rust_bins, url, bus_name, "publish", type_name, json.dumps(body)))
            assert await proc.afinish() == 0, proc.transcript()
        got_any = [await any_words.next(timeout=10), await any_words.next(timeout=10)]
        assert [(e.type, e.body) for e in got_any] == [("vm.state.Changed", {"n": 1}), ("vm.Started", {"n": 2})]
        assert got_any[0].source != bus.node_id
        got_one = await one_word.next(timeout=10)
        assert (got_one.type, got_one.body) == ("vm.Started", {"n": 2})
        # Nothing else arrived for either: a marker published last is next.
        await bus.publish("vm.Marker", {})
        assert (await one_word.next(timeout=10)).type == "vm.Marker"
        assert (await any_words.next(timeout=10)).type == "vm.Marker"
        await one_word.close()
        await any_words.close()


# -- the ring ----------------------------------------------------------------------


async def test_owner_of_reaches_the_same_node_from_both_languages(
    url: str, bus_name: str, rust_bins: dict[str, Path], rust_node: Callable[..., Proc], spawn: Callable[..., Proc]
) -> None:
    rust_nodes = [rust_node(bus_name, "--services", "storage") for _ in range(2)]
    async with cloudbus.Bus(url, bus_name, member=True) as py1, cloudbus.Bus(url, bus_name, member=True) as py2:
        members = {py1.node_id, py2.node_id, *(n.node_id for n in rust_nodes)}
        for bus in (py1, py2):
            await bus.wait_for_cluster(lambda view: set(view.members) == members, timeout=20)
        keys = [uuid.uuid4().hex for _ in range(1000)]

        peer = spawn([rust_bins["peer"], "owners", "--bus", bus_name, "--members", "4", "--amqp-url", url],
                     stdin="\n".join(keys) + "\n")
        limit = asyncio.Semaphore(64)

        async def python_owner(key: str) -> str:
            async with limit:
                pong = await py1.call("cloudbus", "cloudbus.Ping", owner_of=key, timeout=20)
                return pong["node"]

        from_python = await asyncio.gather(*(python_owner(k) for k in keys))
        assert await peer.afinish(60) == 0, peer.transcript()
        from_rust = {line["key"]: line for line in map(json.loads, peer.stdout)}

        assert len(from_rust) == len(keys)
        disagreements = [
            (key, py, from_rust[key])
            for key, py in zip(keys, from_python)
            if not (py == from_rust[key]["answered_by"] == from_rust[key]["owner"] == py2.cluster().owner(key))
        ]
        assert disagreements == [], disagreements[:5]
        assert set(from_python) == members, "every member owns a share of 1,000 keys"


# -- membership --------------------------------------------------------------------


async def test_a_killed_python_member_is_declared_dead_and_its_callers_fail(
    url: str,
    bus_name: str,
    rust_bins: dict[str, Path],
    rust_node: Callable[..., Proc],
    python_peer: Callable[..., Proc],
    spawn: Callable[..., Proc],
) -> None:
    node = rust_node(bus_name, "--services", "storage")
    member = python_peer(bus_name, "--heartbeat", "0.2")
    node.wait_for(lambda l: "node joined" in l and member.node_id in l, stream="stderr")

    rust_caller = spawn(cli(rust_bins, url, bus_name, "call", "pyecho", "pyecho.Hang", "{}", "--timeout", "60s"))
    async with cloudbus.Bus(url, bus_name) as bus:
        await bus.wait_for_cluster(lambda view: member.node_id in view)
        python_call = asyncio.create_task(bus.call("pyecho", "pyecho.Hang", {}, timeout=60))
        hanging = set()
        while len(hanging) < 2:
            line = await asyncio.to_thread(member.json_line, lambda v: "hanging" in v and v["hanging"] not in hanging)
            hanging.add(line["hanging"])

        member.signal(signal.SIGKILL)

        with pytest.raises(cloudbus.Error) as raised:
            await asyncio.wait_for(python_call, 15)
        assert raised.value.code == cloudbus.NODE_UNAVAILABLE, raised.value
        assert "is dead" in raised.value.description
        assert await rust_caller.afinish(15) != 0, rust_caller.transcript()
        assert cloudbus.NODE_UNAVAILABLE in "\n".join(rust_caller.stderr), rust_caller.transcript()
        await node.await_for(lambda l: "is dead" in l and member.node_id in l, stream="stderr", timeout=15)
        assert member.node_id not in bus.cluster()
        # A call to the dead node now fails at once.
        with pytest.raises(cloudbus.Error) as raised:
            await bus.call("pyecho", "pyecho.Echo", {}, node=member.node_id)
        assert raised.value.code == cloudbus.NODE_UNAVAILABLE


async def test_a_gracefully_stopped_python_member_leaves_no_queue(
    url: str, bus_name: str, rust_node: Callable[..., Proc], python_peer: Callable[..., Proc]
) -> None:
    node = rust_node(bus_name, "--services", "storage")
    member = python_peer(bus_name)
    node.wait_for(lambda l: "node joined" in l and member.node_id in l, stream="stderr")
    mine = [q for q in queue_names(bus_name) if q.endswith(member.node_id)]
    assert len(mine) == 3, mine  # node queue, event queue, pyecho

    async with cloudbus.Bus(url, bus_name) as bus:
        answer = await bus.call("pyecho", "pyecho.Echo", {"text": "bye"}, timeout=10)
        assert answer["node"] == member.node_id
        member.signal(signal.SIGTERM)
        assert await member.afinish() == 0, member.transcript()
        assert {"stopped": True} in [json.loads(line) for line in member.stdout]
        await node.await_for(lambda l: "left the cluster" in l and member.node_id in l, stream="stderr")
        await bus.wait_for_cluster(lambda view: member.node_id not in view)
    left = [q for q in queue_names(bus_name) if member.node_id in q]
    assert left == [], member.transcript()
    assert [q for q in queue_names(bus_name) if q.endswith(node.node_id)] != []  # the Rust node's are still there
