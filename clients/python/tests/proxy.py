"""A TCP proxy in front of the broker that a test can cut and restore, so
that a node loses its connection without touching the shared broker; with
an SSL context it terminates TLS, standing in for an ``amqps://`` broker."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    """Forwards 127.0.0.1:<port> to the broker; ``cut`` drops every
    connection through it and refuses new ones until ``restore``;
    ``stall_downstream`` holds back what the broker sends until then."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (host, port)
        self.tls = tls
        self.refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def stall_downstream(self) -> None:
        """Nothing from the broker reaches the client any more (no confirm,
        no delivery), while what the client sends still goes through."""
        self._flowing.clear()

    def restore(self) -> None:
        self.refusing = False
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst, downstream in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, downstream))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if downstream:
                    await self._flowing.wait()
                    if dst.transport.is_closing():
                        break
                dst.write(data)
                await dst.drain()
        dst.transport.abort()
        self._writers.discard(dst)


async def proxied_broker(url: str, tls: ssl.SSLContext | None = None) -> tuple[Proxy, str]:
    """A proxy in front of the broker at ``url``, and the URL through it;
    with ``tls``, the proxy terminates TLS and the URL is ``amqps://``."""
    parts = urlsplit(url)
    proxy = await Proxy(parts.hostname or "127.0.0.1", parts.port or 5672, tls=tls).start()
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    netloc = f"{credentials}127.0.0.1:{proxy.port}"
    return proxy, urlunsplit(parts._replace(scheme="amqps" if tls else parts.scheme, netloc=netloc))
