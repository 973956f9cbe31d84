"""Load a domain folder and check that its parts agree, with errors that name the part.

A domain folder holds the Avro schemas (``*.avsc``) with ``examples/``, the semantic rules
(``rules/<Record>.json``), the feature spec (``features.json``), ``domain.json`` (which record is
the event, the prediction and the label, the label's join key and target, the topics, the model
name, the drift features and the synthetic generator) and ``manifest.json`` (schema ids when no
registry is configured). The platform's own records (dead letters, drift signals, retrain
requests, model events) come from the repository's ``schemas/`` when the folder lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.codec.examples import load_example
from services.codec.schemas import RecordSchema, load_schemas
from services.core.errors import ConfigError
from services.core.settings import DOMAIN_FILE, Settings, domain_declares
from services.core.task import BINARY, TASKS, Task
from services.features.spec import ContextDef, FeatureSpec
from services.validation.rules import RecordRules

NUMERIC = {"int", "long", "float", "double"}
PREDICTION_FIELDS = (
    "prediction_id",
    "event_id",
    "score",
    "model_name",
    "model_version",
    "variant",
    "degraded",
    "missing_features",
    "event_time",
    "scored_at",
)


@dataclass(frozen=True, slots=True)
class LabelDef:
    """The delayed ground truth: its record, the field joining it to an event, and the outcome
    a model predicts (a boolean, a number or an enum, by the task)."""

    record: str
    join_key: str
    target: str


@dataclass(frozen=True, slots=True)
class Domain:
    """Everything one deployment declares about what it scores."""

    name: str
    folder: Path
    event_record: str
    prediction_record: str
    label: LabelDef
    spec: FeatureSpec
    rules: RecordRules
    records: dict[str, RecordSchema]
    generator: str | None
    # Declared by a binary domain (domain.json `prediction.decision_threshold`): predictions
    # then carry `decision` (score >= threshold). None: no decision is made here.
    decision_threshold: float | None = None
    task: Task = BINARY  # domain.json `task`: what the model predicts and the prediction carries

    @property
    def key_field(self) -> str:
        """The event field a score is about: input keys, canary routing and SDK keys use it."""
        return self.spec.key_field

    def example_events(self) -> list[dict[str, Any]]:
        """The event record's examples (``examples/<Record>/*.json``), in file order."""

        record = self.records[self.event_record]
        folder = self.folder / "examples" / self.event_record
        return [load_example(p, record.source) for p in sorted(folder.glob("*.json"))]


def _fields(record: RecordSchema) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in record.source["fields"]}


def _branches(avro_type: Any) -> list[Any]:
    """The non-null branches of a (possibly nullable) field type."""
    types = avro_type if isinstance(avro_type, list) else [avro_type]
    return [t for t in types if t != "null"]


def _base(avro_type: Any) -> str:
    """The primitive or complex type name of one branch ("enum", "long", "string", ...)."""
    branches = _branches(avro_type)
    if len(branches) != 1:
        return "union"
    t = branches[0]
    return str(t["type"]) if isinstance(t, dict) else str(t)


def _symbols(avro_type: Any) -> tuple[str, ...]:
    t = _branches(avro_type)[0]
    return tuple(t.get("symbols", ())) if isinstance(t, dict) else ()


