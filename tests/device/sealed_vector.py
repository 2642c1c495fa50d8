"""A sealed request and its reply made by CPython (``protocol.sealed`` with the ephemeral
secret and the AEAD nonces fixed), for both runtimes to reproduce and open byte for byte:
tests/device/test_sealed_mp.py on MicroPython, tests/test_sealed.py on CPython."""
from plugpay.protocol.port import sha256

HOST_SECRET = sha256(b"plugpay sealed vector: host")
EPHEMERAL_SECRET = sha256(b"plugpay sealed vector: ephemeral")
EPOCH = 7
INNER = b"plugpay sealed vector: the request"
INNER_REPLY = b"plugpay sealed vector: the reply" * 9


def request_nonce(n):
    return bytes(range(n))


def reply_nonce(n):
    return bytes(range(100, 100 + n))


REQUEST = bytes.fromhex(
    "85183001075821033ee4c8e2e20fef24896c916f0d7d23e5d70dda00b1677a36dcb3b4acddaa1bbe59013101"
    "000102030405060708090a0b0c0d0e0f710175f7a702d2998e5ef9e771f18800b88794e66dcbab19944cf670"
    "c0ca9155a872fc363f76f1e8b227302af03ae672536b7fd07e83302d76b98e6240ec4bf3fec11dc7289e7a26"
    "dde51c958be2eb96790ad0f2a528ae6659d594568e0edfbff1799d0f4a8e0f7cd383a246e4a857f6e11083ba"
    "126aa1656da99b5a73e112c4b2b2d72ab770ab5e8da5062fee7af83e51dbfbedb2e5e6cd25971dcfefd2de8b"
    "aaac8a280ea7a24a4456fdd252afbaf4ee3dd482a873c9830a42c66a05f9a3754fbf58f8872585879a25dc96"
    "477335187b08492a801319bfc7fd2176529b1e4eca3bd7d91766bdaa53417c2900509314ced43f95f7cf8ddf"
    "c074e4853a176288b7822e2f6c16fc5e25dc5826b2816dbc20d5a5ccf92a6563a9891f1b62cec233"
)
REPLY = bytes.fromhex(
    "8618310158208e3cb89592d1783a4024b8053fcfdc8b13a28662133b343be55ef5aa11fa6acb006059023101"
    "6465666768696a6b6c6d6e6f707172730fe02099e110822e40191dc18898fdcbb146b77ff7ad5821acc92f6b"
    "ea53063a0609ea5e79260bf9b7711429fab953f98e320fd01ce7944a9087387ac20b1c08f41a3584f720a625"
    "16cf19596dd780648493ef266b677bc2514428f45bbbb359acfe63ae264786500e2e8b44a20d08b2f00c69b2"
    "a525b139d609eab01e074b87331c26cc8972361c8744ee79f186b371f89d5427039d53f90ca662afc55f7d4d"
    "f8faf0b2c233ccbb4c1594dadd5030a0e34642ca2b2b133adf68cbaefb3eb2e5ec505a447394bf2bde9e0d24"
    "c367daf6dae10959274e47a2e085855678c7a8e5c3c9b9777fe459bed51068847ca60ccfdaec98c1ffdd342e"
    "eb579f9cbd483013a98adb7b2d07904218086fe022857aff0de525cb02acdc9fb295f95c02b83ec5b1a551fc"
    "ab8722db0e0bbd6b7678da0739ba9c57fec1da8ee54834d0a145702f7c6510bf354a2eab1dc7e8fb6a14c919"
    "04c968bdab386c2427514b07abb680d60aeff84b920109c97565ea9a7ddc740dc690eac6b6623a10b91e44f7"
    "c9286b4735d2132655c6b805e113fc59fefcb00b3454f79d6342e46b64267e32f346a02667d165e69a80a936"
    "a83e09f0124428125be7b107604ef79388e672fd369d83c982ea61165dd05c8a0ec9d22483bce2c64260a41f"
    "a5769ad85a598abd723abaad4c0b36d9696121759851e1228ceab6b0bef315704c11e6244e844bf139eeeb93"
    "f494c95eacc79b33268ab8bd80de658275301841cb8d9698e369625c20050ca6"
)
