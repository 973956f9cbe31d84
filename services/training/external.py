"""Register a model trained outside streamscore: a LightGBM text model or a skops file.

It is loaded the way the workers load a version (sha256, skops allowlist), its feature names and
their order are checked against the domain's spec, and an optional holdout gives it metrics.
After that it is a version like any other: shadow, canary, promote, roll back.
"""

from __future__ import annotations

import itertools
import math
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.errors import ConfigError, ModelLoadError
from services.core.task import BINARY, Task
from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.model import (
    METADATA_FILE,
    MODEL_FILES,
    LoadedModel,
    ModelMetadata,
    artifact_digest,
    load_artifacts,
    sha256_file,
)
from services.scoring.registry import MlflowRegistry
from services.training.train import OBJECTIVES, evaluate_task

FLAVORS = {".txt": "lightgbm", ".skops": "sklearn"}


@dataclass(frozen=True, slots=True)
class Registered:
    version: str
    run_id: str
    champion: bool
    flavor: str
    sha256: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "champion": self.champion,
            "flavor": self.flavor,
            "artifact_sha256": self.sha256,
            "metrics": self.metrics,
        }


def flavor_of(path: Path) -> str:
    """``lightgbm`` for a ``.txt`` text model, ``sklearn`` for a ``.skops`` file.

    >>> flavor_of(Path("m.txt")), flavor_of(Path("m.skops"))
    ('lightgbm', 'sklearn')
    """
    flavor = FLAVORS.get(path.suffix.lower())
    if flavor is None:
        raise ConfigError(
            f"{path.name}: give a LightGBM text model (.txt) or a scikit-learn model saved with "
            "skops (.skops); pickle and joblib files are refused (unsafe to load)"
        )
    return flavor


def names_of(model: Any, flavor: str) -> tuple[str, ...]:
    """The feature names a fitted model was trained with, in its column order."""
    if flavor == "lightgbm":
        return tuple(model.feature_name())
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ConfigError(
            "the scikit-learn model has no feature names: fit it on a pandas DataFrame whose "
            "columns are the spec's features (`streamscore domain show` lists them, in order)"
        )
    return tuple(str(n) for n in names)


def task_of(model: Any, flavor: str) -> str:
    """The task a fitted model was trained for: ``binary``, ``regression`` or ``multiclass``
    (``other`` for what no task serves, such as LightGBM's ranking or one-vs-all objectives)."""
    if flavor == "lightgbm":
        objective = str(model.dump_model(num_iteration=1).get("objective", "")).split(" ")[0]
        for kind, names in OBJECTIVES.items():
            if objective in names:
                return kind
        return f"other ({objective or 'unknown'} objective)"
    if not hasattr(model, "predict_proba"):
        return "regression"
    return "binary" if len(getattr(model, "classes_", ())) == 2 else "multiclass"


def check_task(model: Any, flavor: str, task: Task) -> None:
    """The model must be trained for the domain's task (a multiclass one on its classes).

    Raises:
        ConfigError: one line naming the model's task and the domain's.
    """
    have = task_of(model, flavor)
    if have != task.kind:
        raise ConfigError(
            f"the model is a {have} model, but this domain's task is {task.kind}: "
            "train it for that task (the domain declares it in domain.json `task`)"
        )
    if task.kind == "multiclass":
        n = int(model.num_model_per_iteration()) if flavor == "lightgbm" else len(model.classes_)
        if n != task.width:
            raise ConfigError(
                f"the model has {n} classes; this domain's task has {task.width} "
                f"({', '.join(task.classes)})"
            )


