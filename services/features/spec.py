"""The feature spec: entity groups (user, item), their feature names, defaults and ranges.

One spec serves loading, training and scoring, so a feature means the same thing everywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError

DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2] / "schemas" / "features.json"


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One numeric feature with its declared default (used when the entity is missing)."""

    name: str
    default: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """Features of one entity kind, looked up by the event field ``key_field``."""

    name: str
    key_field: str
    features: tuple[FeatureDef, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def defaults(self) -> list[float]:
        return [f.default for f in self.features]

    @property
    def width(self) -> int:
        return len(self.features)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """All groups, versioned: the version is part of every Redis key we write."""

    version: str
    groups: tuple[GroupSpec, ...]

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise ConfigError(f"feature spec {self.version} has no group {name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Build and check a spec (names unique, defaults finite and within range).

        >>> spec = FeatureSpec.from_dict({"version": "v1", "groups": [{"name": "user",
        ...     "key_field": "user_id", "features": [{"name": "a", "default": 0, "min": -1,
        ...     "max": 1}]}]})
        >>> spec.group("user").names
        ['a']
        """
        try:
            groups = tuple(
                GroupSpec(
                    g["name"],
                    g["key_field"],
                    tuple(
                        FeatureDef(f["name"], float(f["default"]), float(f["min"]), float(f["max"]))
                        for f in g["features"]
                    ),
                )
                for g in data["groups"]
            )
            spec = cls(str(data["version"]), groups)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid feature spec: {exc!r}") from exc
        names = [f.name for g in groups for f in g.features]
        if len(set(names)) != len(names):
            raise ConfigError("feature names must be unique across groups")
        for g in groups:
            for f in g.features:
                if not (math.isfinite(f.default) and f.min <= f.default <= f.max):
                    raise ConfigError(f"feature {f.name}: default must be finite, in [min, max]")
        return spec

    @classmethod
    def load(cls, path: Path | None = None) -> FeatureSpec:
        path = path or DEFAULT_SPEC_PATH
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read feature spec {path}: {exc}") from exc
