"""cloudbus for Python: join a cloudbus bus as a full node.

Call Rust (or Python) services, serve services of your own, publish and
subscribe to events, join the cluster as a member or watch it as an
observer, and route by the same MD5 ring as the Rust nodes: everything in
``docs/wire-protocol.md``, on asyncio and aio-pika.

    import cloudbus

    async with cloudbus.Bus("amqp://guest:guest@127.0.0.1:5672/%2f", "prod") as bus:
        vm = await bus.call("vm", "vm.CreateVm", {"name": "web-1", "cpus": 2,
                                                  "memory_gb": 4, "disk_gb": 20})
"""

__version__ = "0.1.0"

from .address import DEFAULT_BUS, new_id  # noqa: E402
from .bus import DEFAULT_URL, Bus, connect  # noqa: E402
from .errors import (  # noqa: E402
    BROKER_UNAVAILABLE,
    CANCELLED,
    INTERNAL,
    INVALID_ARGUMENT,
    MALFORMED,
    NO_REPLY,
    NO_SUCH_SERVICE,
    NODE_UNAVAILABLE,
    REJECTED,
    SHUTTING_DOWN,
    TIMEOUT,
    UNKNOWN_MESSAGE,
    CloudbusError,
)
from .membership import ClusterView, Member  # noqa: E402
from .ring import HashRing, key_hash  # noqa: E402
from .service import Context, Service  # noqa: E402
from .subscription import Event, Subscription  # noqa: E402

#: Short alias: ``except cloudbus.Error as e: e.code``.
Error = CloudbusError

__all__ = [
    "BROKER_UNAVAILABLE",
    "CANCELLED",
    "DEFAULT_BUS",
    "DEFAULT_URL",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "MALFORMED",
    "NODE_UNAVAILABLE",
    "NO_REPLY",
    "NO_SUCH_SERVICE",
    "REJECTED",
    "SHUTTING_DOWN",
    "TIMEOUT",
    "UNKNOWN_MESSAGE",
    "Bus",
    "CloudbusError",
    "ClusterView",
    "Context",
    "Error",
    "Event",
    "HashRing",
    "Member",
    "Service",
    "Subscription",
    "connect",
    "key_hash",
    "new_id",
]
