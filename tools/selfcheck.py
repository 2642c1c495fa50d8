"""Cross-runtime self-check of the protocol core: CPython and MicroPython agree byte for byte.

The host builds an RA-signed account and a signed 2-in/2-out Gao transaction; MicroPython
decodes them strictly, verifies every signature, signs its own account, transaction and
sealed secret, and the host checks those with its fastest backend. Used by ``plugpay
demo`` until the charging session exists, and by the conformance tests.
"""
import hashlib

from plugpay.protocol import aead, signing
from plugpay.protocol import structures as S

DEVICE_SCRIPT = """
import json
from plugpay.protocol import aead, codec, signing
from plugpay.protocol import structures as S

ra_pub = bytes.fromhex(RA_PUB)
acc = S.Account.decode(bytes.fromhex(ACCOUNT))
tx = S.Transaction.decode(bytes.fromhex(TX))
assert acc.encode().hex() == ACCOUNT and tx.encode().hex() == TX
assert signing.verify(ra_pub, acc, acc.ra_sig), "RA signature"
for i, w in enumerate(tx.witnesses):
    assert signing.verify(bytes.fromhex(INPUT_PUBS[i]), tx, w), "witness %d" % i
    assert not signing.verify(ra_pub, tx, w)
bad = bytearray(bytes.fromhex(TX)); bad[-1] ^= 1
assert signing.verify(acc.pubkey, tx, bytes(bad[-64:])) is False
try:
    S.Transaction.decode(bytes.fromhex(TX) + b"\\x00")
    raise AssertionError("trailing byte accepted")
except codec.DecodeError as e:
    rejected = e.field
secret = bytes.fromhex(DEVICE_SECRET)
mine = S.Account(signing.public_key(secret), 7, b"")
mine.ra_sig = signing.sign(secret, mine)
tx.witnesses = [signing.sign(secret, tx)] * len(tx.inputs)
sealed = aead.seal(bytes(32), b"device secret", b"aad")
print("@@ " + json.dumps({"account": mine.encode().hex(), "tx": tx.encode().hex(), "sealed": sealed.hex(),
    "rejected": rejected, "backend": signing.BACKEND, "cbor": codec.BACKEND, "aead": aead.BACKEND}))
"""


def _secret(label):
    return hashlib.sha256(b"plugpay selfcheck " + label).digest()


def host_objects():
    ra = _secret(b"ra")
    acc = S.Account(signing.public_key(_secret(b"owner")), 1, b"")
    acc.ra_sig = signing.sign(ra, acc)
    inputs = [_secret(b"in0"), _secret(b"in1")]
    tx = S.Transaction(
        [S.TxInput(hashlib.sha256(b"prev").digest(), 0), S.TxInput(hashlib.sha256(b"prev").digest(), 1)],
        S.Price(35, 500_000),
        [S.TxOutput(acc, 300_000), S.TxOutput(acc, 200_000)],
        [b"", b""],
    )
    tx.witnesses = [signing.sign(k, tx) for k in inputs]
    return ra, acc, tx, [signing.public_key(k) for k in inputs]


def run(progress=print):
    """Run the check; return a list of (description, ok) and raise on the first failure."""
    ra, acc, tx, input_pubs = host_objects()
    checks = []

    def check(what, ok):
        checks.append((what, ok))
        progress(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            raise AssertionError(what)

    for name in signing.available():
        signing.use(name)
        check("CPython %-9s verifies the RA signature and both input witnesses" % name,
              signing.verify(signing.public_key(ra), acc, acc.ra_sig)
              and all(signing.verify(p, tx, w) for p, w in zip(input_pubs, tx.witnesses)))
    signing.use(signing.available()[0])
    check("2-in/2-out transaction is %d bytes (< 450; Gao et al.: 536)" % len(tx.encode()), len(tx.encode()) < 450)
    blob = aead.seal(bytes(32), b"secret")
    check("sealed secret opens, a flipped bit is refused",
          aead.unseal(bytes(32), blob) == b"secret" and _refused(lambda: aead.unseal(bytes(32), blob[:-1] + bytes([blob[-1] ^ 1]))))

    from plugpay.tools import micropython

    reason = micropython.unavailable_reason()
    if reason:
        check("MicroPython run: " + reason, False)
    device_secret = _secret(b"device")
    prelude = "RA_PUB = %r\nACCOUNT = %r\nTX = %r\nINPUT_PUBS = %r\nDEVICE_SECRET = %r\n" % (
        signing.public_key(ra).hex(), acc.encode().hex(), tx.encode().hex(), [p.hex() for p in input_pubs], device_secret.hex())
    rec = micropython.run(prelude + DEVICE_SCRIPT, timeout=600).check().records[-1]
    check("MicroPython (%s ECDSA, %s CBOR, %s AES) decodes and verifies the host's account and transaction"
          % (rec["backend"], rec["cbor"], rec["aead"]), True)
    check("MicroPython refuses a trailing byte, naming '%s'" % rec["rejected"], rec["rejected"] == "transaction")
    mine = S.Account.decode(bytes.fromhex(rec["account"]))
    device_pub = signing.public_key(device_secret)
    check("CPython verifies MicroPython's account signature, byte-identical to its own",
          signing.verify(device_pub, mine, mine.ra_sig) and mine.ra_sig == signing.sign(device_secret, mine))
    dtx = S.Transaction.decode(bytes.fromhex(rec["tx"]))
    check("CPython verifies MicroPython's transaction witnesses",
          all(signing.verify(device_pub, dtx, w) for w in dtx.witnesses) and dtx.witnesses[0] == signing.sign(device_secret, dtx))
    check("CPython opens MicroPython's sealed secret", aead.unseal(bytes(32), bytes.fromhex(rec["sealed"]), b"aad") == b"device secret")
    return checks


def _refused(fn):
    try:
        fn()
    except aead.AuthError:
        return True
    return False
