"""The settings as environment variables: the list, the docs table, a masked dump, a child's env."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from services.core.settings.infra import ENV_PREFIX, NESTED_DELIMITER
from services.core.settings.root import Settings


def iter_env_vars(
    model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX
) -> Iterator[tuple[str, FieldInfo]]:
    """Yield every environment variable the settings read, with its field.

    >>> names = [name for name, _ in iter_env_vars()]
    >>> "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS" in names, "STREAMSCORE_HOME" in names
    (True, True)
    """
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_env_vars(annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
        else:
            yield f"{prefix}{name.upper()}", field


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``**********``.

    >>> s = Settings(redis={"password": "hunter2"})
    >>> masked(s)["redis"]["password"]
    '**********'
    """
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["effective"] = {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url,
    }
    return data


def env_table_markdown() -> str:
    """The variables section of docs/configuration.md (`streamscore config docs` prints it)."""
    lines: list[str] = []
    current = None
    for name, field in iter_env_vars():
        rest = name[len(ENV_PREFIX) :]
        group = rest.split(NESTED_DELIMITER)[0].lower() if NESTED_DELIMITER in rest else ""
        if group != current:
            lines += ["", f"### `{group}`" if group else "### Top level", ""]
            lines += ["| variable | default | meaning |", "|---|---|---|"]
            current = group
        default = field.get_default(call_default_factory=True)
        if default is None:
            shown = "unset"
        elif isinstance(default, Path):
            shown = f"`{str(default).replace(str(Path.home()), '~')}`"
        elif isinstance(default, list | tuple | dict):
            shown = f"`{json.dumps(default if isinstance(default, dict) else list(default))}`"
        else:
            shown = f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


def to_env(settings: Settings) -> dict[str, str]:
    """These settings as ``STREAMSCORE_*`` variables, to start a child process with the same
    configuration (secrets included in clear: pass only to processes we start)."""
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(f"{prefix}{name.upper()}{NESTED_DELIMITER}", value)
            elif isinstance(value, SecretStr):
                env[f"{prefix}{name.upper()}"] = value.get_secret_value()
            elif isinstance(value, list | tuple | dict):
                env[f"{prefix}{name.upper()}"] = json.dumps(
                    list(value) if not isinstance(value, dict) else value
                )
            elif value is not None:
                env[f"{prefix}{name.upper()}"] = str(value)

    walk(ENV_PREFIX, settings)
    return env
