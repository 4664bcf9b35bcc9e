#!/usr/bin/env python3
"""A foreign cloudbus node in Python, written from docs/wire-protocol.md only.

It joins a bus as a node of its own (its own node id, node queue and event
queue), and checks what a Rust node on that bus does, at the AMQP level:

  ping            cloudbus.Ping on the Rust node -> cloudbus.Pong
  echo            a request to the Rust test service `interop` -> success reply
  app_error       the same service failing -> failure reply with code, details, cause
  unknown_type    a type the service does not handle -> cloudbus.UNKNOWN_MESSAGE
  no_such_service mandatory publish to an unbound key -> basic.return 312 NO_ROUTE
  rust_pings_us   the Rust node calls cloudbus.Ping on *this* node, which answers
  event_from_rust an event the Rust node publishes reaches our event queue
  membership      cloudbus.node.discover -> the Rust node's heartbeat
  message         a plain message (cb-kind message, no reply_to)
  event_to_rust   an event we publish (checked by the Rust side)

The Rust side (cloudbus/tests/interop.rs) registers service `interop` with
interop.Echo, interop.PingMe, interop.PublishPlease and interop.Note.

Prints one JSON object per line ({"check": ..., "ok": ...}); the last line
is {"summary": ...}. Exits 0 when every check passed, 1 otherwise, 2 on bad
usage, 3 when pika is missing. Deletes the queues it declared.
"""

import argparse
import json
import os
import sys
import time
import traceback
import uuid

try:
    import pika
    from pika.exceptions import UnroutableError
except ImportError:
    print(
        json.dumps(
            {
                "check": "setup",
                "ok": False,
                "error": f"pika is not installed for {sys.executable}; "
                "run `python3 -m pip install pika`",
            }
        ),
        flush=True,
    )
    sys.exit(3)

CONTENT_TYPE = "application/json"
QUEUE_EXPIRES_MS = 60_000


def new_id():
    """A UUID as 32 lowercase hex digits (message and node ids)."""
    return uuid.uuid4().hex


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


