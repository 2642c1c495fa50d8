"""The test network's faucet: its key file, and the gateway's check of a device's request.

Devices cannot hold the faucet key, so they send a ``FaucetRequest`` (nonce and outputs)
to the gateway, which refuses amounts of 0 and totals above its per-request limit and
otherwise signs the ``Faucet`` operation the ledger accepts. The ledger itself still checks
the signature and that every output's account is RA-signed.
"""
import os
import stat

from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing

KEY_FILE = "faucet.key"
DEFAULT_LIMIT = 1000000


class Refused(Exception):
    """A request refused before it reaches the ledger, with a ``ledger_ops`` reason code."""

    def __init__(self, reason, detail):
        Exception.__init__(self, detail)
        self.reason = reason
        self.detail = detail


def create_key(path):
    """A new faucet secret in ``path`` (hex, mode 0600; an existing file is refused);
    returns its public key."""
    secret = signing.new_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return signing.public_key(secret)


def load_key(path):
    """The faucet secret in ``path``; refused if group or others can read the file."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError("%s is readable by others (mode %o): chmod 600 it" % (path, mode & 0o777))
    with open(path) as f:
        text = f.read(200).strip()
    try:
        secret = bytes.fromhex(text)
        signing.check_secret(secret)
    except ValueError:  # not hex, or signing.SignatureError
        raise ValueError("%s does not hold a secp256k1 secret key in hex" % path)
    return secret


class Faucet:
    """Signs ``Faucet`` operations for requests within ``limit`` (smallest units per request)."""

    def __init__(self, secret, limit=DEFAULT_LIMIT):
        self.secret = secret
        self.pubkey = signing.public_key(secret)
        self.limit = limit

    def mint(self, request):
        """The signed ``Faucet`` for a decoded ``FaucetRequest``, or ``Refused``."""
        total = 0
        for i, out in enumerate(request.outputs):
            if out.amount == 0:
                raise Refused(L.ZERO_AMOUNT, "outputs[%d].amount is 0" % i)
            total += out.amount
        if total > self.limit:
            raise Refused(L.FAUCET_LIMIT, "asks %d, the faucet gives at most %d per request" % (total, self.limit))
        op = L.Faucet(request.nonce, request.outputs, b"")
        op.faucet_sig = signing.sign(self.secret, op)
        return op
