"""Request/reply throughput of the Python package against Rust nodes, beside a
raw aio-pika client and server doing the same calls in the same sitting,
and beside nameko (Python to Python, its own protocol) when installed.

    python clients/python/bench.py                 # 5 s per measurement, 1 and 64 in flight
    python clients/python/bench.py --secs 3 --json

Python to Rust: the package's ``bus.call`` and a raw aio-pika client (the
minimum the protocol asks: the same properties and headers, no publisher
confirms, no mandatory flag, replies consumed without acks) both call
``storage.GetCapacity`` on one ``cloudbus node``. Rust to Python: the
``interop_peer`` example calls a service served by the package (acks,
prefetch = concurrency) and the same service served by a raw aio-pika
consumer (no acks). nameko: its own client and service (``bench_nameko.py``)
run from the venv given by ``--nameko-python`` (default
``target/nameko-venv``; ``pip install nameko`` there).

Build the Rust side first: ``cargo build --release -p cloudbus-cli --bin
cloudbus -p cloudbus --example interop_peer``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

import cloudbus

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parents[1]
BODY = {"primary_storage": "ps-1"}
REPLY = {"primary_storage": "ps-1", "total_gb": 1000, "available_gb": 1000}


async def closed_loop(call: Callable[[], Awaitable[Any]], in_flight: int, secs: float) -> dict[str, Any]:
    """``in_flight`` workers calling back to back for ``secs`` after a warm-up."""
    for _ in range(min(in_flight, 16)):
        await call()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + secs
    latencies: list[float] = []

    async def worker() -> None:
        while True:
            sent = loop.time()
            if sent >= deadline:
                return
            await call()
            done = loop.time()
            if done > deadline:
                return
            latencies.append(done - sent)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return summary(len(latencies), secs, sorted(latencies))


def summary(count: int, secs: float, latencies: list[float]) -> dict[str, Any]:
    def at(p: float) -> int:
        return round(latencies[min(len(latencies) - 1, round((len(latencies) - 1) * p))] * 1e6) if latencies else 0

    return {"round_trips": count, "rt_per_s": count / secs, "p50_us": at(0.5), "p99_us": at(0.99)}


class RawClient:
    """A raw aio-pika caller of a cloudbus service: what a hand-written client does."""

    def __init__(self, url: str, bus: str) -> None:
        self.url, self.bus, self.me = url, bus, uuid.uuid4().hex
        self.pending: dict[str, asyncio.Future[Any]] = {}

    async def start(self) -> None:
        self.conn = await aio_pika.connect(self.url)
        channel = await self.conn.channel(publisher_confirms=False)
        self.p2p = await channel.get_exchange(f"{self.bus}.P2P")
        self.queue = await channel.declare_queue(
            f"{self.bus}.message.cloudbus.{self.me}", arguments={"x-expires": 60_000}
        )
        await self.queue.bind(self.p2p, routing_key=f"cloudbus.{self.me}")
        await self.queue.consume(self.on_reply, no_ack=True)

    async def on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body)["reply"])

    async def call(self, node: str, service: str, type_name: str, body: dict[str, Any]) -> Any:
        message_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        await self.p2p.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                message_id=message_id,
                type=type_name,
                content_type="application/json",
                timestamp=int(time.time()),
                reply_to=f"cloudbus.{self.me}",
                expiration=30,
                headers={"cb-kind": "request", "cb-source": self.me, "cb-timeout-ms": 30_000},
            ),
            routing_key=f"{service}.{node}",
        )
        return await asyncio.wait_for(future, 30)

    async def close(self) -> None:
        await self.queue.delete(if_unused=False, if_empty=False)
        await self.conn.close()


class RawServer:
    """A raw aio-pika server of a cloudbus service (no acks, no membership)."""

    def __init__(self, url: str, bus: str, service: str) -> None:
        self.url, self.bus, self.service, self.node = url, bus, service, uuid.uuid4().hex

    async def start(self) -> None:
        self.conn = await aio_pika.connect(self.url)
        self.channel = await self.conn.channel(publisher_confirms=False)
        self.p2p = await self.channel.get_exchange(f"{self.bus}.P2P")
        self.queue = await self.channel.declare_queue(
            f"{self.bus}.message.{self.service}.{self.node}", arguments={"x-expires": 60_000}
        )
        await self.queue.bind(self.p2p, routing_key=f"{self.service}.{self.node}")
        await self.queue.consume(self.on_request, no_ack=True)

    async def on_request(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        json.loads(message.body)
        await self.p2p.publish(
            aio_pika.Message(
                json.dumps({"success": True, "reply": REPLY}).encode(),
                message_id=uuid.uuid4().hex,
                correlation_id=message.message_id,
                type="pybench.Capacity",
                content_type="application/json",
                timestamp=int(time.time()),
                headers={"cb-kind": "reply", "cb-source": self.node},
            ),
            routing_key=message.reply_to or "",
        )

    async def close(self) -> None:
        await self.queue.delete(if_unused=False, if_empty=False)
        await self.conn.close()


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def rust_node(cli: Path, url: str, bus: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await spawn(str(cli), "--log-format", "json", "node", "--bus", bus, "--amqp-url", url, "--services", "storage")
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise SystemExit(f"the Rust node did not start ({cli})")
            if b"node started" in line:
                return proc, json.loads(line)["fields"]["node"]


async def rust_calls(peer: Path, url: str, bus: str, node: str, service: str, in_flight: int, secs: float) -> dict[str, Any]:
    proc = await spawn(
        str(peer), "bench", "--bus", bus, "--node", node, "--service", service, "--type", f"{service}.GetCapacity",
        "--body", json.dumps(BODY), "--in-flight", str(in_flight), "--secs", str(secs), "--amqp-url", url,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"interop_peer failed: {err.decode()}")
    return json.loads(out)


async def nameko(python: Path, url: str, in_flight: int, secs: float) -> dict[str, Any] | None:
    if not python.exists():
        return None
    proc = await spawn(str(python), str(HERE / "bench_nameko.py"), url, str(in_flight), str(secs))
    out, err = await proc.communicate()
    if proc.returncode != 0:
        print(f"nameko failed: {err.decode()[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.decode().strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("CLOUDBUS_AMQP_URL", cloudbus.DEFAULT_URL))
    parser.add_argument("--secs", type=float, default=5.0)
    parser.add_argument("--in-flight", default="1,64")
    parser.add_argument("--rounds", type=int, default=1, help="measure each pair this many times, alternating")
    parser.add_argument("--cloudbus", type=Path, default=WORKSPACE / "target/release/cloudbus")
    parser.add_argument("--peer", type=Path, default=WORKSPACE / "target/release/examples/interop_peer")
    parser.add_argument("--nameko-python", type=Path, default=WORKSPACE / "target/nameko-venv/bin/python")
    parser.add_argument("--concurrency", type=int, default=64, help="the Python service's limit (its queue's prefetch)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    levels = [int(n) for n in args.in_flight.split(",")]
    for path in (args.cloudbus, args.peer):
        if not path.exists():
            raise SystemExit(f"{path} is missing: cargo build --release -p cloudbus-cli --bin cloudbus -p cloudbus --example interop_peer")

    bus_name = f"bench-py-{uuid.uuid4().hex[:8]}"
    node_proc, rust = await rust_node(args.cloudbus, args.url, bus_name)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {}

    def record(name: str, level: int, result: dict[str, Any] | None) -> None:
        if result is not None:
            results.setdefault(name, {}).setdefault(level, []).append(result)
            print(f"  {name:<24} {level:>3} in flight: {result['rt_per_s']:>7.0f} rt/s", file=sys.stderr)

    bus = await cloudbus.connect(args.url, bus_name)
    raw_client = RawClient(args.url, bus_name)
    await raw_client.start()
    server = cloudbus.Service("pybench", concurrency=args.concurrency)

    @server.handler("pybench.GetCapacity", reply="pybench.Capacity")
    async def capacity(body: dict[str, Any], ctx: cloudbus.Context) -> dict[str, Any]:
        return REPLY

    await bus.register(server)
    raw_server = RawServer(args.url, bus_name, "pyraw")
    await raw_server.start()
    try:
        for _ in range(args.rounds):
            for level in levels:
                record("python->rust package", level, await closed_loop(
                    lambda: bus.call("storage", "storage.GetCapacity", BODY, node=rust), level, args.secs))
                record("python->rust raw", level, await closed_loop(
                    lambda: raw_client.call(rust, "storage", "storage.GetCapacity", BODY), level, args.secs))
                record("rust->python package", level, await rust_calls(
                    args.peer, args.url, bus_name, bus.node_id, "pybench", level, args.secs))
                record("rust->python raw", level, await rust_calls(
                    args.peer, args.url, bus_name, raw_server.node, "pyraw", level, args.secs))
                record("nameko->nameko", level, await nameko(args.nameko_python, args.url, level, args.secs))
    finally:
        await raw_server.close()
        await raw_client.close()
        await bus.close()
        node_proc.send_signal(signal.SIGTERM)
        await node_proc.wait()
        conn = await aio_pika.connect(args.url)
        channel = await conn.channel()
        for exchange in ("P2P", "BROADCAST"):
            await channel.exchange_delete(f"{bus_name}.{exchange}")
        await conn.close()

    table = {
        name: {level: statistics.median(r["rt_per_s"] for r in runs) for level, runs in by_level.items()}
        for name, by_level in results.items()
    }
    if args.json:
        print(json.dumps({"secs": args.secs, "rounds": args.rounds, "results": results, "median_rt_per_s": table}, indent=2))
        return
    print(f"\nround trips per second (median of {args.rounds}), {args.secs:g} s each")
    print(f"{'':<24}" + "".join(f"{f'{n} in flight':>14}" for n in levels))
    for name, by_level in table.items():
        print(f"{name:<24}" + "".join(f"{by_level.get(n, 0):>14.0f}" for n in levels))
    for direction in ("python->rust", "rust->python"):
        package, raw = table.get(f"{direction} package", {}), table.get(f"{direction} raw", {})
        ratios = ", ".join(f"{package[n] / raw[n]:.2f}x at {n}" for n in levels if raw.get(n))
        print(f"{direction}: package / raw = {ratios}")
    if "nameko->nameko" in table:
        for direction in ("python->rust", "rust->python"):
            package, nk = table.get(f"{direction} package", {}), table["nameko->nameko"]
            ratios = ", ".join(f"{package[n] / nk[n]:.2f}x at {n}" for n in levels if nk.get(n))
            print(f"{direction}: package / nameko = {ratios}")


if __name__ == "__main__":
    asyncio.run(main())