def check_class_order(model: Any, flavor: str, task: Task) -> None:
    """A scikit-learn multiclass model's ``classes_`` must be the label enum's symbols in the
    enum's order, or the class indexes 0 to k-1 (its probability columns follow ``classes_``;
    served under the enum's order, another order would swap the classes' probabilities).

    Raises:
        ConfigError: one line naming both orders.
    """
    if task.kind != "multiclass" or flavor != "sklearn":
        return
    have = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
    want = list(task.classes)
    if have == want or have == list(range(task.width)):
        return
    fix = (
        "fit it on the class indexes in the label enum's order ("
        + ", ".join(f"{i} = {c}" for i, c in enumerate(want))
        + ")"
    )
    if sorted(map(str, have)) == sorted(want):
        raise ConfigError(
            f"the model's classes are in the order {have}, this domain's label enum in {want}: "
            f"served, its probabilities would go to the wrong classes; {fix}"
        )
    raise ConfigError(f"the model's classes {have} are not this domain's {want}: {fix}")


PERMUTED_RATIO = 0.8  # another column order this much lower in log loss: the order is wrong
MAX_PERMUTED_CLASSES = 6  # 720 orders to try; beyond, only the scikit-learn check applies


def check_class_columns(outputs: npt.NDArray[np.float64], y: npt.NDArray[Any], task: Task) -> None:
    """On a holdout: the model's probability columns must be the enum's classes in order. A
    LightGBM model knows its classes only as indexes, so a model fitted on labels coded in
    another order scores its holdout far better with its columns read in that order; refuse it.

    >>> t = Task("multiclass", ("a", "b", "c"))
    >>> p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 10)
    >>> check_class_columns(p, np.array([0, 1, 2] * 10), t)
    >>> check_class_columns(p, np.array([1, 0, 2] * 10), t)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    services.core.errors.ConfigError: the model's probability columns look like ... (b, a, c)...

    Raises:
        ConfigError: one line naming the order the holdout points to.
    """
    if task.kind != "multiclass" or len(y) == 0 or task.width > MAX_PERMUTED_CLASSES:
        return
    rows = np.arange(len(y))
    clipped = np.clip(outputs, 1e-7, 1.0)

    def loss(order: tuple[int, ...]) -> float:
        # Column j read as class order[j]: class c's probability is column order.index(c).
        inverse = np.argsort(order)
        return float(-np.log(clipped[rows, inverse[y]]).mean())

    identity = tuple(range(task.width))
    best = min(itertools.permutations(identity), key=loss)
    if best != identity and loss(best) < PERMUTED_RATIO * loss(identity):
        named = ", ".join(task.classes[i] for i in best)
        raise ConfigError(
            f"the model's probability columns look like the classes ({named}), not the label "
            f"enum's order ({', '.join(task.classes)}): holdout log loss {loss(best):.4f} read "
            f"that way against {loss(identity):.4f} as served; fit it on the class indexes in "
            "the enum's order"
        )


def stage(
    path: Path,
    spec: FeatureSpec,
    base_rate: float,
    directory: Path,
    task: Task = BINARY,
    class_prior: tuple[float, ...] = (),
) -> LoadedModel:
    """Copy the model file into ``directory`` as an artifact (metadata with its sha256), load it
    as a worker would, and check it against ``spec`` and ``task``.

    Raises:
        ConfigError: not a format we load safely, feature names or order differ from the spec,
            not a model of the domain's task.
        ModelLoadError: the file does not load (corrupt, untrusted skops types).
    """
    flavor = flavor_of(path)
    if task == BINARY and not 0.0 <= base_rate <= 1.0:
        raise ConfigError(f"base rate {base_rate} must lie in [0, 1]")
    if not math.isfinite(base_rate):
        raise ConfigError(f"the fallback constant {base_rate} must be a finite number")
    target = directory / MODEL_FILES[flavor]
    shutil.copyfile(path, target)
    names = feature_names(spec)
    prior = class_prior or (tuple([1.0 / task.width] * task.width) if task.width > 1 else ())
    meta = ModelMetadata(
        flavor, names, spec.version, sha256_file(target), base_rate, None, None, task, prior
    )
    (directory / METADATA_FILE).write_text(meta.to_json(), encoding="utf-8")
    try:
        loaded = load_artifacts(directory, "external", "new", artifact_digest(directory))
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from exc
    have = names_of(loaded.model, flavor)
    if have != names:
        missing = [n for n in names if n not in have]
        extra = [n for n in have if n not in names]
        detail = (
            f"missing {missing}, unknown {extra}"
            if missing or extra
            else "the same names in another order"
        )
        raise ConfigError(
            f"{path.name}: its features do not match spec {spec.version} ({detail}); the spec's "
            f"order is {list(names)}"
        )
    check_task(loaded.model, flavor, task)
    check_class_order(loaded.model, flavor, task)
    probe = np.zeros((1, len(names)), dtype=np.float64)  # it must score a row at all
    scores = loaded.predict(probe)
    if not np.isfinite(scores).all():
        raise ConfigError(f"{path.name}: scores a row as {scores.tolist()}")
    if task.kind != "regression" and not ((scores >= 0) & (scores <= 1)).all():
        raise ConfigError(f"{path.name}: scores a row outside [0, 1]: {scores.tolist()}")
    return loaded


