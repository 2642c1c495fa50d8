"""The broker options, the same on every command that connects to MQTT.

* ``--broker URL``: ``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (TLS, 8883).
* ``--ca FILE``: the CA certificate the broker's certificate must chain to, for
  ``mqtts://`` (a deployment broker's ``ca.crt``). Without it, the file named by the
  environment variable ``PLUGPAY_BROKER_CA``; without that, the system's CAs. The broker
  is always verified, name included; there is no way to skip it. ``--ca`` with an
  ``mqtt://`` URL is refused (a plain connection verifies nothing); the environment
  variable is ignored for one, so it can stay set on a machine that also runs the demo.
* The gateway's login, for the commands that run a gateway (``ledger up``, ``demo``,
  ``hil``): ``--gateway-user`` (default ``gateway``) and ``--gateway-password-file``: the
  password comes from a file, never from the command line, where every user of the
  machine could read it in the process list. ``demo`` and ``hil`` also take
  ``--gateway-broker URL``: where their gateway connects when it is not ``--broker``
  (a deployment broker's gateway listener).
"""
import os

from plugpay.host import broker
from plugpay.host.deployment import GATEWAY_USER
from plugpay.tools.errors import UsageError

CA_ENV = "PLUGPAY_BROKER_CA"


def add_broker(parser, help, required=False, default=None):
    """``--broker`` (``help`` says whose broker it is) and ``--ca``."""
    parser.add_argument("--broker", metavar="URL", required=required, default=default, help=help)
    parser.add_argument("--ca", metavar="FILE",
                        help="for an mqtts:// broker: the CA certificate its certificate must chain to (a "
                        "deployment's ca.crt; default: $%s, else the system's CAs)" % CA_ENV)


def add_gateway_login(parser, own_url=False):
    """The gateway's login on a deployment broker; ``own_url``: ``--gateway-broker`` too."""
    if own_url:
        parser.add_argument("--gateway-broker", metavar="URL",
                            help="where the gateway connects, if not --broker: a deployment broker's gateway "
                            "listener (mqtts://127.0.0.1:8884), with --gateway-password-file")
    parser.add_argument("--gateway-user", metavar="NAME",
                        help="the gateway's MQTT user (default %s, what plugpay broker init creates)" % GATEWAY_USER)
    parser.add_argument("--gateway-password-file", metavar="FILE",
                        help="file holding the gateway's MQTT password (a deployment's gateway.password)")


def ca_file(args, url):
    """The CA file for ``url``: ``--ca``, else ``$PLUGPAY_BROKER_CA`` for an mqtts:// URL."""
    if args.ca:
        return args.ca
    if url.startswith("mqtts:"):
        return os.environ.get(CA_ENV) or None
    return None


def endpoint(args):
    """The ``host.broker.Endpoint`` of ``--broker`` with the CA of the options;
    ``UsageError`` naming the URL, the file or the option."""
    return _endpoint(args.broker, ca_file(args, args.broker))


def gateway_endpoint(args):
    """The gateway's ``Endpoint`` at ``--broker`` (``ledger up``), with its login if given."""
    return _endpoint(args.broker, ca_file(args, args.broker), gateway_login(args))


def _endpoint(url, ca, login=None):
    try:
        return broker.Endpoint(url, ca, login)
    except ValueError as e:
        raise UsageError(str(e))


def host_stack(args):
    """The broker keywords of ``host.stack.HostStack`` from ``--broker``, ``--ca`` and the
    gateway's options (``demo``, ``hil``)."""
    if not args.broker:
        given = [name for name, value in (("--ca", args.ca), ("--gateway-broker", args.gateway_broker),
                                          ("--gateway-password-file", args.gateway_password_file)) if value]
        if given:
            raise UsageError("%s: only with --broker (the embedded broker needs none)" % ", ".join(given))
        return {}
    endpoint(args)  # a bad URL or CA file is refused here, before the host stack starts anything
    if args.gateway_broker:
        _endpoint(args.gateway_broker, ca_file(args, args.broker))
    return {"broker_url": args.broker, "broker_ca": ca_file(args, args.broker), "gateway_url": args.gateway_broker,
            "gateway_login": gateway_login(args)}


def gateway_login(args):
    """``(user, password)`` from the options, or None when no password file is given."""
    if not args.gateway_password_file:
        if args.gateway_user:
            raise UsageError("--gateway-user %s: give its password with --gateway-password-file" % args.gateway_user)
        return None
    return args.gateway_user or GATEWAY_USER, read_password(args.gateway_password_file)


def read_password(path):
    """The first line of ``path``; ``UsageError`` naming the file if unreadable or empty."""
    try:
        with open(path) as f:
            password = f.readline().strip()
    except (OSError, UnicodeError) as e:
        raise UsageError("password file %s: %s" % (path, getattr(e, "strerror", None) or e))
    if not password:
        raise UsageError("password file %s: empty" % path)
    return password
