"""The deployment broker's certificates: a CA of its own and the broker's server certificate.

Devices verify the broker against this CA alone (they are given ``ca.crt``), so nobody
needs a public CA or a DNS name to run a deployment, and a broker with another certificate
cannot stand in for it. Keys are ECDSA P-256: small certificates and cheap handshakes, and
the curve the TLS stacks of the boards (mbedTLS on an ESP32) and of every CPython support.
The server certificate names every host name and IP address devices use to reach the
broker (its SAN: TLS clients check the name they connected to against it), and always
``localhost``, 127.0.0.1 and ::1 so the host's own services and tests connect by loopback.
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 3650
_DNS_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def check_host(name):
    """``name`` as it goes into the certificate (an IP address normalised, a DNS name in
    lower case), or ``ValueError`` naming it."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name.lower().rstrip(".")
    labels = host.split(".")
    if not host or len(host) > 253 or not set(host) <= _DNS_CHARS or \
            any(not 0 < len(label) < 64 or label.startswith("-") or label.endswith("-") for label in labels):
        raise ValueError("host %r: expected a DNS name (letters, digits, '-', '.') or an IP address" % (name,))
    return host


def _san(hosts):
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plugpay deployment"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(ca):
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _validity(builder, now):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=VALID_DAYS))


def new_ca(now=None):
    """``(key, certificate)`` of a fresh self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("plugpay broker CA")
    cert = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_certificate(ca_key, ca_cert, names, now=None):
    """``(key, certificate)`` of a server named ``names`` (as ``check_host`` gives them), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def issue(hosts, now=None):
    """A fresh CA and a server certificate for ``hosts`` (checked; the loopback names are
    added) signed by it: ``{"ca.key", "ca.crt", "server.key", "server.crt": PEM bytes,
    "hosts": the names in the SAN, "not_after": datetime}``."""
    names = list(dict.fromkeys([check_host(h) for h in hosts] + list(LOOPBACK)))
    ca_key, ca_cert = new_ca(now)
    server_key, server_cert = server_certificate(ca_key, ca_cert, names, now)
    return {"ca.key": pem_key(ca_key), "ca.crt": pem_cert(ca_cert), "server.key": pem_key(server_key),
            "server.crt": pem_cert(server_cert), "hosts": names, "not_after": server_cert.not_valid_after_utc}
