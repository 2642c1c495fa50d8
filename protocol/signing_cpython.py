"""The CPython backends of ``signing``: libsecp256k1 through coincurve, and python-ecdsa as
the reference. In a module of their own so that a device, which can use neither, never
holds their code (``signing`` picks among native and pure there, as embit does).
"""

MAX_PARSED_KEYS = 4096  # the coincurve backend's cache of parsed public keys


class Coincurve:
    verify_checks_curve = True  # verify parses the key (libsecp256k1) first
    name = "coincurve"

    def __init__(self):
        # libsecp256k1 through coincurve's cffi binding directly: coincurve's PrivateKey
        # computes its public key on construction, which would double the cost of a sign.
        from coincurve._libsecp256k1 import ffi, lib
        from coincurve.context import GLOBAL_CONTEXT

        self.ffi = ffi
        self.lib = lib
        self.ctx = GLOBAL_CONTEXT.ctx
        self.nonce_fn = lib.secp256k1_nonce_function_rfc6979
        # Parsed public keys (libsecp256k1's 64-byte internal form) by their 33 bytes, so a
        # key that verifies again (an RA or faucet key, an account's key) skips the parse
        # (a square root). Only keys that parsed are kept; cleared when it reaches the bound.
        self.keys = {}

    def public_key(self, secret):
        ffi, lib, ctx = self.ffi, self.lib, self.ctx
        pk = ffi.new("secp256k1_pubkey *")
        if not lib.secp256k1_ec_pubkey_create(ctx, pk, secret):
            raise ValueError("secret key out of range")
        return self._compressed(pk)

    def _compressed(self, pk):
        out = self.ffi.new("unsigned char[33]")
        size = self.ffi.new("size_t *", 33)
        self.lib.secp256k1_ec_pubkey_serialize(self.ctx, out, size, pk, self.lib.SECP256K1_EC_COMPRESSED)
        return bytes(self.ffi.buffer(out, 33))

    def sign(self, secret, digest):
        # libsecp256k1 signs with RFC 6979 and always returns a low-S signature.
        ffi, lib, ctx = self.ffi, self.lib, self.ctx
        sig = ffi.new("secp256k1_ecdsa_signature *")
        if not lib.secp256k1_ecdsa_sign(ctx, sig, digest, secret, self.nonce_fn, ffi.NULL):
            raise ValueError("signing failed")
        out = ffi.new("unsigned char[64]")
        lib.secp256k1_ecdsa_signature_serialize_compact(ctx, out, sig)
        return bytes(ffi.buffer(out, 64))

    def on_curve(self, pubkey):
        return bool(self.lib.secp256k1_ec_pubkey_parse(self.ctx, self.ffi.new("secp256k1_pubkey *"), pubkey, len(pubkey)))

    def multiply(self, pubkey, secret):
        ffi, lib, ctx = self.ffi, self.lib, self.ctx
        pk = ffi.new("secp256k1_pubkey *")  # not the cached parse: the product replaces it
        if not lib.secp256k1_ec_pubkey_parse(ctx, pk, pubkey, len(pubkey)) \
                or not lib.secp256k1_ec_pubkey_tweak_mul(ctx, pk, secret):
            raise ValueError("bad public key or secret")
        return self._compressed(pk)

    def parsed_key(self, pubkey):
        """The parsed key, from the cache or parsed now; None for a key off the curve."""
        keys = self.keys
        pk = keys.get(pubkey)
        if pk is None:
            pk = self.ffi.new("secp256k1_pubkey *")
            if not self.lib.secp256k1_ec_pubkey_parse(self.ctx, pk, pubkey, len(pubkey)):
                return None
            if len(keys) >= MAX_PARSED_KEYS:
                keys.clear()
            keys[pubkey] = pk
        return pk

    def verify(self, pubkey, digest, sig):
        ffi, lib, ctx = self.ffi, self.lib, self.ctx
        s = ffi.new("secp256k1_ecdsa_signature *")
        if not lib.secp256k1_ecdsa_signature_parse_compact(ctx, s, sig):
            return False
        pk = self.parsed_key(pubkey)
        if pk is None:
            return False
        return bool(lib.secp256k1_ecdsa_verify(ctx, s, digest, pk))


class PythonEcdsa:
    verify_checks_curve = False
    name = "ecdsa"

    def __init__(self):
        import hashlib

        import ecdsa
        from ecdsa.util import sigdecode_string, sigencode_string_canonize

        self.ecdsa = ecdsa
        self.sha256 = hashlib.sha256
        self.encode = sigencode_string_canonize
        self.decode = sigdecode_string

    def _key(self, secret):
        return self.ecdsa.SigningKey.from_string(secret, curve=self.ecdsa.SECP256k1, hashfunc=self.sha256)

    def public_key(self, secret):
        return self._key(secret).get_verifying_key().to_string("compressed")

    def sign(self, secret, digest):
        return self._key(secret).sign_digest_deterministic(digest, hashfunc=self.sha256, sigencode=self.encode)

    def on_curve(self, pubkey):
        e = self.ecdsa
        try:
            e.VerifyingKey.from_string(pubkey, curve=e.SECP256k1)
            return True
        except e.MalformedPointError:
            return False

    def verify(self, pubkey, digest, sig):
        e = self.ecdsa
        try:
            vk = e.VerifyingKey.from_string(pubkey, curve=e.SECP256k1, hashfunc=self.sha256)
            return vk.verify_digest(sig, digest, sigdecode=self.decode)
        except (e.BadSignatureError, e.MalformedPointError):
            return False
        except (TypeError, ArithmeticError):  # a sum at the point at infinity (Wycheproof): no signature
            return False
