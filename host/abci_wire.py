"""ABCI 2.0 messages and their framing on the socket, as CometBFT 0.38 speaks them.

The message classes come from the descriptor set that set-up compiled from the pinned
release's own ``.proto`` files (``host.cometbft``), built into a private descriptor pool:
what generated ``_pb2`` modules do when imported, without putting their top-level
``tendermint`` and ``gogoproto`` packages on anyone's path.

On the socket every message is a ``Request`` or ``Response`` (a oneof of the methods)
preceded by its length as an unsigned varint (CometBFT 0.38; Tendermint 0.34 used zigzag).
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from plugpay.host import cometbft

MAX_MESSAGE = 32 << 20  # a FinalizeBlock of a full block (consensus max_bytes) fits well within
MAX_VARINT_BYTES = 10


class FrameError(Exception):
    """Bytes on the socket that are no ABCI frame: the reason, for the refusal."""


def _load():
    path = cometbft.descriptor_path()
    try:
        with open(path, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    except OSError:
        raise RuntimeError(cometbft.missing() or "cannot read %s" % path) from None
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return pool


_POOL = _load()


def message(name):
    """The class of ``tendermint.abci.<name>``."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tendermint.abci." + name))


def enum(name, value):
    """The number of ``value`` in enum ``tendermint.abci.<name>`` (``"Msg.Enum"`` for nested)."""
    return _POOL.FindEnumTypeByName("tendermint.abci." + name).values_by_name[value].number


Request = message("Request")
Response = message("Response")


def uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(msg):
    body = msg.SerializeToString()
    return uvarint(len(body)) + body


async def read_frame(reader, max_message=MAX_MESSAGE):
    """The body of the next frame, or None at a clean end of stream. Raises ``FrameError``
    for a length that is no varint or is over ``max_message``, and
    ``asyncio.IncompleteReadError`` for a stream cut inside a frame."""
    length, shift = 0, 0
    for i in range(MAX_VARINT_BYTES):
        byte = await reader.read(1)
        if not byte:
            if i == 0:
                return None
            raise FrameError("the stream ended inside a length prefix")
        length |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            break
        shift += 7
    else:
        raise FrameError("a length prefix longer than %d bytes" % MAX_VARINT_BYTES)
    if length > max_message:
        raise FrameError("a message of %d bytes, over the %d-byte limit" % (length, max_message))
    return await reader.readexactly(length)