def register_external(
    registry: MlflowRegistry,
    spec: FeatureSpec,
    path: Path,
    *,
    holdout: tuple[npt.NDArray[np.float64], npt.NDArray[Any]] | None = None,
    base_rate: float | None = None,
    compare_to: LoadedModel | None = None,
    make_champion_if_none: bool = True,
    task: Task = BINARY,
) -> Registered:
    """Register ``path`` as a new version of a ``task`` model. ``holdout`` (features, targets)
    gives it the task's metrics and its fallback constant (the base rate, the mean, the class
    prior: the last rung of the fallback ladder) when ``base_rate`` is not given."""
    prior: tuple[float, ...] = ()
    if task.kind == "multiclass" and base_rate is not None:
        raise ConfigError(
            "--base-rate is for binary and regression tasks: a --holdout file "
            "gives a multiclass model its class prior"
        )
    if base_rate is None:
        if holdout is None or len(holdout[1]) == 0:
            with tempfile.TemporaryDirectory(prefix="streamscore-register-") as tmp:
                stage(path, spec, 0.0, Path(tmp), task)  # the file's own problems come first
            raise ConfigError("give --base-rate, or a --holdout file to measure it")
        constant = task.constant(holdout[1])
        base_rate = constant[0] if task.width == 1 else 0.0
        prior = constant if task.width > 1 else ()
    source_sha = sha256_file(path)
    with tempfile.TemporaryDirectory(prefix="streamscore-register-") as tmp:
        loaded = stage(path, spec, base_rate, Path(tmp), task, prior)
        flavor = loaded.metadata.flavor
        metrics: dict[str, float] = {}
        if holdout is not None and len(holdout[1]):
            X, y = holdout
            outputs = loaded.predict(X)
            check_class_columns(outputs, y, task)
            held = evaluate_task(task, y, outputs)
            metrics = {f"holdout_{k}": v for k, v in held.items()}
            metrics["holdout_rows"] = float(len(y))
            if compare_to is not None:
                compared = evaluate_task(task, y, compare_to.predict(X))
                metrics |= {f"champion_holdout_{k}": v for k, v in compared.items()}
        digest = artifact_digest(Path(tmp))
        tags = {
            "feature_spec_version": spec.version,
            "origin": "external",
            "source_file": path.name,
            "source_sha256": source_sha,
            "python": platform.python_version(),
            "artifact_sha256": digest,
        }
        params = {"flavor": flavor, "origin": "external", "base_rate": base_rate, "task": task.kind}
        run_id, source = registry.log_run(params, metrics, tags, Path(tmp), f"register-{flavor}")
    version = registry.register(
        run_id,
        source,
        digest,
        {
            "flavor": flavor,
            "feature_spec_version": spec.version,
            "origin": "external",
            "source_file": path.name,
            "source_sha256": source_sha,
        },
    )
    champion = False
    if make_champion_if_none and registry.alias_version("champion") is None:
        registry.set_alias("champion", version)
        champion = True
    return Registered(version, run_id, champion, flavor, digest, metrics)
