"""The prediction task a domain declares, and what every stage takes from it.

``binary`` (the default): a probability of the positive class, log loss and AUC, the base rate
as the last fallback. ``regression``: a value, MAE and RMSE, the training mean. ``multiclass``:
a probability per class (the label's Avro enum symbols, in order) and the top class, multi-class
log loss and accuracy, the class prior. Pure numpy: the worker, training, the control plane and
the shells all ask the same object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.core.errors import ConfigError

TaskKind = Literal["binary", "regression", "multiclass"]
TASKS: tuple[TaskKind, ...] = ("binary", "regression", "multiclass")
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] for log loss


@dataclass(frozen=True, slots=True)
class Task:
    """One domain's task; ``classes`` only for multiclass (the label enum's symbols).

    >>> Task("multiclass", ("a", "b", "c")).describe()
    'multiclass (a, b, c)'
    """

    kind: TaskKind = "binary"
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ConfigError(f"task {self.kind!r}: one of {', '.join(TASKS)}")
        if self.kind == "multiclass" and len(self.classes) < 3:
            raise ConfigError(
                f"a multiclass task needs at least 3 classes, not {list(self.classes)} "
                "(two classes are a binary task)"
            )
        if self.kind != "multiclass" and self.classes:
            raise ConfigError(f"a {self.kind} task has no classes")

    @property
    def width(self) -> int:
        """Outputs per row: 1, or one probability per class."""
        return len(self.classes) if self.kind == "multiclass" else 1

    def describe(self) -> str:
        return f"multiclass ({', '.join(self.classes)})" if self.classes else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.kind} | ({"classes": list(self.classes)} if self.classes else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        """From a model's metadata; a version written before tasks existed is binary."""
        return cls(d.get("task", "binary"), tuple(d.get("classes", ())))

    # -- outputs ------------------------------------------------------------------------------

    def score(self, outputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The one number per row a prediction's ``score`` carries: the probability (binary),
        the value (regression), the top class's probability (multiclass).

        >>> Task("multiclass", ("a", "b", "c")).score(np.array([[0.2, 0.5, 0.3]])).tolist()
        [0.5]
        """
        return outputs.max(axis=1) if outputs.ndim == 2 else outputs

    def top(self, outputs: npt.NDArray[np.float64]) -> list[str]:
        """Multiclass: the top class per row (ties: the first in the enum's order).

        >>> Task("multiclass", ("a", "b", "c")).top(np.array([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3]]))
        ['b', 'a']
        """
        names = np.asarray(self.classes, dtype=object)
        return list(names[outputs.argmax(axis=1)])

    # -- labels -------------------------------------------------------------------------------

    def target(self, values: Iterable[Any]) -> npt.NDArray[Any]:
        """Label values as a model's target: 0/1, the number, or the class's index.

        >>> Task("multiclass", ("a", "b", "c")).target(["c", "a"]).tolist()
        [2, 0]
        >>> Task("regression").target([1, 2.5]).tolist()
        [1.0, 2.5]
        """
        values = list(values)
        if self.kind == "regression":
            return np.asarray([float(v) for v in values], dtype=np.float64)
        if self.kind == "multiclass":
            index = {c: i for i, c in enumerate(self.classes)}
            unknown = sorted({str(v) for v in values if v not in index})
            if unknown:
                raise ValueError(f"labels {unknown[:5]} are not among the classes {self.classes}")
            return np.asarray([index[v] for v in values], dtype=np.int64)
        return np.asarray([int(bool(v)) for v in values], dtype=np.int64)

    def constant(self, y: npt.NDArray[Any]) -> tuple[float, ...]:
        """The last rung of the fallback ladder, from the training target: the base rate, the
        training mean, or the class prior.

        >>> Task("multiclass", ("a", "b", "c")).constant(np.array([0, 0, 1, 2]))
        (0.5, 0.25, 0.25)
        """
        if self.kind == "multiclass":
            counts = np.bincount(y.astype(np.int64), minlength=self.width)[: self.width]
            return tuple(float(c) for c in counts / max(len(y), 1))
        return (float(np.mean(y)) if len(y) else 0.0,)

    def constant_rung(self) -> str:
        """The name of that rung, as fallback counts and metrics give it."""
        return {"binary": "base_rate", "regression": "training_mean", "multiclass": "class_prior"}[
            self.kind
        ]

    def fill(self, constant: tuple[float, ...], n: int) -> npt.NDArray[np.float64]:
        """``n`` rows answered by the constant rung.

        >>> Task("multiclass", ("a", "b", "c")).fill((0.5, 0.25, 0.25), 2).shape
        (2, 3)
        """
        if self.width == 1:
            return np.full(n, constant[0], dtype=np.float64)
        return np.tile(np.asarray(constant, dtype=np.float64), (n, 1))

    # -- metrics ------------------------------------------------------------------------------

    @property
    def loss(self) -> str:
        """The metric of the per-event error the control plane watches and compares (lower is
        better): log loss, or for regression the absolute error (its mean: MAE)."""
        return "mae" if self.kind == "regression" else "log_loss"

    @property
    def primary(self) -> tuple[str, bool]:
        """The metric a promotion compares, and whether higher is better."""
        return {
            "binary": ("auc", True),
            "regression": ("mae", False),
            "multiclass": ("log_loss", False),
        }[self.kind]

    def evaluate(self, y: npt.NDArray[Any], outputs: npt.NDArray[np.float64]) -> dict[str, float]:
        """The task's metrics of ``outputs`` against ``y`` (binary's are the training module's:
        AUC needs scikit-learn, and this module stays numpy only).

        >>> m = Task("regression").evaluate(np.array([1.0, 3.0]), np.array([2.0, 3.0]))
        >>> m["mae"], round(m["rmse"], 3)
        (0.5, 0.707)
        >>> m = Task("multiclass", ("a", "b", "c")).evaluate(
        ...     np.array([0, 2]), np.array([[0.8, 0.1, 0.1], [0.5, 0.2, 0.3]]))
        >>> m["accuracy"], round(m["log_loss"], 3)
        (0.5, 0.714)
        """
        n = float(len(y))
        if self.kind == "regression":
            err = outputs - y
            return {
                "mae": float(np.abs(err).mean()) if n else float("nan"),
                "rmse": float(np.sqrt((err**2).mean())) if n else float("nan"),
                "mean_prediction": float(outputs.mean()) if n else float("nan"),
                "mean_target": float(y.mean()) if n else float("nan"),
                "rows": n,
            }
        if self.kind == "multiclass":
            p = np.clip(outputs, EPS, 1.0)
            p = p / p.sum(axis=1, keepdims=True)
            picked = p[np.arange(len(y)), y.astype(np.int64)] if n else np.empty(0)
            return {
                "log_loss": float(-np.log(picked).mean()) if n else float("nan"),
                "accuracy": float((outputs.argmax(axis=1) == y).mean()) if n else float("nan"),
                "mean_top_probability": float(outputs.max(axis=1).mean()) if n else float("nan"),
                "rows": n,
            }
        raise ValueError("binary metrics are services.training.train.evaluate's")


BINARY = Task()
