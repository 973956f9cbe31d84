"""Confluent wire framing: magic byte 0, 4-byte big-endian schema id, then the Avro binary body."""

from __future__ import annotations

import struct

from services.core.outcomes import Reason

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5 bytes


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the wire header.

    >>> frame(7, b"ab")
    b'\\x00\\x00\\x00\\x00\\x07ab'
    """
    return HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes) -> tuple[int, memoryview] | tuple[Reason, str]:
    """Split a framed message into (schema id, body), or return (reason, detail) when malformed.

    >>> unframe(b"\\x00\\x00\\x00\\x00\\x07ab")[0]
    7
    >>> unframe(b"{}")
    (<Reason.BAD_MAGIC_BYTE: 'bad_magic_byte'>, 'first byte is 0x7b, expected 0x00 (Confluent wire format)')
    """
    if not data:
        return Reason.EMPTY_PAYLOAD, "value is empty or null"
    if data[0] != MAGIC_BYTE:
        return (
            Reason.BAD_MAGIC_BYTE,
            f"first byte is 0x{data[0]:02x}, expected 0x00 (Confluent wire format)",
        )
    if len(data) < HEADER_SIZE:
        return Reason.TRUNCATED_HEADER, f"{len(data)} bytes, the wire header alone needs 5"
    _, schema_id = HEADER.unpack_from(data)
    return schema_id, memoryview(data)[HEADER_SIZE:]
