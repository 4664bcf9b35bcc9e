"""A bus on quorum queues with a Python member and a Rust node: the same
messaging on replicated queues, and a Python node whose queues exist with
the other type refused with a clear error. Quorum queues work on the one
broker of these tests as on a cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import aio_pika
import pytest

import cloudbus
from conftest import Proc


def queue_types(bus: str) -> dict[str, str]:
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "type", "-q", "--no-table-headers"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = (line.split("\t") for line in out.splitlines() if line.startswith(f"{bus}."))
    return {name: kind.strip() for name, kind in rows}


async def test_a_python_member_serves_and_calls_on_quorum_queues(
    url: str, bus_name: str, rust_node: Callable[..., Proc]
) -> None:
    rust = rust_node(bus_name, "--services", "storage", "--queue-type", "quorum")
    images = cloudbus.Service("pyimage")

    @images.handler("pyimage.Describe", reply="pyimage.Description")
    async def describe(body: dict, ctx: cloudbus.Context) -> dict:
        return {"name": body["name"]}

    async with cloudbus.Bus(url, bus_name, member=True, queue_type="quorum") as bus:
        await bus.register(images)
        capacity = await bus.call("storage", "storage.GetCapacity", {"primary_storage": "ps-1"}, timeout=20)
        assert capacity["primary_storage"] == "ps-1"
        # Its own service, through its quorum service queue (no in-process shortcut in Python).
        assert (await bus.call("pyimage", "pyimage.Describe", {"name": "d"}, node=bus.node_id))["name"] == "d"
        # A plain message, published persistent on a quorum bus.
        await bus.send("storage", "storage.ReturnCapacity", {"primary_storage": "ps-1", "size_gb": 0}, node=rust.node_id)
        types = queue_types(bus_name)
        mine = {name: kind for name, kind in types.items() if name.endswith(bus.node_id)}
        assert len(mine) == 3, types  # node, service and event queues
        assert set(types.values()) == {"quorum"}, types


async def test_a_node_whose_queues_exist_with_the_other_type_is_refused_naming_both(
    url: str, bus_name: str
) -> None:
    node = cloudbus.new_id()
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        await channel.declare_queue(
            f"{bus_name}.message.cloudbus.{node}",
            durable=True,
            arguments={"x-queue-type": "quorum", "x-expires": 600000},
        )
    finally:
        await conn.close()
    with pytest.raises(cloudbus.Error) as raised:
        await cloudbus.connect(url, bus_name, node=node)
    assert raised.value.code == cloudbus.INVALID_ARGUMENT, raised.value
    assert "quorum" in str(raised.value) and "classic" in str(raised.value), raised.value

    with pytest.raises(cloudbus.Error) as raised:
        cloudbus.Bus(url, bus_name, queue_type="stream")
    assert raised.value.code == cloudbus.INVALID_ARGUMENT, raised.value
