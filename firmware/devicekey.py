"""The device key: the 32 bytes that unseal the wallet, kept outside the wallet's files.

Reading the flash must not be enough to spend: the wallet's seed is sealed under a key
that lives elsewhere. Sources, by board:

* ``KeyFile`` (Raspberry Pi): a 32-byte file, mode 0600, ideally on another medium.
* ``NvsKey`` (ESP32): a blob in the ESP32's NVS partition, apart from the littlefs
  filesystem holding the wallet. (Needs the ``esp32`` module: only on a board.)
* A PIN, optionally: ``sealing_key`` mixes PBKDF2-HMAC-SHA256(PIN) into the device key,
  so a stolen board without its PIN unseals nothing. MicroPython has no
  ``hashlib.pbkdf2_hmac``, so ``pbkdf2_sha256`` is written out here and tested against
  CPython's.
"""
from plugpay.protocol.port import const, hmac_sha256, urandom

KEY_BYTES = const(32)
PIN_ROUNDS = const(2000)  # ~1 s on an ESP32 with the pure HMAC; a PIN is short anyway


class DeviceKeyError(ValueError):
    """The device key is missing or malformed."""


def pbkdf2_sha256(password, salt, rounds, length=32):
    """RFC 8018 PBKDF2 with HMAC-SHA256."""
    if rounds < 1 or length < 1:
        raise ValueError("rounds and length must be positive")
    out = b""
    block = 1
    while len(out) < length:
        u = hmac_sha256(password, salt + block.to_bytes(4, "big"))
        acc = int.from_bytes(u, "big")
        for _ in range(rounds - 1):
            u = hmac_sha256(password, u)
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(32, "big")
        block += 1
    return out[:length]


def sealing_key(device_key, pin=None, salt=b"", rounds=PIN_ROUNDS):
    """The key the wallet seals with: the device key, with the PIN's PBKDF2 mixed in."""
    if len(device_key) != KEY_BYTES:
        raise DeviceKeyError("a device key is %d bytes, got %d" % (KEY_BYTES, len(device_key)))
    pin_part = b"" if pin is None else pbkdf2_sha256(pin.encode(), salt, rounds)
    return hmac_sha256(device_key, b"plugpay/wallet-sealing-key/v1" + pin_part)


class KeyFile:
    """A device key in a file of exactly 32 bytes."""

    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path, "rb") as f:
                key = f.read(KEY_BYTES + 1)
        except OSError:
            raise DeviceKeyError("no device key file at %s" % self.path)
        if len(key) != KEY_BYTES:
            raise DeviceKeyError("%s holds %d bytes, not a %d-byte device key" % (self.path, len(key), KEY_BYTES))
        return key

    def create(self):
        """Write a fresh random key; refuses to replace an existing file."""
        try:
            open(self.path, "rb").close()
        except OSError:
            pass
        else:
            raise DeviceKeyError("%s exists: refusing to replace a device key" % self.path)
        key = urandom(KEY_BYTES)
        try:
            import os

            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, key)
            os.fsync(fd)
            os.close(fd)
        except AttributeError:  # MicroPython's os has no open(): a plain file
            with open(self.path, "wb") as f:
                f.write(key)
        return key


class NvsKey:
    """A device key in ESP32 NVS (namespace ``plugpay``, key ``device_key``)."""

    def __init__(self, namespace="plugpay", name="device_key"):
        import esp32  # only on an ESP32 build of MicroPython

        self.nvs = esp32.NVS(namespace)
        self.name = name

    def load(self):
        buf = bytearray(KEY_BYTES)
        try:
            n = self.nvs.get_blob(self.name, buf)
        except OSError:
            raise DeviceKeyError("no device key in NVS")
        if n != KEY_BYTES:
            raise DeviceKeyError("the NVS device key is %d bytes, not %d" % (n, KEY_BYTES))
        return bytes(buf)

    def create(self):
        try:
            self.load()
        except DeviceKeyError:
            key = urandom(KEY_BYTES)
            self.nvs.set_blob(self.name, key)
            self.nvs.commit()
            return key
        raise DeviceKeyError("NVS already holds a device key: refusing to replace it")
