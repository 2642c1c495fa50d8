"""A TLS context that verifies the broker, built the same way on MicroPython and CPython.

Why not the platform's defaults: MicroPython's ``ssl.SSLContext(PROTOCOL_TLS_CLIENT)``
starts with ``CERT_NONE`` (it would accept any certificate), and the mbedtls of the unix
port parses no PEM, so the CA file is read here and handed over in DER. A device trusts
its deployment's CA and nothing else (``ca.crt`` copied beside its wallet): there is no
system store to fall back on. ``check`` refuses a context that would not verify, so no
caller gets an unverified ``mqtts://`` connection by passing the wrong one.
"""
_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


def certificates(pem):
    """The DER bytes of every certificate in the PEM text ``pem``; ValueError if none."""
    import binascii

    found = []
    rest = pem
    while _BEGIN in rest:
        body, sep, rest = rest.split(_BEGIN, 1)[1].partition(_END)
        if not sep:
            raise ValueError("a certificate without its END line")
        try:
            found.append(binascii.a2b_base64("".join(body.split())))
        except ValueError as e:
            raise ValueError("a certificate that is not base64 (%s)" % e)
    if not found:
        raise ValueError("no PEM certificate in it")
    return found


def context(ca_file):
    """An ``ssl.SSLContext`` that accepts only a broker whose certificate chains to a CA
    in ``ca_file`` (PEM) and names the host connected to. ValueError naming the file."""
    import ssl

    try:
        with open(ca_file) as f:
            pem = f.read()
        ders = certificates(pem)
    except (OSError, ValueError) as e:  # a UnicodeError too: a binary file
        raise ValueError("CA file %s: %s" % (ca_file, e))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.verify_mode = ssl.CERT_REQUIRED
    for der in ders:
        try:
            tls.load_verify_locations(cadata=der)
        except (OSError, ValueError) as e:
            raise ValueError("CA file %s: a certificate this platform cannot load (%s)" % (ca_file, e))
    return tls


def check(tls):
    """Refuse (ValueError) a context that would not verify the broker's certificate and
    host name: MicroPython's default ``CERT_NONE``, or CPython's ``check_hostname`` off."""
    import ssl

    if getattr(tls, "verify_mode", None) != ssl.CERT_REQUIRED or getattr(tls, "check_hostname", True) is False:
        raise ValueError("the TLS context does not verify the broker (verify_mode CERT_REQUIRED and the "
                         "host name): build it with mqtt_tls.context(ca_file)")
