"""The wire format without a broker: bodies, replies, errors, decoding, patterns."""

from types import SimpleNamespace

import pytest

import cloudbus
from cloudbus import wire
from cloudbus.subscription import topic_matches

ME = "0" * 31 + "1"


def delivery(**overrides: object) -> SimpleNamespace:
    fields = {
        "message_id": "5f0c" + "0" * 28,
        "message_type": "vm.StartVm",
        "content_type": "application/json; charset=utf-8",
        "reply_to": f"cloudbus.{ME}",
        "correlation_id": None,
        "headers": {"cb-kind": "request", "cb-source": ME, "cb-timeout-ms": 5000, "ctx-user": "ann", "n": 7},
        "body": b'{"uuid": "x"}',
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_a_request_is_read_with_its_application_headers() -> None:
    inbound = wire.decode(delivery(), delivery().body)
    assert (inbound.kind, inbound.type, inbound.source, inbound.timeout_ms) == ("request", "vm.StartVm", ME, 5000)
    assert inbound.headers == {"ctx-user": "ann", "n": "7"}
    assert wire.inherited(inbound.headers) == {"ctx-user": "ann"}


@pytest.mark.parametrize(
    "overrides, answerable",
    [
        ({"content_type": "text/plain"}, True),
        ({"message_type": ""}, True),
        ({"headers": {"cb-kind": "request"}}, True),  # no cb-source
        ({"headers": {"cb-kind": "request", "cb-source": ME, "cb-timeout-ms": -1}}, True),
        ({"body": b" " * (wire.MAX_BODY + 1)}, True),
        ({"message_id": None}, False),
        ({"reply_to": None, "content_type": "text/plain"}, False),
        ({"headers": {"cb-kind": "message", "cb-source": ME}, "content_type": "text/plain"}, False),
    ],
)
def test_bad_deliveries_are_refused_and_answered_only_when_possible(overrides: dict, answerable: bool) -> None:
    with pytest.raises(wire.Malformed) as bad:
        message = delivery(**overrides)
        wire.decode(message, message.body)
    assert bad.value.answerable is answerable


def test_replies_round_trip_success_and_failure() -> None:
    ok = wire.reply("a" * 32, "vm.Started", {"x": 1}, source=ME)
    assert ok.properties.correlation_id == "a" * 32 and ok.headers["cb-kind"] == "reply"
    assert wire.read_reply(ok.body) == {"x": 1}
    error = cloudbus.Error("vm.NOT_FOUND", "gone", details={"uuid": "x"}, cause=cloudbus.Error("db.DOWN"))
    failed = wire.reply("a" * 32, "", error=error, source=ME)
    assert failed.type == "cloudbus.ErrorReply"
    with pytest.raises(cloudbus.Error) as raised:
        wire.read_reply(failed.body)
    assert raised.value.to_json() == {
        "code": "vm.NOT_FOUND",
        "description": "gone",
        "details": {"uuid": "x"},
        "cause": {"code": "db.DOWN", "description": ""},
    }


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"success": true}', b"nope", b'{"success": false, "error": {}}'])
def test_a_reply_body_of_another_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(cloudbus.Error) as raised:
        wire.read_reply(body)
    assert raised.value.code == cloudbus.MALFORMED


def test_a_request_carries_timeout_and_expiration() -> None:
    message = wire.request("vm.StartVm", b"{}", source=ME, reply_to=f"cloudbus.{ME}", timeout_ms=1500)
    assert message.headers["cb-timeout-ms"] == 1500 and message.properties.expiration == "1500"
    assert len(message.message_id) == 32 and message.properties.content_type == "application/json"
    huge = wire.request("vm.StartVm", b"{}", source=ME, reply_to="r", timeout_ms=2**40)
    assert huge.properties.expiration is None


@pytest.mark.parametrize(
    "pattern, type_name, matches",
    [
        ("vm.*", "vm.Started", True),
        ("vm.*", "vm.a.b", False),
        ("vm.#", "vm.a.b", True),
        ("vm.#", "vm", True),
        ("#", "anything.at.all", True),
        ("*.done", "job.done", True),
        ("py.*.done", "py.job.step.done", False),
        ("a.#.z", "a.z", True),
    ],
)
def test_topic_patterns_match_as_amqp_does(pattern: str, type_name: str, matches: bool) -> None:
    assert topic_matches(pattern, type_name) is matches


@pytest.mark.parametrize("bad", ["", "vm..x", "vm.*x", "a b"])
def test_bad_patterns_are_refused(bad: str) -> None:
    from cloudbus.address import check_pattern

    with pytest.raises(cloudbus.Error):
        check_pattern(bad)
