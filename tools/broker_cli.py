"""``plugpay broker …``: set up and run the deployment broker (Mosquitto with TLS and ACLs).

* ``broker init --dir DIR --host NAME``: a CA and a server certificate for the names
  devices use, the gateway's random password, Mosquitto's password file, the two ACLs and
  ``mosquitto.conf`` (``host.deployment`` says what each allows and why). It never
  overwrites: a directory that holds a deployment is refused.
* ``broker run --dir DIR``: Mosquitto with that configuration, in the foreground. The
  process becomes Mosquitto (exec), so Ctrl-C and a service manager's SIGTERM reach it
  directly and nothing is left behind.

The embedded amqtt broker (what ``plugpay demo`` and ``ledger up`` start without
``--broker``) has neither TLS nor ACLs: it is for one machine and tests.
"""
import os
import shutil
import sys

from plugpay.host import broker, deployment
from plugpay.tools import arg_types
from plugpay.tools.errors import UsageError


def add_parser(subparsers):
    """Register ``broker`` on the ``plugpay`` command line."""
    p = subparsers.add_parser("broker", help="set up and run the deployment MQTT broker (Mosquitto, TLS, topic ACLs)",
                              description="Set up and run the deployment MQTT broker: Mosquitto with TLS, anonymous "
                              "devices held to their own topics by ACLs, and a password login for the gateway "
                              "(README: Deployment broker).")
    sub = p.add_subparsers(dest="broker_command", metavar="SUBCOMMAND")
    sub.required = True

    init = sub.add_parser(
        "init", help="write a new deployment: CA, server certificate, gateway password, ACLs, mosquitto.conf",
        description="Write a deployment broker's files into DIR (created if missing; refused if it already holds "
        "one). Devices connect anonymously over TLS and may use only their own topics; the gateway logs in on a "
        "second, loopback listener. Prints what each file is.")
    init.add_argument("--dir", required=True, help="the deployment's directory")
    init.add_argument("--host", required=True, action="append", metavar="NAME",
                      help="a DNS name or IP address devices use to reach the broker; repeatable (localhost, "
                      "127.0.0.1 and ::1 are always added)")
    init.add_argument("--port", type=arg_types.PORT, default=deployment.DEVICE_PORT, metavar="PORT",
                      help="the devices' TLS port (default %d)" % deployment.DEVICE_PORT)
    init.add_argument("--bind", metavar="ADDRESS", help="the devices' listener address (default: every interface)")
    init.add_argument("--gateway-port", type=arg_types.PORT, default=deployment.GATEWAY_PORT, metavar="PORT",
                      help="the gateway's TLS port (default %d)" % deployment.GATEWAY_PORT)
    init.add_argument("--gateway-bind", default="127.0.0.1", metavar="ADDRESS",
                      help="the gateway's listener address (default 127.0.0.1: the gateway runs on this machine)")
    init.set_defaults(func=_init)

    run = sub.add_parser("run", help="run Mosquitto with a deployment in the foreground (Ctrl-C stops it)",
                         description="Run Mosquitto with DIR/mosquitto.conf in the foreground; this process becomes "
                         "Mosquitto, so Ctrl-C or SIGTERM stops it. Needs the mosquitto package.")
    run.add_argument("--dir", required=True, help="the deployment's directory (plugpay broker init)")
    run.add_argument("--mosquitto", metavar="PATH", help="the mosquitto executable (default: from PATH, else %s)"
                     % broker.MOSQUITTO)
    run.set_defaults(func=_run)
    return p


def _init(args):
    try:
        record = deployment.init(args.dir, args.host, args.port, args.bind, args.gateway_port, args.gateway_bind)
    except ValueError as e:  # DeploymentError, and a host name that is none (broker_pki)
        raise UsageError(str(e))
    directory = record["dir"]
    print("wrote a deployment broker in %s:" % directory)
    for name, mode, what in deployment.FILES:
        print("  %-17s %04o  %s" % (name, mode, what))
    print("server certificate for %s, valid until %s" % (", ".join(record["hosts"]), record["not_after"]))
    _where(record)
    ca = os.path.join(directory, "ca.crt")
    print("next:")
    print("  plugpay broker run --dir %s" % directory)
    print("  plugpay ledger up --ra-dir RA --key-file KEY --broker %s --ca %s --gateway-password-file %s"
          % (deployment.gateway_url(record), ca, os.path.join(directory, "gateway.password")))
    print("  plugpay session ... --broker %s --ca %s" % (deployment.device_url(record), ca))
    if os.geteuid() == 0:
        print("warning: written as root, so Mosquitto started as root stays root (it runs as the owner of these "
              "files); run init as the user the broker should run as")
    return 0


def _where(record):
    ca = os.path.join(record["dir"], "ca.crt")
    print("devices: %s (anonymous, own topics only; they verify the broker with %s)"
          % (deployment.device_url(record), ca))
    print("gateway: %s (user %s, password in %s)" % (deployment.gateway_url(record), record["gateway_user"],
                                                    os.path.join(record["dir"], "gateway.password")))


def _run(args):
    record = deployment.load(args.dir)
    executable = args.mosquitto or shutil.which("mosquitto") or broker.MOSQUITTO
    if not os.access(executable, os.X_OK):
        raise UsageError("mosquitto not found at %s: install it (apt-get install mosquitto) or give "
                         "--mosquitto PATH" % executable)
    _where(record)
    print("running %s -c %s (Ctrl-C stops it)" % (executable, os.path.join(record["dir"], "mosquitto.conf")))
    sys.stdout.flush()
    os.execv(executable, [executable, "-c", os.path.join(record["dir"], "mosquitto.conf")])
