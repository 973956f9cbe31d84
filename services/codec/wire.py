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


def unframe(data: bytes) -> int | tuple[Reason, str]:
    """The schema id of a framed message (its body starts at ``HEADER_SIZE``), or
    (reason, detail) when the header is malformed.

    >>> unframe(b"\\x00\\x00\\x00\\x00\\x07ab")
    7
    >>> unframe(b"{}")[0]
    <Reason.BAD_MAGIC_BYTE: 'bad_magic_byte'>
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
    return int(schema_id)
