"""A node on an ``amqps://`` broker whose certificate comes from a private
CA: trusted with ``tls_ca_pem``, refused without it. A TLS-terminating
proxy inside the test stands in for the broker; the CA and the certificate
are made for the test with ``openssl``."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

import cloudbus
from conftest import echo_service
from proxy import proxied_broker


def make_ca_and_certificate(into: Path) -> tuple[str, ssl.SSLContext]:
    """A CA (PEM) and a server context with a certificate it signed for 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=into, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=cloudbus test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", "/CN=broker")
    (into / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.pem", "-days", "1", "-extfile", "ext.cnf")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(into / "broker.pem", into / "broker.key")
    return (into / "ca.pem").read_text(), server


async def test_a_node_trusts_an_amqps_broker_of_a_private_ca_only_when_told(
    url: str, bus_name: str, tmp_path: Path
) -> None:
    ca_pem, server = make_ca_and_certificate(tmp_path)
    terminator, amqps = await proxied_broker(url, tls=server)
    try:
        async with cloudbus.Bus(amqps, bus_name, tls_ca_pem=ca_pem) as bus:
            await bus.register(echo_service("api"))
            reply = await bus.call("api", "api.Echo", {"text": "over TLS"}, node=bus.node_id)
            assert reply["text"] == "over TLS"

        with pytest.raises(cloudbus.Error) as raised:
            await cloudbus.connect(amqps, bus_name)
        assert raised.value.code == cloudbus.BROKER_UNAVAILABLE, raised.value
        assert "certificate" in str(raised.value).lower(), raised.value

        with pytest.raises(cloudbus.Error) as raised:
            cloudbus.Bus(amqps, bus_name, tls_ca_pem="not a certificate")
        assert raised.value.code == cloudbus.INVALID_ARGUMENT, raised.value
    finally:
        await terminator.close()
