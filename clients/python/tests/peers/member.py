"""A Python member in a process of its own, for the tests that kill or stop one.

Serves ``pyecho`` (``pyecho.Echo`` answers, ``pyecho.Hang`` never does) as
a cluster member and prints JSON lines: ``{"ready": true, "node": ...}``
once it has joined, ``{"hanging": <message id>}`` for each ``Hang`` taken,
``{"stopped": true}`` after a graceful stop on SIGTERM.
"""

import argparse
import asyncio
import json
import signal

import cloudbus


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--bus", required=True)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    args = parser.parse_args()

    echo = cloudbus.Service("pyecho")

    @echo.handler("pyecho.Echo", reply="pyecho.Echoed")
    async def on_echo(body: dict, ctx: cloudbus.Context) -> dict:
        return {"text": body.get("text"), "node": ctx.bus.node_id, "from": ctx.source}

    never = asyncio.Event()

    @echo.handler("pyecho.Hang")
    async def on_hang(body: dict, ctx: cloudbus.Context) -> dict:
        say(hanging=ctx.message_id, source=ctx.source)
        await never.wait()
        return {}

    bus = await cloudbus.connect(args.url, args.bus, member=True, heartbeat=args.heartbeat)
    await bus.register(echo)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say(ready=True, node=bus.node_id)
    await stop.wait()
    never.set()  # in-flight work finishes, then the node leaves
    await bus.close()
    say(stopped=True)


asyncio.run(main())
