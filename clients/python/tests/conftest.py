"""What the broker tests share: the broker, the Rust binaries, a bus name of
their own, processes that are always ended, and cleaning up the broker.

A broker that cannot be reached, or Rust binaries that cannot be built,
fail the tests: they never skip. No test sleeps to synchronise: processes
are watched line by line and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

import cloudbus

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parents[2]
URL = os.environ.get("CLOUDBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PEERS = HERE / "peers"
# Python processes the tests start import the package from the sources too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE.parent / "src"), os.environ.get("PYTHONPATH")) if p
)


def broker_reachable() -> bool:
    host = os.environ.get("CLOUDBUS_AMQP_HOST", "127.0.0.1")
    port = int(os.environ.get("CLOUDBUS_AMQP_PORT", "5672"))
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def url() -> str:
    if not broker_reachable():
        pytest.fail(f"RabbitMQ must be reachable for these tests ({URL}); start it or run scripts/test.sh")
    return URL


@pytest.fixture(scope="session")
def rust_bins() -> dict[str, Path]:
    """The ``cloudbus`` CLI and the ``interop_peer`` example, built if needed
    (a no-op when ``scripts/test.sh`` already built the workspace)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    cmd = [
        "cargo", "build", "--quiet",
        "-p", "cloudbus-cli", "--bin", "cloudbus",
        "-p", "cloudbus", "--example", "interop_peer",
    ]
    built = subprocess.run(cmd, cwd=WORKSPACE, capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"building the Rust side failed: {' '.join(cmd)}\n{built.stderr}")
    bins = {"cloudbus": target / "debug" / "cloudbus", "peer": target / "debug" / "examples" / "interop_peer"}
    for name, path in bins.items():
        if not path.exists():
            pytest.fail(f"{name} not found at {path} after {' '.join(cmd)}")
    return bins


def queue_names(bus: str) -> list[str]:
    """The bus's queues, as ``rabbitmqctl`` lists them."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "-q", "--no-table-headers"],
        capture_output=True, text=True, check=True,
    ).stdout
    return sorted(line for line in out.splitlines() if line.startswith(f"{bus}."))


def delete_bus(url: str, bus: str) -> None:
    """Removes the bus's queues (a killed node's stay until they expire) and exchanges."""

    async def delete() -> None:
        conn = await aio_pika.connect(url)
        try:
            channel = await conn.channel()
            for queue in queue_names(bus):
                await channel.queue_delete(queue)
            for exchange in ("P2P", "BROADCAST"):
                await channel.exchange_delete(f"{bus}.{exchange}")
        finally:
            await conn.close()

    # Teardown may run while a test's loop is still set: use a thread of its own.
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: asyncio.run(delete())))
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _capture(errors: list[BaseException], f: Callable[[], Any]) -> None:
    try:
        f()
    except BaseException as error:  # noqa: BLE001
        errors.append(error)


@pytest.fixture
def bus_name(request: pytest.FixtureRequest, url: str) -> Iterator[str]:
    """A bus name no other test uses (``t-py-...``), cleaned up afterwards."""
    short = request.node.name.removeprefix("test_")[:20].replace("_", "-")
    name = f"t-py-{short}-{uuid.uuid4().hex[:8]}"
    yield name
    delete_bus(url, name)


class Proc:
    """A child process whose output is read line by line as it comes."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None):
        self.args = args
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if stdin is not None:
            assert self.popen.stdin is not None
            threading.Thread(target=self._write, args=(stdin,), daemon=True).start()

    def _write(self, text: str) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(text)
            self.popen.stdin.close()
        except BrokenPipeError:
            pass

    def _read(self, pipe: Any, into: list[str]) -> None:
        for line in pipe:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def transcript(self) -> str:
        return (
            f"$ {' '.join(map(str, self.args))}\n--- stdout\n" + "\n".join(self.stdout)
            + "\n--- stderr\n" + "\n".join(self.stderr)
        )

    def wait_for(self, predicate: Callable[[str], bool], *, stream: str = "stdout", timeout: float = 20) -> str:
        """The first line of ``stream`` that satisfies ``predicate``, waiting up to ``timeout``."""
        lines = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such line within {timeout} s\n{self.transcript()}")
                if self.popen.poll() is not None and all(not r.is_alive() for r in self._readers):
                    raise AssertionError(f"the process ended (status {self.popen.returncode})\n{self.transcript()}")
                self._changed.wait(left)

    def json_line(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        def matches(line: str) -> bool:
            try:
                value = json.loads(line)
            except ValueError:
                return False
            return isinstance(value, dict) and predicate(value)

        return json.loads(self.wait_for(matches, timeout=timeout))

    def finish(self, timeout: float = 30) -> int:
        """Waits for the process to exit and for its output to be read."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s\n{self.transcript()}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    async def afinish(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.finish, timeout)

    async def await_for(self, predicate: Callable[[str], bool], *, stream: str = "stdout", timeout: float = 20) -> str:
        return await asyncio.to_thread(self.wait_for, predicate, stream=stream, timeout=timeout)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """Starts processes that are killed when the test ends, whatever happens."""
    started: list[Proc] = []

    def start(args: list[str], **kwargs: Any) -> Proc:
        proc = Proc([str(a) for a in args], **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.signal(signal.SIGTERM)
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def rust_node(rust_bins: dict[str, Path], spawn: Callable[..., Proc], url: str) -> Callable[..., Proc]:
    """Starts ``cloudbus node`` on a bus and waits until it runs; its log is JSON lines."""

    def start(bus: str, *extra: str) -> Proc:
        proc = spawn(
            [rust_bins["cloudbus"], "--log-format", "json", "node", "--bus", bus, "--amqp-url", url, *extra],
            env={"RUST_LOG": "info"},
        )
        line = proc.wait_for(lambda l: "node started" in l, stream="stderr", timeout=30)
        proc.node_id = json.loads(line)["fields"]["node"]  # type: ignore[attr-defined]
        return proc

    return start


@pytest.fixture
def python_peer(spawn: Callable[..., Proc], url: str) -> Callable[..., Proc]:
    """Starts ``tests/peers/member.py`` (a Python member in a process of its own)."""

    def start(bus: str, *extra: str) -> Proc:
        proc = spawn([sys.executable, PEERS / "member.py", "--url", url, "--bus", bus, *extra])
        ready = proc.json_line(lambda v: v.get("ready") is True, timeout=30)
        proc.node_id = ready["node"]  # type: ignore[attr-defined]
        return proc

    return start


def cli(rust_bins: dict[str, Path], url: str, bus: str, *args: str) -> list[str]:
    """The arguments of a ``cloudbus`` command on ``bus``."""
    command, *rest = args
    return [str(rust_bins["cloudbus"]), command, "--bus", bus, "--amqp-url", url, *rest]


def echo_service(name: str) -> cloudbus.Service:
    """A service answering ``<name>.Echo`` with the text and the node that answered."""
    service = cloudbus.Service(name)

    @service.handler(f"{name}.Echo", reply=f"{name}.Echoed")
    async def echo(body: dict[str, Any], ctx: cloudbus.Context) -> dict[str, Any]:
        return {"text": body["text"], "node": ctx.bus.node_id}

    return service
