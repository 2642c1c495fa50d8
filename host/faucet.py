"""The test network's faucet: its key file, and the gateway's check of a device's request.

Devices cannot hold the faucet key, so they send a ``FaucetRequest`` (nonce and outputs)
sealed to the gateway, which refuses amounts of 0 and totals above its per-request limit
and otherwise signs one ``Faucet`` operation per output: the ledger shows one coin created
per transaction, never several coins of one wallet created together. The ledger itself
still checks the signature and that every output's account is RA-signed.
"""
import os
import stat

from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.port import hmac_sha256, sha256

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
        """One signed ``Faucet`` per output of a decoded ``FaucetRequest``, in output
        order (output i alone, under ``output_nonce(secret, request.nonce, i)``), or ``Refused``."""
        total = 0
        for i, out in enumerate(request.outputs):
            if out.amount == 0:
                raise Refused(L.ZERO_AMOUNT, "outputs[%d].amount is 0" % i)
            total += out.amount
        if total > self.limit:
            raise Refused(L.FAUCET_LIMIT, "asks %d, the faucet gives at most %d per request" % (total, self.limit))
        ops = []
        for i, out in enumerate(request.outputs):
            op = L.Faucet(output_nonce(self.secret, request.nonce, i), [out], b"")
            op.faucet_sig = signing.sign(self.secret, op)
            ops.append(op)
        return ops


def output_nonce(secret, nonce, i):
    """The nonce of output ``i``'s own ``Faucet``: deterministic, so a re-sent request
    yields the same operations (the ledger answers DUPLICATE), and keyed with the faucet's
    secret, so nobody who reads the ledger can try request nonces until one gives a mint's
    nonce and then find the other coins of that request."""
    return int.from_bytes(hmac_sha256(secret, b"plugpay/faucet-nonce/v1" + nonce.to_bytes(8, "big") + bytes((i,)))[:8],
                          "big")


def answer(request_bytes, ops, results):
    """The device's ``Result`` for its ``FaucetRequest`` (``request_bytes``), from the
    ledger's ``Result`` bytes for each of ``ops``: ok when every output was minted (OK, or
    DUPLICATE for a request sent again), its data the ops' txhashes in output order (output
    i's coin is at ``(txhashes[i], 0)``); otherwise the first refusal's reason and detail."""
    digest = sha256(request_bytes)
    for raw in results:
        result = L.Result.decode(raw)
        if not result.ok and result.reason != L.DUPLICATE:
            return L.Result(digest, False, result.reason, result.detail, None)
    return L.Result(digest, True, L.OK, "", [op.txhash() for op in ops])


def refused(request_bytes, refusal):
    """The device's ``Result`` for a request the faucet refused itself (``Refused``)."""
    detail = refusal.detail.encode("utf-8")[:L.MAX_DETAIL_BYTES].decode("utf-8", "ignore")
    return L.Result(sha256(request_bytes), False, refusal.reason, detail, None)