def _need(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{where}: missing {key!r}")
    return data[key]


def check_context(d: ContextDef, fields: dict[str, Any], record: str) -> ContextDef:
    """Check one event feature against the event schema; an enum without declared symbols takes
    the schema's. Returns the (completed) definition."""
    where = f"features.json: context feature {d.name!r}"
    if d.field not in fields:
        raise ConfigError(f"{where} names field {d.field!r}, which {record} lacks")
    base = _base(fields[d.field])
    wanted = {
        "number": NUMERIC,
        "bool": {"boolean"},
        "enum": {"enum"},
        "category": {"string"},
        "hour": {"long"},
        "weekday": {"long"},
    }[d.kind]
    if base not in wanted:
        raise ConfigError(
            f"{where}: kind {d.kind} needs a {' or '.join(sorted(wanted))} field, "
            f"but {record}.{d.field} is {base}"
        )
    if d.kind == "enum":
        schema_symbols = _symbols(fields[d.field])
        if not d.symbols:
            d = replace(d, symbols=schema_symbols)
            d.check()
        unknown = [s for s in d.symbols if s not in schema_symbols]
        if unknown:
            raise ConfigError(f"{where}: symbols {unknown} are not in {record}.{d.field}")
    return d


def check_spec(spec: FeatureSpec, event: RecordSchema, prediction: RecordSchema) -> FeatureSpec:
    """The feature spec against the event and prediction schemas."""
    fields = _fields(event)
    for g in spec.groups:
        if g.key_field not in fields:
            raise ConfigError(
                f"features.json: group {g.name!r} is keyed by {g.key_field!r}, "
                f"which {event.name} lacks"
            )
        if fields[g.key_field] != "string":
            raise ConfigError(
                f"features.json: group {g.name!r}: entity key {event.name}.{g.key_field} must be "
                f"a (non-null) string, not {fields[g.key_field]!r}"
            )
    context = tuple(check_context(d, fields, event.name) for d in spec.context)
    if spec.key_field not in fields or fields[spec.key_field] != "string":
        raise ConfigError(f"features.json: key_field {spec.key_field!r} must be a string field")
    out_fields = _fields(prediction)
    for name in spec.carry:
        if name not in fields:
            raise ConfigError(f"features.json: carry field {name!r} is not in {event.name}")
        if name not in out_fields:
            raise ConfigError(
                f"features.json: carry field {name!r} is not in {prediction.name}: add it there"
            )
    return replace(spec, context=context)


def check_records(event: RecordSchema, prediction: RecordSchema) -> None:
    fields = _fields(event)
    if fields.get("event_id") != "string":
        raise ConfigError(f"{event.name}: needs a string field event_id (predictions key on it)")
    if _base(fields.get("event_time", "null")) != "long" or isinstance(fields["event_time"], list):
        raise ConfigError(f"{event.name}: needs a long field event_time (epoch milliseconds)")
    missing = [f for f in PREDICTION_FIELDS if f not in _fields(prediction)]
    if missing:
        raise ConfigError(f"{prediction.name}: lacks the prediction fields {missing}")


def check_rules(rules: RecordRules, event: RecordSchema) -> None:
    fields = _fields(event)
    if rules.record != event.name:
        raise ConfigError(f"rules/{event.name}.json: its record is {rules.record!r}")
    for rule in rules.fields:
        if rule.name not in fields:
            raise ConfigError(
                f"rules/{event.name}.json: a rule on field {rule.name!r}, which {event.name} lacks"
            )
    if rules.time_field is not None and rules.time_field not in fields:
        raise ConfigError(f"rules/{event.name}.json: time_window field {rules.time_field!r}?")


def check_label(label: LabelDef, records: dict[str, RecordSchema], kind: str = "binary") -> Task:
    """The label record against the declared task; returns the task (a multiclass task's
    classes are the target enum's symbols)."""
    if label.record not in records:
        raise ConfigError(f"{DOMAIN_FILE}: label record {label.record!r} has no .avsc")
    fields = _fields(records[label.record])
    if fields.get(label.join_key) != "string":
        raise ConfigError(f"{label.record}: join key {label.join_key!r} must be a string field")
    target = fields.get(label.target, "null")
    task = BINARY
    if kind == "binary" and target != "boolean":
        raise ConfigError(f"{label.record}: target {label.target!r} must be a boolean field")
    if kind == "regression" and (isinstance(target, list) or target not in NUMERIC):
        raise ConfigError(
            f"{label.record}: target {label.target!r} must be a (non-null) number field "
            "(int, long, float or double) for a regression task"
        )
    if kind == "regression":
        task = Task("regression")
    if kind == "multiclass":
        if isinstance(target, list) or _base(target) != "enum":
            raise ConfigError(
                f"{label.record}: target {label.target!r} must be a (non-null) enum field for a "
                "multiclass task: its symbols are the classes"
            )
        task = Task("multiclass", _symbols(target))
    for name in ("event_time", "label_time"):  # the label's lag is measured between them
        if _base(fields.get(name, "null")) != "long":
            raise ConfigError(f"{label.record}: needs a long field {name} (epoch milliseconds)")
    return task


def check_prediction(task: Task, prediction: RecordSchema) -> None:
    """The prediction record carries what the task needs: ``score`` a double (the probability,
    the value, or the top class's probability); a multiclass task adds ``predicted_class`` (a
    string, or an enum of exactly the classes) and ``probabilities`` (a map of doubles)."""
    fields = _fields(prediction)
    if fields.get("score") != "double":
        raise ConfigError(f"{prediction.name}: score must be a (non-null) double field")
    if task.kind != "multiclass":
        extra = [f for f in ("predicted_class", "probabilities") if f in fields]
        if extra:
            raise ConfigError(
                f"{prediction.name}: {extra} are for a multiclass task; this domain's task is "
                f"{task.kind}"
            )
        return
    top = fields.get("predicted_class")
    if (
        top is None
        or isinstance(top, list)
        or (top != "string" and not (_base(top) == "enum" and _symbols(top) == task.classes))
    ):
        raise ConfigError(
            f"{prediction.name}: a multiclass task needs the field "
            '{"name": "predicted_class", "type": "string"} (or an enum of the classes '
            f"{list(task.classes)}, in that order)"
        )
    probs = fields.get("probabilities")
    if not (
        isinstance(probs, dict) and probs.get("type") == "map" and probs.get("values") == "double"
    ):
        raise ConfigError(
            f"{prediction.name}: a multiclass task needs the field "
            '{"name": "probabilities", "type": {"type": "map", "values": "double"}} '
            "(class -> probability)"
        )


def load_domain(
    folder: Path, spec_path: Path | None = None, drift_features: tuple[str, ...] = ()
) -> Domain:
    """Load and check the domain in ``folder``.

    Raises:
        ConfigError: naming the file and the part that does not agree.
    """
    declared = domain_declares(folder)
    where = str(folder / DOMAIN_FILE)
    if not declared:
        raise ConfigError(f"{where} not found: a domain folder declares itself there")
    try:
        event_record = str(_need(_need(declared, "event", where), "record", where))
        prediction_record = str(declared.get("prediction", {}).get("record", "Prediction"))
        kind = declared.get("task", "binary")
        lab = _need(declared, "label", where)
        label = LabelDef(
            str(_need(lab, "record", where)),
            str(lab.get("join_key", "event_id")),
            str(_need(lab, "target", where)),
        )
    except (AttributeError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if kind not in TASKS:
        raise ConfigError(f"{where}: task {kind!r}: one of {', '.join(TASKS)}")
    records = load_schemas(folder)
    for name in (event_record, prediction_record):
        if name not in records:
            raise ConfigError(f"{where}: record {name!r} has no {name}.avsc in {folder}")
    event, prediction = records[event_record], records[prediction_record]
    check_records(event, prediction)
    task = check_label(label, records, kind)
    check_prediction(task, prediction)
    spec = check_spec(FeatureSpec.load(spec_path or folder / "features.json"), event, prediction)
    rules = RecordRules.load(event_record, folder / "rules")
    check_rules(rules, event)
    threshold = check_decision(declared.get("prediction", {}), prediction, where)
    if threshold is not None and task.kind != "binary":
        raise ConfigError(
            f"{where}: prediction.decision_threshold is for a binary task; this one is {task.kind}"
        )
    fields = _fields(event)
    for name in drift_features:
        if name not in fields or _base(fields[name]) not in NUMERIC:
            raise ConfigError(f"drift feature {name!r} is not a numeric field of {event_record}")
    return Domain(
        name=str(declared.get("name", folder.name)),
        folder=folder,
        event_record=event_record,
        prediction_record=prediction_record,
        label=label,
        spec=spec,
        rules=rules,
        records=records,
        generator=declared.get("generator"),
        decision_threshold=threshold,
        task=task,
    )


def check_decision(part: Any, prediction: RecordSchema, where: str) -> float | None:
    """A declared decision threshold: a number in [0, 1], and a prediction record with a
    nullable boolean ``decision`` field (default null, so older readers and writers agree)."""
    if not isinstance(part, dict) or part.get("decision_threshold") is None:
        return None
    value = part["decision_threshold"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: prediction.decision_threshold {value!r}: a number in [0, 1]")
    field = next((f for f in prediction.source["fields"] if f["name"] == "decision"), None)
    if field is None or field.get("type") not in (["null", "boolean"], ["boolean", "null"]):
        raise ConfigError(
            f"{prediction.name}: a decision threshold is declared: add the field "
            '{"name": "decision", "type": ["null", "boolean"], "default": null}'
        )
    return float(value)


_CACHE: dict[tuple[Path, Path | None, tuple[str, ...]], Domain] = {}


def domain_of(settings: Settings) -> Domain:
    """The checked domain ``settings`` serve (loaded once per folder)."""
    key = (settings.domain_dir, settings.features.spec_path, tuple(settings.drift.features))
    if key not in _CACHE:
        _CACHE[key] = load_domain(*key)
    return _CACHE[key]
