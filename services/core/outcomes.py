"""Per-message failures as values: a stage returns a result or a ``Rejected`` (never raises)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """Pipeline stages that can refuse a message."""

    WIRE = "wire"
    DECODE = "decode"
    VALIDATE = "validate"
    ENRICH = "enrich"
    SCORE = "score"
    RATE_LIMIT = "rate_limit"


class Reason(StrEnum):
    """Enumerated reason codes of dead letters; each is explained in docs/operations.md."""

    RATE_LIMITED = "rate_limited"
    KEY_TOO_LARGE = "key_too_large"
    HEADER_TOO_LARGE = "header_too_large"
    EMPTY_PAYLOAD = "empty_payload"
    TOO_LARGE = "too_large"
    BAD_MAGIC_BYTE = "bad_magic_byte"
    TRUNCATED_HEADER = "truncated_header"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    AVRO_DECODE_ERROR = "avro_decode_error"
    TRAILING_BYTES = "trailing_bytes"
    MISSING_VALUE = "missing_value"
    TOO_LONG = "too_long"
    BAD_FORMAT = "bad_format"
    OUT_OF_RANGE = "out_of_range"
    NOT_FINITE = "not_finite"
    TIME_OUT_OF_WINDOW = "time_out_of_window"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why one message was refused. ``detail`` is readable and never contains the payload.

    >>> Rejected(Stage.DECODE, Reason.BAD_MAGIC_BYTE, "first byte 0x7b").reason
    <Reason.BAD_MAGIC_BYTE: 'bad_magic_byte'>
    """

    stage: Stage
    reason: Reason
    detail: str
    field: str = ""  # the field a validation rule refused, when one did
