"""The README's example: the Rust demo's vm service calls the Python image service."""

import json
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import HERE, Proc, cli


async def test_the_rust_vm_service_creates_a_vm_from_a_python_image(
    url: str, bus_name: str, rust_bins: dict[str, Path], rust_node: Callable[..., Proc], spawn: Callable[..., Proc]
) -> None:
    node = rust_node(bus_name, "--services", "vm,storage")
    image = spawn([sys.executable, HERE.parent / "examples" / "image_service.py", "--url", url, "--bus", bus_name])
    python_node = image.json_line(lambda v: v.get("ready") is True, timeout=30)["node"]
    await node.await_for(lambda l: "node joined" in l and python_node in l, stream="stderr")

    async def create(image_name: str) -> Proc:
        body = json.dumps({"name": f"vm-{image_name}", "cpus": 2, "memory_gb": 4, "image": image_name})
        proc = spawn(cli(rust_bins, url, bus_name, "call", "vm", "vm.CreateVmFromImage", body, "--timeout", "10s"))
        await proc.afinish()
        return proc

    made = await create("debian-12")
    assert made.popen.returncode == 0, made.transcript()
    vm = json.loads("\n".join(made.stdout))
    assert (vm["name"], vm["state"]) == ("vm-debian-12", "Stopped")
    prepared = image.json_line(lambda v: v.get("prepared") == "debian-12")
    assert prepared["vm_uuid"] == vm["uuid"] and prepared["asked_by"] == node.node_id

    missing = await create("plan9")
    assert missing.popen.returncode != 0, missing.transcript()
    assert "image.NOT_FOUND: no image 'plan9'" in "\n".join(missing.stderr), missing.transcript()
