"""The demo's `image` service, in Python: the Rust vm service calls it.

    cargo run --release -- node                       # vm, host, storage, audit (Rust)
    python clients/python/examples/image_service.py   # image (Python), a cluster member
    cargo run --release -- call vm vm.CreateVmFromImage \
        '{"name": "web-1", "cpus": 2, "memory_gb": 4, "image": "debian-12"}'

``vm.CreateVmFromImage`` reaches the Rust vm service, which asks
``image.PrepareImage`` of whichever member announces ``image``: this
process. Its answer (the disk size) sizes the VM's volume; an unknown image
fails with ``image.NOT_FOUND``, which reaches the API caller unchanged.
The service also follows the VMs' state changes, published by Rust.

Options: ``--url`` (or CLOUDBUS_AMQP_URL), ``--bus`` (or CLOUDBUS_BUS).
Prints JSON lines; stops gracefully (leaves the cluster) on Ctrl-C/SIGTERM.
"""

import argparse
import asyncio
import json
import os
import signal
from typing import Any

import cloudbus

#: Image name -> disk size in GiB.
CATALOG = {"debian-12": 2, "ubuntu-24.04": 4, "windows-2022": 32}

images = cloudbus.Service("image", concurrency=16)


@images.handler("image.PrepareImage", reply="image.ImagePrepared")
async def prepare_image(body: dict[str, Any], ctx: cloudbus.Context) -> dict[str, Any]:
    name = body.get("image")
    if name not in CATALOG:
        raise cloudbus.Error(
            "image.NOT_FOUND",
            f"no image {name!r}",
            details={"known": sorted(CATALOG)},
        )
    say(prepared=name, vm_uuid=body.get("vm_uuid"), asked_by=ctx.source)
    return {"image": name, "size_gb": CATALOG[name]}


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def follow_vms(bus: cloudbus.Bus) -> None:
    async with await bus.subscribe("vm.#") as events:
        async for event in events:
            say(event=event.type, body=event.body)


async def main() -> None:
    parser = argparse.ArgumentParser(description="The demo's image service, in Python.")
    parser.add_argument("--url", default=os.environ.get("CLOUDBUS_AMQP_URL", cloudbus.DEFAULT_URL))
    parser.add_argument("--bus", default=os.environ.get("CLOUDBUS_BUS", cloudbus.DEFAULT_BUS))
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with cloudbus.Bus(args.url, args.bus, member=True) as bus:
        await bus.register(images)
        follower = asyncio.create_task(follow_vms(bus))
        say(ready=True, node=bus.node_id, bus=args.bus, services=bus.services())
        await stop.wait()
        follower.cancel()
    say(stopped=True)


if __name__ == "__main__":
    asyncio.run(main())
