"""CPython and the real MicroPython agree byte for byte on random keys, messages and values,
and a request the device seals opens on CPython and the other way round."""
import json
import random

import cbor2

from plugpay.protocol import aead, sealed, signing
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


SEAL = """
import json
from plugpay.protocol import sealed
args = json.loads(ARGS)
request, reply_key = sealed.seal_request(bytes.fromhex(args["inner"]), args["epoch"], bytes.fromhex(args["pubkey"]))
print("@@ " + json.dumps({"request": request.hex(), "key": reply_key.key.hex(), "digest": reply_key.request_digest.hex()}))
"""

OPEN = """
import json
from plugpay.protocol import sealed
args = json.loads(ARGS)
reply_key = sealed.ReplyKey(bytes.fromhex(args["key"]), bytes.fromhex(args["digest"]))
print("@@ " + json.dumps({"inner": sealed.open_reply(reply_key, bytes.fromhex(args["reply"])).hex()}))
"""


def test_micropython_seals_with_fresh_randomness_what_cpython_opens_and_reads_its_sealed_reply():
    """Two runs of the real MicroPython (its random source is the JS host's CSPRNG), CPython
    as the host between them; the device keeps its reply key from one run to the next."""
    host_secret = signing.new_secret()
    inner = random.Random(7).randbytes(700)
    args = {"inner": inner.hex(), "epoch": 4, "pubkey": signing.public_key(host_secret).hex()}
    device = micropython.run("ARGS = %r\n" % json.dumps(args) + SEAL, timeout=300).check().records[-1]
    request = bytes.fromhex(device["request"])
    opened, host_key = sealed.open_request(request, lambda epoch: host_secret if epoch == 4 else None)
    assert opened == inner and host_key.key.hex() == device["key"]
    reply = sealed.seal_reply(host_key, inner[::-1])
    args = {"key": device["key"], "digest": device["digest"], "reply": reply.hex()}
    read = micropython.run("ARGS = %r\n" % json.dumps(args) + OPEN, timeout=300).check().records[-1]
    assert bytes.fromhex(read["inner"]) == inner[::-1]
