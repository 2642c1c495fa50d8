"""A deployment broker's directory: Mosquitto with TLS and topic ACLs, written once.

Two listeners (``per_listener_settings true``, so each has its own login and ACL):

* devices: TLS on ``port`` (8883), anonymous. A device presents no identity to the broker:
  a per-device login would let the broker's operator tie every session of a device
  together. What a connection may touch follows from its MQTT client id (``%c``) and user
  name (``%u``) instead (``DEVICE_ACL``): its own request and reply topics, and the link
  topics of the one session whose id (hex) is its user name. That id is a secret only the
  two parties of the session derive, so nobody else can open that lane.
* gateway (and the operator): TLS on ``gateway_port`` (8884), bound to loopback by default,
  user ``gateway`` with a random password, allowed ``plugpay/#``. TLS here too, although
  loopback traffic is out of reach of other machines: the operator may bind it to a LAN
  address for a gateway on another machine, and the password must not cross a network in
  clear then; the cost is one handshake per gateway connection.

``set_tcp_nodelay true``: without it every hop waits ~44 ms for a delayed ACK.
``init`` refuses to write into a directory that already holds a deployment.
"""
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import pwd

DEVICE_PORT = 8883
GATEWAY_PORT = 8884
GATEWAY_USER = "gateway"
# MQTT access of an anonymous device connection: (access, topic pattern). The requests
# and replies are ``protocol.topics``' (client id = the connection's MQTT client id,
# which ``firmware.gateway_client`` uses by default); ``host/sealed`` carries what must
# stay end-to-end encrypted (RA registration, faucet).
DEVICE_ACL = (
    ("write", "plugpay/ledger/submit/%c"),
    ("write", "plugpay/ledger/query/%c"),
    ("write", "plugpay/host/sealed/%c"),
    ("read", "plugpay/ledger/result/%c"),
    ("read", "plugpay/host/sealed-reply/%c"),
    ("readwrite", "plugpay/link/%u/#"),
)
FILES = (  # name, mode, what it is (printed by init)
    ("ca.crt", 0o644, "the deployment's CA certificate: give it to every device and host service"),
    ("ca.key", 0o600, "the CA's private key: signs server certificates (when the host names change); the broker "
               "does not need it: keep it offline"),
    ("server.crt", 0o644, "the broker's certificate, signed by the CA"),
    ("server.key", 0o600, "the broker's private key"),
    ("gateway.password", 0o600, "the gateway's password (plugpay ledger up --gateway-password-file)"),
    ("passwd", 0o600, "Mosquitto's password file: the gateway's login, hashed"),
    ("acl-devices", 0o644, "ACL of the device listener: each connection its own topics only"),
    ("acl-gateway", 0o644, "ACL of the gateway listener: user gateway may read and write plugpay/#"),
    ("mosquitto.conf", 0o644, "Mosquitto's configuration: both listeners (plugpay broker run --dir DIR)"),
    ("deployment.json", 0o644, "what init wrote: ports, host names, the gateway user"),
)
PBKDF2_ITERATIONS = 101  # Mosquitto's own default; the password is 256 random bits, not a word to guess


class DeploymentError(ValueError):
    """A deployment directory that cannot be written or read; the text names the file."""


