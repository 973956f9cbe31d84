"""Declarative record rules (``schemas/rules/<Record>.json``) and the pure check over a batch.

Numbers must be finite (no NaN/inf) unless a rule says ``"allow_nan": true``; strings have length
caps; ids must be non-empty; the event time must sit in a window around *now*, which is passed in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.codec.columns import column
from services.core.errors import ConfigError
from services.core.outcomes import Reason, Rejected, Stage

DEFAULT_RULES_DIR = Path(__file__).resolve().parents[2] / "schemas" / "rules"


@dataclass(frozen=True, slots=True)
class FieldRule:
    name: str
    min: float | None = None
    max: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    allow_nan: bool = False


@dataclass(frozen=True, slots=True)
class RecordRules:
    """All rules of one record type."""

    record: str
    fields: tuple[FieldRule, ...]
    time_field: str | None = None
    max_age_ms: int = 0
    max_future_ms: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordRules:
        try:
            fields = tuple(
                FieldRule(
                    name,
                    rule.get("min"),
                    rule.get("max"),
                    rule.get("min_length"),
                    rule.get("max_length"),
                    re.compile(rule["pattern"]) if "pattern" in rule else None,
                    bool(rule.get("allow_nan", False)),
                )
                for name, rule in data.get("fields", {}).items()
            )
            window = data.get("time_window")
            return cls(
                str(data["record"]),
                fields,
                window["field"] if window else None,
                int(window["max_age_days"] * 86_400_000) if window else 0,
                int(window["max_future_seconds"] * 1000) if window else 0,
            )
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise ConfigError(f"invalid rules for {data.get('record')!r}: {exc!r}") from exc

    @classmethod
    def load(cls, record: str, rules_dir: Path | None = None) -> RecordRules:
        path = (rules_dir or DEFAULT_RULES_DIR) / f"{record}.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read rules {path}: {exc}") from exc


def _reject(reason: Reason, detail: str, field: str) -> Rejected:
    return Rejected(Stage.VALIDATE, reason, detail, field)


def validate_one(record: Mapping[str, Any], rules: RecordRules, now_ms: int) -> Rejected | None:
    """The first broken rule of ``record``, or None when it is valid.

    >>> rules = RecordRules.from_dict({"record": "R", "fields": {"n": {"min": 0}}})
    >>> validate_one({"n": -1}, rules, 0).reason
    <Reason.OUT_OF_RANGE: 'out_of_range'>
    >>> validate_one({"n": float("nan")}, rules, 0).reason
    <Reason.NOT_FINITE: 'not_finite'>
    >>> validate_one({"n": 3}, rules, 0) is None
    True
    """
    for rule in rules.fields:
        value = record.get(rule.name)
        if value is None:
            continue  # absent optional field: the schema already decided it may be null
        if isinstance(value, str):
            if rule.min_length is not None and len(value) < rule.min_length:
                return _reject(Reason.MISSING_VALUE, f"{rule.name} is empty", rule.name)
            if rule.max_length is not None and len(value) > rule.max_length:
                return _reject(
                    Reason.TOO_LONG,
                    f"{rule.name} has {len(value)} characters, max {rule.max_length}",
                    rule.name,
                )
            if rule.pattern is not None and not rule.pattern.fullmatch(value):
                return _reject(
                    Reason.BAD_FORMAT,
                    f"{rule.name} does not match {rule.pattern.pattern}",
                    rule.name,
                )
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                if not rule.allow_nan:
                    return _reject(Reason.NOT_FINITE, f"{rule.name} is {value}", rule.name)
                continue
            if (rule.min is not None and value < rule.min) or (
                rule.max is not None and value > rule.max
            ):
                return _reject(
                    Reason.OUT_OF_RANGE,
                    f"{rule.name}={value} outside [{rule.min}, {rule.max}]",
                    rule.name,
                )
    if rules.time_field is not None:
        t = record.get(rules.time_field)
        if isinstance(t, int) and not (
            now_ms - rules.max_age_ms <= t <= now_ms + rules.max_future_ms
        ):
            return _reject(
                Reason.TIME_OUT_OF_WINDOW,
                f"{rules.time_field}={t} is outside [now-{rules.max_age_ms // 86_400_000}d, "
                f"now+{rules.max_future_ms // 1000}s]",
                rules.time_field,
            )
    return None


SMALL_BATCH = 16


def validate_many(
    records: Sequence[Mapping[str, Any]],
    rules: RecordRules,
    now_ms: int | npt.NDArray[np.int64],
) -> list[Rejected | None]:
    """``validate_one`` over a batch, in order, checked column by column.

    Each rule is checked for the whole batch at once (numpy over numbers and lengths; a
    pattern once per distinct value). Only the records some rule flags go through
    ``validate_one``, which names their first broken rule; so the result is exactly
    ``[validate_one(r, rules, now_ms) for r in records]``, faster.

    ``now_ms`` is one time for the batch, or one per record (a replay validates each event
    against the time the broker stored it, so that a replay's verdicts do not depend on when
    it runs).

    >>> rules = RecordRules.from_dict({"record": "R", "fields": {"n": {"min": 0}}})
    >>> [r.reason.value if r else None for r in validate_many(
    ...     [{"n": 1}, {"n": -1}, {"n": None}, {"n": float("inf")}], rules, 0)]
    [None, 'out_of_range', None, 'not_finite']
    """
    n = len(records)
    if isinstance(now_ms, int | np.integer):
        now_ms = int(now_ms)
    else:
        at = [int(x) for x in now_ms]
        if len(at) != n:
            raise ValueError(f"{len(at)} times for {n} records")
        flags = _flags(records, rules, np.asarray(at, dtype=np.float64))
        return [validate_one(records[i], rules, at[i]) if flags[i] else None for i in range(n)]
    if n < SMALL_BATCH:  # numpy's fixed cost per call outweighs a few records
        return [validate_one(r, rules, now_ms) for r in records]
    flagged = _flags(records, rules, now_ms)
    return [validate_one(records[i], rules, now_ms) if flagged[i] else None for i in range(n)]


def _flags(
    records: Sequence[Mapping[str, Any]],
    rules: RecordRules,
    now_ms: int | npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_]:
    """Per record, whether some rule may refuse it (``validate_one`` decides which)."""
    n = len(records)
    flagged = np.zeros(n, dtype=bool)
    for rule in rules.fields:
        flagged |= _flag(column(records, rule.name), rule)
    if rules.time_field is not None:
        times = column(records, rules.time_field)
        if {type(t) for t in times} <= {int, type(None)}:
            t = np.asarray([np.nan if v is None else v for v in times], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                flagged |= (t < now_ms - rules.max_age_ms) | (t > now_ms + rules.max_future_ms)
        else:
            flagged[:] = True  # mixed types: let validate_one decide every record
    return flagged


def _flag(values: list[Any], rule: FieldRule) -> npt.NDArray[np.bool_]:
    """Records whose value may break ``rule`` (a superset is fine: validate_one decides)."""
    kinds = {type(v) for v in values}
    present = np.asarray([v is not None for v in values], dtype=bool)
    if kinds <= {str, type(None)}:
        lengths = np.asarray([len(v) if v is not None else 0 for v in values])
        bad = np.zeros(len(values), dtype=bool)
        if rule.min_length is not None:
            bad |= lengths < rule.min_length
        if rule.max_length is not None:
            bad |= lengths > rule.max_length
        if rule.pattern is not None:
            match = rule.pattern.fullmatch
            ok = {v: match(v) is not None for v in set(values) if v is not None}
            bad |= np.asarray([v is not None and not ok[v] for v in values], dtype=bool)
        flagged: npt.NDArray[np.bool_] = bad & present
        return flagged
    if kinds <= {int, float, type(None)}:
        x = np.asarray([0.0 if v is None else v for v in values], dtype=np.float64)
        finite = np.isfinite(x)
        bad = ~finite if not rule.allow_nan else np.zeros(len(values), dtype=bool)
        if rule.min is not None:
            bad |= finite & (x < rule.min)
        if rule.max is not None:
            bad |= finite & (x > rule.max)
        out: npt.NDArray[np.bool_] = bad & present
        return out
    return present  # bools, bytes, mixed: checked one by one
