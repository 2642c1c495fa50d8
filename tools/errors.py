"""The kinds of error a user meets on the ``plugpay`` command line and their exit codes,
defined here once so every command answers the same kind of error the same way: one line
on stderr, ``plugpay COMMAND: error: TEXT`` naming the thing (the option, the file and
field, the broker URL, the port), and the kind's exit code.

A command raises one of the classes below (or its own subclass); ``exit_code`` also knows
the few errors of the layers underneath that are one of these kinds wherever they come
from (a broker that does not answer, a board config or cluster file that is wrong).
Anything else that escapes a command is a failure at run time (1).
"""

OK = 0
FAILURE = 1  # the command ran and what it did failed: a refused or unfinished session, a replica that died
USAGE = 2  # bad input the user can fix: an option, an argument, a file or a field in it
UNREACHABLE = 3  # cannot connect to what the user named: the MQTT broker at its URL, the replicas, a board
PORT_IN_USE = 4  # a port this command must listen on is taken, or not allowed
INTERRUPTED = 130  # Ctrl-C

KINDS = (
    (OK, "done"),
    (FAILURE, "failed at run time: a refused or unfinished session, a replica that died"),
    (USAGE, "bad input: an option, an argument, a config file or a field in it"),
    (UNREACHABLE, "cannot connect: the MQTT broker at its URL, the ledger's replicas, a board"),
    (PORT_IN_USE, "a port to listen on is taken or not allowed; nothing was started"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)


class CommandError(Exception):
    """An error a user can cause, with the exit code of its kind."""

    code = FAILURE


class Failure(CommandError):
    """The command ran and failed (exit 1)."""


class UsageError(CommandError, ValueError):
    """Bad input the user can fix: the text names the option, file or field (exit 2)."""

    code = USAGE


class Unreachable(CommandError, ConnectionError):
    """What the user named cannot be connected to (no answer, or it refused us): the text
    names its address (exit 3)."""

    code = UNREACHABLE


class PortInUse(CommandError):
    """A port this command must listen on cannot be had; the text names it (exit 4)."""

    code = PORT_IN_USE


def exit_code(error):
    """The exit code of the kind ``error`` is."""
    if isinstance(error, CommandError):
        return error.code
    from plugpay.boards.common.profile import ConfigError
    from plugpay.firmware.mqtt import BrokerUnreachable
    from plugpay.host import certs, deployment, ra
    from plugpay.host.config_file import ConfigFileError
    from plugpay.host.mqtt import BrokerUnreachable as HostBrokerUnreachable

    if isinstance(error, (BrokerUnreachable, HostBrokerUnreachable)):
        return UNREACHABLE
    if isinstance(error, (ConfigError, ConfigFileError, deployment.DeploymentError,  # files the user named
                          ra.KeyStoreError, ra.IdentityError, certs.DuplicateIdentity,  # the RA's unlock and input
                          FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return USAGE
    return FAILURE


def text(error):
    """``error`` as one line: an ``OSError`` of a file as ``FILE: reason``."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        message = "%s: %s" % (error.filename, error.strerror)
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def epilog():
    """The error format and the exit codes, for ``plugpay --help``."""
    return ("Errors are one line on stderr, 'plugpay COMMAND: error: ...', naming the option,\n"
            "the file and field, the URL or the port. Exit codes, one per kind of error,\n"
            "the same in every command:\n" + "\n".join("  %-4d %s" % kind for kind in KINDS))
