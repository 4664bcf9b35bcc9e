"""nameko beside the package (run by bench.py from a venv with nameko installed).

    target/nameko-venv/bin/python clients/python/bench_nameko.py URL IN_FLIGHT SECS

Starts a nameko service with one RPC method in a child process, keeps
IN_FLIGHT ``call_async`` requests outstanding from one ``ClusterRpcProxy``
for SECS seconds (as ``shared/anchors/nameko-rpc`` does), prints one JSON
line, stops the service and deletes its queue.
"""

import json
import subprocess
import sys
import time
import warnings
from collections import deque
from pathlib import Path

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from nameko.rpc import rpc  # noqa: E402

SERVICE = "cloudbus_bench"


class BenchService:
    name = SERVICE

    @rpc
    def get_capacity(self, body):
        return {"primary_storage": body["primary_storage"], "total_gb": 1000, "available_gb": 1000}


def main() -> None:
    from kombu import Connection
    from nameko.standalone.rpc import ClusterRpcProxy

    url, in_flight, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    broker = url[: -len("%2f")] if url.endswith("/%2f") else url
    service = subprocess.Popen(
        [str(Path(sys.executable).parent / "nameko"), "run", "--broker", broker, "bench_nameko:BenchService"],
        cwd=Path(__file__).resolve().parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = ClusterRpcProxy({"AMQP_URI": broker})
    try:
        with proxy as cluster:
            svc = getattr(cluster, SERVICE)
            body = {"primary_storage": "ps-1"}
            ready_by = time.monotonic() + 30
            while True:  # the service declares its queue when it starts
                try:
                    svc.get_capacity.call_async(body).result()
                    break
                except Exception:
                    if time.monotonic() > ready_by or service.poll() is not None:
                        raise
                    time.sleep(0.1)
            latencies = []
            window = deque((time.monotonic(), svc.get_capacity.call_async(body)) for _ in range(in_flight))
            deadline = time.monotonic() + secs
            while window:
                sent, reply = window.popleft()
                reply.result()
                done = time.monotonic()
                if done > deadline:
                    for _, rest in window:
                        rest.result()
                    break
                latencies.append(done - sent)
                window.append((time.monotonic(), svc.get_capacity.call_async(body)))
    finally:
        service.terminate()
        service.wait(30)
        with Connection(broker) as conn:  # nameko leaves these for 5 min
            conn.default_channel.queue_delete(f"rpc-{SERVICE}")
            conn.default_channel.queue_delete(proxy._reply_listener.queue.name)
    latencies.sort()

    def at(p: float) -> int:
        return round(latencies[min(len(latencies) - 1, round((len(latencies) - 1) * p))] * 1e6) if latencies else 0

    print(json.dumps({"round_trips": len(latencies), "rt_per_s": len(latencies) / secs, "p50_us": at(0.5), "p99_us": at(0.99)}))


if __name__ == "__main__":
    main()
