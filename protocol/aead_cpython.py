"""AES-CTR through the ``cryptography`` package: ``aead``'s CPython backend, in a module of
its own so that a device, which has ``cryptolib`` instead, never holds it."""
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def ctr(key, nonce, data):
    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor().update(data)
