"""Log configuration, called once by the CLI: readable text locally, JSON lines in containers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from services.core.settings import LogSettings

# Stable context fields a record may carry through ``extra=`` (style guide section 6).
CONTEXT_FIELDS = (
    "topic",
    "partition",
    "offset",
    "event_id",
    "model_version",
    "stage",
    "reason",
    "component",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the stable context fields that are present.

    >>> rec = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("w",), None)
    >>> rec.topic = "t"
    >>> sorted(json.loads(JsonFormatter().format(rec)))
    ['level', 'logger', 'message', 'time', 'topic']
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(settings: LogSettings) -> None:
    """Send logs to stderr (results go to stdout) in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
