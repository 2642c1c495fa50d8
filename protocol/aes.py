"""AES forward cipher (FIPS-197) in pure Python, for MicroPython builds without cryptolib.

Only encryption is needed: ``aead`` runs AES in counter mode. The WebAssembly port used in
CI has no ``cryptolib``; an ESP32 build has it and never loads this module. Tested block for
block against the ``cryptography`` package. Not constant-time (table look-ups).
"""


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _make_sbox():
    # Multiplicative inverse in GF(2^8) followed by the affine map; computed once at import
    # so the module carries no 256-byte literal that could be mistyped.
    exp = bytearray(256)
    log = bytearray(256)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= _xtime(x)  # multiply by the generator 3
    box = bytearray(256)
    for a in range(256):
        inv = 0 if a == 0 else exp[(255 - log[a]) % 255]
        s = inv
        for _ in range(4):
            inv = ((inv << 1) | (inv >> 7)) & 0xFF
            s ^= inv
        box[a] = s ^ 0x63
    return bytes(box)


SBOX = _make_sbox()


def expand_key(key):
    """Round keys for a 16-, 24- or 32-byte key, as one bytearray of (rounds + 1) * 16."""
    nk = len(key) // 4
    if len(key) not in (16, 24, 32):
        raise ValueError("AES key must be 16, 24 or 32 bytes")
    rounds = nk + 6
    w = bytearray(key)
    rcon = 1
    i = nk
    while len(w) < (rounds + 1) * 16:
        t = w[-4:]
        if i % nk == 0:
            t = bytearray((SBOX[t[1]] ^ rcon, SBOX[t[2]], SBOX[t[3]], SBOX[t[0]]))
            rcon = _xtime(rcon)
        elif nk > 6 and i % nk == 4:
            t = bytearray(SBOX[b] for b in t)
        base = len(w) - nk * 4
        w.extend(bytes(w[base + j] ^ t[j] for j in range(4)))
        i += 1
    return w


def encrypt_block(round_keys, block):
    """Encrypt one 16-byte block."""
    sbox = SBOX
    rounds = len(round_keys) // 16 - 1
    s = bytearray(block[j] ^ round_keys[j] for j in range(16))
    for r in range(1, rounds + 1):
        # SubBytes and ShiftRows together: state is column-major, row i shifts left by i.
        t = bytearray(16)
        for c in range(4):
            for row in range(4):
                t[4 * c + row] = sbox[s[4 * ((c + row) % 4) + row]]
        if r != rounds:
            for c in range(4):
                a0, a1, a2, a3 = t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]
                x = a0 ^ a1 ^ a2 ^ a3
                t[4 * c] = a0 ^ x ^ _xtime(a0 ^ a1)
                t[4 * c + 1] = a1 ^ x ^ _xtime(a1 ^ a2)
                t[4 * c + 2] = a2 ^ x ^ _xtime(a2 ^ a3)
                t[4 * c + 3] = a3 ^ x ^ _xtime(a3 ^ a0)
        k = 16 * r
        s = bytearray(t[j] ^ round_keys[k + j] for j in range(16))
    return bytes(s)
