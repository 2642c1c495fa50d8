"""CPython and the real MicroPython agree byte for byte on random keys, messages and values."""
import json
import random

import cbor2

from plugpay.protocol import aead, signing
from plugpay.tools import micropython, selfcheck

DEVICE = """
import json
from plugpay.protocol import aead, codec, signing
cases = json.loads(CASES)
out = []
for secret, digest, sig, pub in cases["sigs"]:
    secret, digest, sig, pub = [bytes.fromhex(x) for x in (secret, digest, sig, pub)]
    out.append([signing.public_key(secret) == pub, signing.sign_digest(secret, digest) == sig,
                signing.verify_digest(pub, digest, sig),
                signing.verify_digest(pub, digest, sig[:32] + (signing.N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big"))])
enc = []
for hex_ in cases["cbor"]:
    raw = bytes.fromhex(hex_)
    enc.append(codec.dumps(codec.loads(raw)) == raw)
sealed = [aead.seal(bytes.fromhex(k), bytes.fromhex(p), b"", bytes.fromhex(n)).hex() for k, p, n in cases["seal"]]
print("@@ " + json.dumps({"sigs": out, "cbor": enc, "sealed": sealed}))
"""


def random_value(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-(1 << 64), 1 << 64)
    if kind == 1:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 2:
        return "".join(chr(rng.choice([0x41, 0xE9, 0x20AC, 0x1F50C])) for _ in range(rng.randrange(0, 20)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.randrange(0, 30)
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]


def test_random_signatures_values_and_seals_agree():
    rng = random.Random(15118)
    sigs = []
    for _ in range(25):
        secret = rng.randbytes(32)
        digest = rng.randbytes(32)
        sigs.append([secret.hex(), digest.hex(), signing.sign_digest(secret, digest).hex(), signing.public_key(secret).hex()])
    values = [cbor2.dumps(random_value(rng)).hex() for _ in range(200)]
    seals = [[rng.randbytes(32).hex(), rng.randbytes(rng.randrange(0, 70)).hex(), rng.randbytes(16).hex()] for _ in range(10)]
    cases = {"sigs": sigs, "cbor": values, "seal": seals}
    rec = micropython.run("CASES = %r\n" % json.dumps(cases) + DEVICE, timeout=600).check().records[-1]
    assert all(row == [True, True, True, False] for row in rec["sigs"]), rec["sigs"]
    assert all(rec["cbor"])
    for (k, p, n), got in zip(seals, rec["sealed"]):
        assert got == aead.seal(bytes.fromhex(k), bytes.fromhex(p), b"", bytes.fromhex(n)).hex()


def test_selfcheck_passes_on_both_runtimes():
    lines = []
    checks = selfcheck.run(progress=lines.append)
    assert checks and all(ok for _, ok in checks)
    assert any("MicroPython" in what for what, _ in checks)
