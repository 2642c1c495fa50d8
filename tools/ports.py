"""The ports a command will listen on, checked before anything starts: a port another
process holds is one line naming the port, the address and what it was for (``port 1883
on 127.0.0.1 (the MQTT broker, --mqtt-port) is in use``), exit code 4, and nothing is left
running or half-written. The check binds as the servers do (``SO_REUSEADDR``, every
address the host name resolves to), so it fails exactly where they would."""
import errno
import socket

from plugpay.tools.errors import PortInUse, UsageError


def check_free(host, port, what):
    """Return if a server could listen on ``host``:``port`` now; else ``PortInUse`` (taken,
    or not allowed) or ``UsageError`` (``host`` is no address of this machine), naming
    ``what`` the port is for."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError("%s: cannot resolve host %r: %s" % (what, host, e.strerror))
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise PortInUse("port %d on %s (%s) is in use: stop what holds it or choose another port"
                                    % (port, address[0], what))
                if e.errno == errno.EACCES:
                    raise PortInUse("port %d on %s (%s): not allowed to listen there (ports below 1024 need "
                                    "root): choose another port" % (port, address[0], what))
                if e.errno == errno.EADDRNOTAVAIL:
                    raise UsageError("%s: %s is not an address of this machine" % (what, address[0]))
                raise


def check_all(wanted):
    """``check_free`` for each ``(host, port, what)`` of ``wanted``; the same port twice is
    refused too, naming both uses."""
    seen = {}
    for host, port, what in wanted:
        if (host, port) in seen:
            raise UsageError("port %d on %s is given twice: %s and %s" % (port, host, seen[(host, port)], what))
        seen[(host, port)] = what
        check_free(host, port, what)
