"""The feature spec: entity groups looked up in the store, and the features taken from the event.

One spec serves loading, training and scoring, so a feature means the same thing everywhere. No
feature is named in code: a domain declares its own in its folder's ``features.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


ContextKind = Literal["number", "bool", "enum", "category", "hour", "weekday"]
KINDS: tuple[str, ...] = ("number", "bool", "enum", "category", "hour", "weekday")


@dataclass(frozen=True, slots=True)
class ContextDef:
    """One feature taken from an event field (a context feature), and how it is encoded.

    - ``number``: the value; ``bool``: 1 or 0;
    - ``enum``: the symbol's index (``codes``) or one column per symbol (``onehot``);
    - ``category`` (a string): hashed into ``buckets``, or its index in ``vocabulary`` (a value
      outside it gets ``len(vocabulary)``);
    - ``hour`` (of the day) / ``weekday`` (Monday is 0) of an epoch-millisecond UTC field.

    A missing or null field gets ``default`` (``None`` means unknown: NaN for a number or a code,
    no column set for one-hot); when ``flag`` is set the feature's name is listed among the
    event's missing features, as a missing entity's group is.
    """

    name: str
    field: str
    kind: ContextKind
    default: float | str | bool | None = None
    min: float = -math.inf
    max: float = math.inf
    symbols: tuple[str, ...] = ()  # enum symbols, or a category's vocabulary
    encoding: Literal["codes", "onehot"] = "codes"
    buckets: int = 0  # a hashed category's bucket count
    flag: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        """Matrix columns of this feature: one, or one per symbol for one-hot."""
        if self.kind == "enum" and self.encoding == "onehot":
            # "name__SYMBOL": LightGBM and its compiler (lleaves) read "=" in a name as syntax.
            return tuple(f"{self.name}__{s}" for s in self.symbols)
        return (self.name,)

    @property
    def width(self) -> int:
        return len(self.columns)

    def bounds(self) -> tuple[float, float]:
        """The range every encoded value lies in (training refuses values outside it)."""
        if self.kind == "number":
            return self.min, self.max
        if self.kind == "enum":
            return (0, 1) if self.encoding == "onehot" else (0, len(self.symbols) - 1)
        if self.kind == "category":
            return (0, self.buckets - 1) if self.buckets else (0, len(self.symbols))
        if self.kind == "hour":
            return 0, 23
        if self.kind == "weekday":
            return 0, 6
        return 0, 1

    def fill(self) -> float:
        """The encoded default (NaN for unknown); one-hot defaults are handled per column."""
        d = self.default
        if d is None:
            return math.nan
        if self.kind == "enum":
            return float(self.symbols.index(str(d)))
        if self.kind == "category" and isinstance(d, str):
            return math.nan
        return float(d)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextDef:
        name = str(data["name"])
        kind = str(data.get("kind", "number"))
        if kind not in KINDS:
            raise ConfigError(f"context feature {name}: kind must be one of {', '.join(KINDS)}")
        symbols = tuple(str(s) for s in data.get("symbols", data.get("vocabulary", ())))
        default = data.get("default")
        out = cls(
            name=name,
            field=str(data.get("field", name)),
            kind=kind,  # type: ignore[arg-type]  # checked against KINDS above
            default=default,
            min=float(data.get("min", -math.inf)),
            max=float(data.get("max", math.inf)),
            symbols=symbols,
            encoding=data.get("encoding", "codes"),
            buckets=int(data.get("buckets", 0)),
            flag=bool(data.get("flag", True)),
        )
        out.check()
        return out

    def check(self) -> None:
        """Raise ``ConfigError`` for a definition that cannot encode (checked at load)."""
        where = f"context feature {self.name}"
        if self.encoding not in ("codes", "onehot"):
            raise ConfigError(f"{where}: encoding must be codes or onehot")
        if self.kind == "number":
            if self.default is not None and not (
                isinstance(self.default, int | float)
                and self.min <= float(self.default) <= self.max
            ):
                raise ConfigError(f"{where}: default must be a number in [min, max], or null")
        if self.kind == "enum" and self.symbols and self.default is not None:
            if str(self.default) not in self.symbols:
                raise ConfigError(f"{where}: default {self.default!r} is not one of its symbols")
        if self.kind == "category":
            if bool(self.buckets) == bool(self.symbols):
                raise ConfigError(f"{where}: give either buckets (hashed) or a vocabulary")
            if self.buckets < 0:
                raise ConfigError(f"{where}: buckets must be positive")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """All groups, versioned: the version is part of every Redis key we write.

    ``context`` are the features taken from the event. ``key_field`` is the event field a
    score is about (canary routing is sticky by it; default: the first group's key), and
    ``carry`` the event fields copied into each prediction (default: every group's key).
    """

    version: str
    groups: tuple[GroupSpec, ...]
    context: tuple[ContextDef, ...] = ()
    key_field: str = "event_id"
    carry: tuple[str, ...] = field(default_factory=tuple)

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise ConfigError(f"feature spec {self.version} has no group {name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Build and check a spec (names unique, defaults finite and within range).

        >>> spec = FeatureSpec.from_dict({"version": "v1", "groups": [{"name": "user",
        ...     "key_field": "who", "features": [{"name": "a", "default": 0, "min": -1,
        ...     "max": 1}]}]})
        >>> spec.group("user").names
        ['a']
        """
        try:
            context = tuple(ContextDef.from_dict(c) for c in data.get("context", ()))
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
            keys = tuple(dict.fromkeys(g.key_field for g in groups))
            spec = cls(
                str(data["version"]),
                groups,
                context,
                str(data.get("key_field", keys[0] if keys else "event_id")),
                tuple(str(c) for c in data.get("carry", keys)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid feature spec: {exc!r}") from exc
        names = [f.name for g in groups for f in g.features] + [
            c for d in context for c in d.columns
        ]
        if len(set(names)) != len(names):
            raise ConfigError("feature names must be unique across groups and context features")
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