class Node:
    """A foreign node: its own queues on the bus, a reply and event inbox."""

    def __init__(self, url, bus, timeout):
        self.bus = bus
        self.timeout = timeout
        self.me = new_id()
        self.p2p = f"{bus}.P2P"
        self.broadcast = f"{bus}.BROADCAST"
        self.node_queue = f"{bus}.message.cloudbus.{self.me}"
        self.event_queue = f"{bus}.event.{self.me}"
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        # Consuming, replies and events.
        self.ch = self.conn.channel()
        # Requests and plain messages: mandatory, with publisher confirms.
        self.confirmed = self.conn.channel()
        self.confirmed.confirm_delivery()
        self.replies = {}  # correlation_id -> (properties, body)
        self.events = []  # (routing_key, properties, body)
        self.served = []  # properties of the requests this node answered
        self.declared = []

    # -- topology (wire protocol §1) --------------------------------------

    def declare(self, patterns):
        for name, kind in ((self.p2p, "direct"), (self.broadcast, "topic")):
            self.ch.exchange_declare(name, kind, durable=True)
        args = {"x-expires": QUEUE_EXPIRES_MS}
        self.ch.queue_declare(self.node_queue, arguments=args)
        self.declared.append(self.node_queue)
        self.ch.queue_bind(self.node_queue, self.p2p, routing_key=f"cloudbus.{self.me}")
        self.ch.queue_declare(self.event_queue, arguments=args)
        self.declared.append(self.event_queue)
        for pattern in patterns:
            self.ch.queue_bind(self.event_queue, self.broadcast, routing_key=pattern)
        self.ch.basic_consume(self.node_queue, self._on_node_queue, auto_ack=True)
        self.ch.basic_consume(self.event_queue, self._on_event, auto_ack=True)

    def cleanup(self):
        for queue in self.declared:
            try:
                self.ch.queue_delete(queue)
            except Exception as error:  # keep deleting the others
                print(json.dumps({"cleanup": queue, "error": repr(error)}), flush=True)
        self.conn.close()

    # -- inbound ----------------------------------------------------------

    def _on_node_queue(self, _ch, _method, props, body):
        kind = (props.headers or {}).get("cb-kind")
        if kind == "reply":
            self.replies[props.correlation_id] = (props, body)
        elif kind == "request":
            self._serve(props, body)

    def _on_event(self, _ch, method, props, body):
        self.events.append((method.routing_key, props, body))

    def _serve(self, props, body):
        """The built-in cloudbus service of this node (§8), and §5 replies."""
        headers = props.headers or {}
        if props.type == "cloudbus.Ping":
            outcome = {
                "success": True,
                "reply": {"node": self.me, "services": ["cloudbus"], "version": "pika-interop"},
            }
            reply_type = "cloudbus.Pong"
        else:
            outcome = {
                "success": False,
                "error": {
                    "code": "cloudbus.UNKNOWN_MESSAGE",
                    "description": f"service `cloudbus` does not handle `{props.type}`",
                },
            }
            reply_type = "cloudbus.ErrorReply"
        self.served.append(props)
        if props.reply_to:
            self.ch.basic_publish(
                self.p2p,
                props.reply_to,
                json.dumps(outcome).encode(),
                self.properties("reply", reply_type, correlation_id=props.message_id),
            )

    def wait_for(self, what, ready):
        """Processes broker events until ready() gives a value, or fails."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = ready()
            if value is not None:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"timed out after {self.timeout}s waiting for {what}")
            # Returns as soon as a delivery is dispatched, or after `left`.
            self.conn.process_data_events(time_limit=left)

    # -- outbound ---------------------------------------------------------

    def properties(self, kind, type_name, headers=None, **extra):
        all_headers = {"cb-kind": kind, "cb-source": self.me}
        all_headers.update(headers or {})
        return pika.BasicProperties(
            message_id=new_id(),
            type=type_name,
            content_type=CONTENT_TYPE,
            timestamp=int(time.time()),
            headers=all_headers,
            **extra,
        )

    def send_request(self, key, type_name, body, headers=None, timeout_ms=10_000):
        """Publishes a request (§4, §12); returns its message_id. Raises
        UnroutableError when the broker returns it."""
        props = self.properties(
            "request",
            type_name,
            headers={"cb-timeout-ms": timeout_ms, **(headers or {})},
            reply_to=f"cloudbus.{self.me}",
            expiration=str(timeout_ms),
        )
        self.confirmed.basic_publish(
            self.p2p, key, json.dumps(body).encode(), props, mandatory=True
        )
        return props.message_id

    def call(self, key, type_name, body, headers=None):
        """A request and its reply: (request id, reply properties, reply body)."""
        request = self.send_request(key, type_name, body, headers)
        props, raw = self.wait_for(
            f"the reply to {type_name}", lambda: self.replies.pop(request, None)
        )
        return request, props, json.loads(raw)

    def publish(self, type_name, body):
        self.ch.basic_publish(
            self.broadcast, type_name, json.dumps(body).encode(), self.properties("event", type_name)
        )


def check_reply_props(props, request, rust, reply_type):
    headers = props.headers or {}
    expect(props.correlation_id == request, f"correlation_id {props.correlation_id!r} != {request!r}")
    expect(headers.get("cb-kind") == "reply", f"cb-kind {headers.get('cb-kind')!r}")
    expect(headers.get("cb-source") == rust, f"cb-source {headers.get('cb-source')!r} != {rust}")
    expect(props.type == reply_type, f"type {props.type!r} != {reply_type!r}")
    expect(props.content_type == CONTENT_TYPE, f"content_type {props.content_type!r}")
    expect(is_id(props.message_id) and props.message_id != request, f"message_id {props.message_id!r}")
    expect(props.reply_to is None and props.expiration is None, "a reply has no reply_to/expiration")
    expect(abs(props.timestamp - time.time()) < 300, f"timestamp {props.timestamp}")


def is_id(text):
    return isinstance(text, str) and len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CLOUDBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--bus", default=os.environ.get("CLOUDBUS_BUS"))
    parser.add_argument("--node", default=os.environ.get("CLOUDBUS_NODE"), help="the Rust node's id")
    parser.add_argument("--token", default=new_id(), help="carried by the event published to the Rust side")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each answer")
    args = parser.parse_args()
    if not args.bus or not args.node:
        parser.error("--bus and --node (or CLOUDBUS_BUS and CLOUDBUS_NODE) are required")
    rust = args.node

    node = Node(args.url, args.bus, args.timeout)
    results = []

    def report(check, ok, **fields):
        line = {"check": check, "ok": ok, **fields}
        results.append(line)
        print(json.dumps(line), flush=True)

    def run(check, fn):
        try:
            report(check, True, **(fn() or {}))
        except Failed as error:
            report(check, False, error=str(error))
        except Exception as error:  # an unexpected failure is a failed check too
            report(check, False, error=repr(error), trace=traceback.format_exc())

    report("node", True, node=node.me, bus=args.bus, rust=rust, token=args.token)
    try:
        node.declare(["interop.#", "cloudbus.node.heartbeat"])

        def ping():
            request, props, body = node.call(f"cloudbus.{rust}", "cloudbus.Ping", {})
            check_reply_props(props, request, rust, "cloudbus.Pong")
            expect(body.get("success") is True, f"body {body}")
            pong = body["reply"]
            expect(pong["node"] == rust, f"pong.node {pong['node']}")
            expect({"cloudbus", "interop"} <= set(pong["services"]), f"services {pong['services']}")
            expect(pong["services"] == sorted(pong["services"]), "services are sorted")
            expect(isinstance(pong["version"], str) and pong["version"], "version")
            return {"services": pong["services"], "version": pong["version"]}

        def echo():
            trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            request, props, body = node.call(
                f"interop.{rust}", "interop.Echo", {"text": "hello from python"}, {"traceparent": trace}
            )
            check_reply_props(props, request, rust, "interop.EchoReply")
            expected = {"text": "hello from python", "source": node.me, "traceparent": trace}
            expect(body == {"success": True, "reply": expected}, f"body {body}")
            return {}

        def app_error():
            request, props, body = node.call(f"interop.{rust}", "interop.Echo", {"text": "fail"})
            check_reply_props(props, request, rust, "cloudbus.ErrorReply")
            expect(body.get("success") is False and "reply" not in body, f"body {body}")
            error = body["error"]
            expect(error["code"] == "interop.REFUSED", f"code {error['code']}")
            expect(isinstance(error["description"], str) and error["description"], "description")
            expect(error["details"] == {"text": "fail"}, f"details {error.get('details')}")
            expect(error["cause"]["code"] == "interop.CAUSE", f"cause {error.get('cause')}")
            expect("details" not in error["cause"] and "cause" not in error["cause"], "empty parts are left out")
            return {"code": error["code"]}

        def unknown_type():
            request, props, body = node.call(f"interop.{rust}", "interop.Nonsense", {})
            check_reply_props(props, request, rust, "cloudbus.ErrorReply")
            expect(body.get("success") is False, f"body {body}")
            expect(body["error"]["code"] == "cloudbus.UNKNOWN_MESSAGE", f"code {body['error']['code']}")
            return {"code": body["error"]["code"]}

        def no_such_service():
            returned = []
            for key in (f"nosuch.{rust}", f"interop.{new_id()}"):
                try:
                    node.send_request(key, "nosuch.Hello", {})
                except UnroutableError as error:
                    method = error.messages[0].method
                    expect(method.reply_code == 312, f"reply_code {method.reply_code}")
                    expect(method.reply_text == "NO_ROUTE", f"reply_text {method.reply_text}")
                    expect(method.routing_key == key, f"routing_key {method.routing_key}")
                    returned.append(key)
                else:
                    raise Failed(f"the broker did not return the request for {key}")
            return {"returned": returned, "means": "cloudbus.NO_SUCH_SERVICE"}

        def rust_pings_us():
            # The Rust handler pings this node before it replies.
            request, props, body = node.call(f"interop.{rust}", "interop.PingMe", {})
            check_reply_props(props, request, rust, "interop.PingedYou")
            pings = [p for p in node.served if p.type == "cloudbus.Ping"]
            expect(len(pings) == 1, f"{len(pings)} pings served")
            ping = pings[0]
            headers = ping.headers or {}
            expect(headers.get("cb-kind") == "request", f"cb-kind {headers.get('cb-kind')}")
            expect(headers.get("cb-source") == rust, f"cb-source {headers.get('cb-source')}")
            expect(ping.reply_to == f"cloudbus.{rust}", f"reply_to {ping.reply_to}")
            expect(ping.content_type == CONTENT_TYPE and is_id(ping.message_id), "properties")
            timeout_ms = headers.get("cb-timeout-ms")
            expect(isinstance(timeout_ms, int) and timeout_ms > 0, f"cb-timeout-ms {timeout_ms!r}")
            expect(
                ping.expiration is not None and 0 < int(ping.expiration) <= timeout_ms,
                f"expiration {ping.expiration!r}",
            )
            expect(
                body == {"success": True, "reply": {"node": node.me, "services": ["cloudbus"], "version": "pika-interop"}},
                f"body {body}",
            )
            return {}

        def event_from_rust():
            token = new_id()
            request, props, body = node.call(f"interop.{rust}", "interop.PublishPlease", {"token": token})
            check_reply_props(props, request, rust, "interop.Published")

            def arrived():
                for key, eprops, ebody in node.events:
                    if eprops.type == "interop.FromRust" and json.loads(ebody).get("token") == token:
                        return key, eprops
                return None

            key, eprops = node.wait_for("the event interop.FromRust", arrived)
            headers = eprops.headers or {}
            expect(key == "interop.FromRust", f"routing key {key}")
            expect(headers.get("cb-kind") == "event", f"cb-kind {headers.get('cb-kind')}")
            expect(headers.get("cb-source") == rust, f"cb-source {headers.get('cb-source')}")
            expect(eprops.content_type == CONTENT_TYPE and is_id(eprops.message_id), "properties")
            expect(eprops.reply_to is None and eprops.correlation_id is None, "an event has no reply_to")
            return {}

        def membership():
            node.publish("cloudbus.node.discover", {"node": node.me})

            def heartbeat():
                for key, eprops, ebody in node.events:
                    if key == "cloudbus.node.heartbeat" and (eprops.headers or {}).get("cb-source") == rust:
                        beat = json.loads(ebody)
                        if "interop" in beat.get("services", []):
                            return beat
                return None

            beat = node.wait_for("a heartbeat of the Rust node", heartbeat)
            expect(beat["node"] == rust, f"node {beat['node']}")
            required = {"node", "services", "interval_ms", "started_at"}
            expect(required <= set(beat) <= required | {"broker"}, f"fields {sorted(beat)}")
            # The broker it is connected to, as host:port/vhost, never credentials.
            expect("@" not in beat.get("broker", "") and "guest" not in beat.get("broker", ""), "broker")
            expect(isinstance(beat["interval_ms"], int) and beat["interval_ms"] > 0, "interval_ms")
            expect(abs(beat["started_at"] - time.time()) < 3600, f"started_at {beat['started_at']}")
            return {"interval_ms": beat["interval_ms"]}

        def message():
            props = node.properties("message", "interop.Note")
            node.confirmed.basic_publish(
                node.p2p, f"interop.{rust}", json.dumps({"text": args.token}).encode(), props, mandatory=True
            )
            return {}

        def event_to_rust():
            node.publish("interop.FromPython", {"token": args.token})
            return {"token": args.token}

        for check, fn in [
            ("ping", ping),
            ("echo", echo),
            ("app_error", app_error),
            ("unknown_type", unknown_type),
            ("no_such_service", no_such_service),
            ("rust_pings_us", rust_pings_us),
            ("event_from_rust", event_from_rust),
            ("membership", membership),
            ("message", message),
            ("event_to_rust", event_to_rust),
        ]:
            run(check, fn)
    finally:
        node.cleanup()

    failed = [r["check"] for r in results if not r["ok"]]
    print(json.dumps({"summary": {"passed": len(results) - len(failed), "failed": failed}}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
