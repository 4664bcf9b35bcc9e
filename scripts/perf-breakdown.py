#!/usr/bin/env python3
"""Buckets the samples of `perf script` (recorded with call graphs) into
where a round trip's CPU goes: encode, decode, the AMQP client (amqprs;
lapin for older recordings), tokio scheduling, dispatch, reply matching,
allocator, kernel. Used for docs/benchmarks.md.

    perf record -F 499 --call-graph dwarf,16384 -p <bench pid> -- sleep 3
    perf script | scripts/perf-breakdown.py

Multiply each share by the process's CPU time per round trip (the bench's
cpu_s over its round trips) to get µs per round trip.
"""
import re
import sys
from collections import Counter

# Checked from the leaf up; the first frame that matches names the bucket.
USER = [
    ("encode (AMQP properties, frames)", r"codec::properties|amq_protocol::frame::generation|amq_protocol::types::generation|lapin::buffer|gen_frame|amqp_serde::ser|serialize_frame|serialize_content|serialize"),
    ("decode (AMQP frames, properties)", r"codec::decode|amq_protocol::frame::parsing|amq_protocol::types::parsing|nom::|amqp_serde::de|Frame::decode|BufIoReader::decode|Deserialize"),
    ("JSON (serde_json)", r"serde_json"),
    ("reply matching", r"on_reply|bus::pending|decode_reply"),
    ("handler dispatch", r"on_service_message|ServiceRuntime|service::route|service::reply|Responder|finish_request"),
    ("allocator", r"malloc|cfree|_int_free|realloc|unlink_chunk|\bmi_|_mi_|__rust_alloc|__rust_dealloc"),
    ("AMQP client (amqprs or lapin: channels, dispatch, consumers)", r"amqprs::|lapin::|flume::|async_rs|event_listener"),
    ("bus (envelopes, calls, routing)", r"cloudbus::"),
    ("tokio scheduling", r"tokio::"),
]
KERNEL = [
    ("kernel: wakeups and context switches (futex)", r"futex|schedule|finish_task_switch|try_to_wake_up"),
    ("kernel: socket I/O and epoll", r"tcp_|sock_|epoll|__sys_sendto|__sys_recvfrom|ksys_write|ksys_read|skb|ip_"),
]

def bucket(frames):
    """frames: leaf first, as (symbol, is_kernel)."""
    if frames and frames[0][1]:
        for sym, _ in frames:
            for name, pat in KERNEL:
                if re.search(pat, sym):
                    return name
        return "kernel: other"
    for sym, kernel in frames:
        if kernel:
            continue
        for name, pat in USER:
            if re.search(pat, sym):
                return name
    return "other user space"

def samples(lines):
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                sym = parts[1]
                frames.append((sym, "kernel.kallsyms" in sym or "[kernel" in sym))
    if frames:
        yield frames

counts = Counter(bucket(f) for f in samples(sys.stdin))
total = sum(counts.values()) or 1
for name, n in counts.most_common():
    print(f"{n / total * 100:5.1f}%  {name}")
print(f"({total} samples)")
