"""The device's TLS context and socket options on the unix port, the one with ``ssl`` and
sockets (the broker tests in tests/test_device_mqtt_unix.py connect with them)."""
import socket
import ssl

from plugpay.firmware import mqtt_tls
from plugpay.firmware.mqtt import Mqtt, nodelay
from plugpay.protocol.port import sha256

PORTS = ("unix",)

CA = """-----BEGIN CERTIFICATE-----
MIIBujCCAV+gAwIBAgIUHs6oHZFap54Sf4n7FobKvvQ+fh8wCgYIKoZIzj0EAwIw
OTEbMBkGA1UECgwScGx1Z3BheSBkZXBsb3ltZW50MRowGAYDVQQDDBFwbHVncGF5
IGJyb2tlciBDQTAeFw0yNjEyMDYxODU2MzJaFw0zNjEyMDMxOTAxMzJaMDkxGzAZ
BgNVBAoMEnBsdWdwYXkgZGVwbG95bWVudDEaMBgGA1UEAwwRcGx1Z3BheSBicm9r
ZXIgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATkcej/myouKMaHHf9oS3BW
rDDihrZwJjl2VadIT6I22aUPwjWmiUznAh5/b+4jUCAosoXGgHoavctWHocfaMKx
o0UwQzASBgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4E
FgQU+/Tku6q0sX3akzlHV2o/HKGkCMAwCgYIKoZIzj0EAwIDSQAwRgIhANIFwxW5
FgRQ8vmgozvcOj29yjq+blP7V8COhKQtQejbAiEA8C7SM3JTJKb3CRDhUMMEPtia
Ghj9LfaowTrAysmT5ZY=
-----END CERTIFICATE-----
"""
CA_DER_SHA256 = "581c7c46b0bbeb5e0f8706e9eaee3aa73278ae995e42827c68001f97be18c8d1"


def test_the_port_takes_tcp_nodelay():
    sock = socket.socket()
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: nodelay() would swallow a refusal
        nodelay(sock)
    finally:
        sock.close()


def test_a_pem_ca_file_becomes_a_context_that_verifies():
    (der,) = mqtt_tls.certificates("a comment line\n" + CA)
    assert len(der) == 446 and sha256(der).hex() == CA_DER_SHA256
    with open("ca.crt", "w") as f:
        f.write(CA)
    context = mqtt_tls.context("ca.crt")
    assert context.verify_mode == ssl.CERT_REQUIRED
    Mqtt("broker.test", 8883, tls=context)  # accepted


def test_a_context_that_would_not_verify_is_refused():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_NONE
    try:
        Mqtt("broker.test", 8883, tls=context)
        raise AssertionError("an unverified context was accepted")
    except ValueError as e:
        assert "does not verify the broker" in str(e)
    for text, says in (("", "no PEM certificate"), (CA[:-30], "without its END line")):
        try:
            mqtt_tls.certificates(text)
            raise AssertionError("accepted %r" % text)
        except ValueError as e:
            assert says in str(e), str(e)
    try:
        mqtt_tls.context("no-such-ca.crt")
        raise AssertionError("a missing CA file was accepted")
    except ValueError as e:
        assert str(e).startswith("CA file no-such-ca.crt: "), str(e)