def password_line(user, password, salt=None):
    """A line of Mosquitto 2's password file (``mosquitto_passwd``'s ``$7$`` format:
    PBKDF2-HMAC-SHA512 with a 12-byte salt, base64)."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return "%s:$7$%d$%s$%s\n" % (user, PBKDF2_ITERATIONS, base64.b64encode(salt).decode(),
                                 base64.b64encode(digest).decode())


def device_acl():
    return ("# plugpay devices: anonymous; %c is the MQTT client id, %u the user name (a link session's id)\n"
            + "".join("pattern %s %s\n" % rule for rule in DEVICE_ACL))


def gateway_acl():
    return "# plugpay gateway and operator\nuser %s\ntopic readwrite plugpay/#\n" % GATEWAY_USER


def mosquitto_conf(directory, owner, port, bind, gateway_port, gateway_bind):
    def path(name):
        return os.path.join(directory, name)

    tls = "certfile %s\nkeyfile %s\n" % (path("server.crt"), path("server.key"))
    return (
        "# plugpay deployment broker, written by `plugpay broker init`; run it with\n"
        "#   plugpay broker run --dir %s\n"
        "# started as root, Mosquitto would become this user: the owner of these files\n"
        "user %s\n"
        "per_listener_settings true\n"
        "set_tcp_nodelay true\n"
        "persistence false\n"
        "log_dest stderr\n"
        "\n# devices: TLS, anonymous, each connection held to its own topics\n"
        "listener %d%s\n%s"
        "allow_anonymous true\n"
        "acl_file %s\n"
        "\n# the gateway and the operator: TLS, password\n"
        "listener %d%s\n%s"
        "allow_anonymous false\n"
        "password_file %s\n"
        "acl_file %s\n"
        % (directory, owner, port, " " + bind if bind else "", tls, path("acl-devices"),
           gateway_port, " " + gateway_bind if gateway_bind else "", tls, path("passwd"), path("acl-gateway"))
    )


def init(directory, hosts, port=DEVICE_PORT, bind=None, gateway_port=GATEWAY_PORT, gateway_bind="127.0.0.1"):
    """Write a new deployment into ``directory`` (created if missing); returns what
    ``load`` returns. Refuses a directory that holds any of the deployment's files."""
    for name, value in (("--port", port), ("--gateway-port", gateway_port)):
        if not 0 < value < 65536:
            raise DeploymentError("%s %d: expected a port 1..65535" % (name, value))
    if port == gateway_port:
        raise DeploymentError("--port and --gateway-port are both %d: the listeners need a port each" % port)
    for name, address in (("--bind", bind), ("--gateway-bind", gateway_bind)):
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise DeploymentError("%s %r: expected an IP address of this machine" % (name, address))
    directory = os.path.abspath(directory)
    existing = [name for name, _, _ in FILES if os.path.exists(os.path.join(directory, name))]
    if existing:
        raise DeploymentError("%s already holds a deployment (%s): nothing was changed; use a new directory"
                              % (directory, ", ".join(existing)))
    specific = [address for address in (bind, gateway_bind) if address not in (None, "", "0.0.0.0", "::")]
    from plugpay.host import broker_pki

    pki = broker_pki.issue(list(hosts) + specific)  # a client may connect to a listener's own address
    password = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    record = {"hosts": pki["hosts"], "port": port, "bind": bind, "gateway_port": gateway_port,
              "gateway_bind": gateway_bind, "gateway_user": GATEWAY_USER,
              "not_after": pki["not_after"].strftime("%Y-%m-%d"),
              "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    contents = {
        "ca.crt": pki["ca.crt"], "ca.key": pki["ca.key"], "server.crt": pki["server.crt"],
        "server.key": pki["server.key"], "gateway.password": password + "\n",
        "passwd": password_line(GATEWAY_USER, password), "acl-devices": device_acl(), "acl-gateway": gateway_acl(),
        "mosquitto.conf": mosquitto_conf(directory, pwd.getpwuid(os.geteuid()).pw_name, port, bind, gateway_port,
                                         gateway_bind),
        "deployment.json": json.dumps(record, indent=2) + "\n",
    }
    try:
        os.makedirs(directory, exist_ok=True)
        for name, mode, _ in FILES:
            data = contents[name]
            fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
            os.chmod(os.path.join(directory, name), mode)  # whatever the umask
    except OSError as e:
        raise DeploymentError("cannot write the deployment in %s: %s" % (directory, e))
    return load(directory)


def load(directory):
    """The record of the deployment in ``directory`` (``deployment.json``) with its
    absolute ``dir``, or ``DeploymentError`` naming what is missing."""
    directory = os.path.abspath(directory)
    path = os.path.join(directory, "deployment.json")
    try:
        with open(path) as f:
            record = json.load(f)
    except OSError as e:
        raise DeploymentError("no deployment in %s (%s): run plugpay broker init --dir %s"
                              % (directory, e.strerror or e, directory))
    except ValueError as e:
        raise DeploymentError("%s: not a deployment record (%s)" % (path, e))
    if not isinstance(record, dict):
        raise DeploymentError("%s: not a deployment record (not a JSON object)" % path)
    missing = [key for key in ("hosts", "port", "gateway_port", "gateway_bind", "gateway_user") if key not in record]
    if missing:
        raise DeploymentError("%s: not a deployment record (no %s)" % (path, ", ".join(missing)))
    for name in ("mosquitto.conf", "server.crt", "server.key", "passwd", "acl-devices", "acl-gateway"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise DeploymentError("%s: missing from the deployment" % os.path.join(directory, name))
    record["dir"] = directory
    return record


def device_url(record):
    """The URL devices use: the first host name of the certificate."""
    from plugpay.host import broker

    return broker.url(record["hosts"][0], record["port"], tls=True)


def gateway_url(record):
    from plugpay.host import broker

    bind = record["gateway_bind"]
    return broker.url("127.0.0.1" if bind in ("0.0.0.0", "") else "::1" if bind == "::" else bind,
                      record["gateway_port"], tls=True)
