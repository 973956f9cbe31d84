"""Where a domain folder is, and what its ``domain.json`` declares (the settings' defaults)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError

# The shipped domains: the feed is the repository's schemas/ folder, others live beneath it.
SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "schemas"
DOMAIN_FILE = "domain.json"
# domain.json `topics` keys and the TopicSettings fields they default.
DOMAIN_TOPICS = {
    "events": "events",
    "predictions": "predictions",
    "shadow_predictions": "shadow_predictions",
    "labels": "labels",
    "feature_log": "feature_log",
}


def domain_folder(domain: str) -> Path:
    """A shipped domain's folder by name, else ``domain`` read as a path.

    >>> domain_folder("feed") == SCHEMAS_DIR, domain_folder("payments").name
    (True, 'payments')
    """
    if domain == "feed":
        return SCHEMAS_DIR
    shipped = SCHEMAS_DIR / "domains" / domain
    if "/" not in domain and shipped.is_dir():
        return shipped
    return Path(domain).expanduser().absolute()


def domain_declares(folder: Path) -> dict[str, Any]:
    """The parsed ``domain.json`` of ``folder`` ({} when it has none).

    Raises:
        ConfigError: the file is not a JSON object, or the folder does not exist.
    """
    if not folder.is_dir():
        raise ConfigError(f"domain folder {folder} does not exist (STREAMSCORE_DOMAIN)")
    path = folder / DOMAIN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    return data
