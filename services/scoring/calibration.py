"""A version's score calibration: a monotone map from the model's raw probability to a
calibrated one, stored in its metadata (so the artifact digest covers it) and applied after
every predict, compiled or not. Pure numpy.

- ``isotonic``: a non-decreasing step function fitted to the outcomes, served as linear
  interpolation between its knots (``x`` to ``y``);
- ``sigmoid`` (Platt scaling): ``1 / (1 + exp(-(a * logit(p) + b)))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Method = Literal["isotonic", "sigmoid"]
EPS = 1e-7


@dataclass(frozen=True, slots=True)
class Calibration:
    """One fitted calibration map.

    >>> Calibration("sigmoid", a=1.0, b=0.0).apply(np.array([0.2, 0.5])).round(6).tolist()
    [0.2, 0.5]
    >>> iso = Calibration("isotonic", x=(0.0, 0.5, 1.0), y=(0.1, 0.3, 0.9))
    >>> iso.apply(np.array([0.25, 0.75])).round(6).tolist()
    [0.2, 0.6]
    """

    method: Method
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.method == "isotonic":
            return np.asarray(np.interp(p, self.x, self.y), dtype=np.float64)
        q = np.clip(p, EPS, 1 - EPS)
        z = np.clip(self.a * np.log(q / (1 - q)) + self.b, -50.0, 50.0)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"method": "sigmoid", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if d["method"] == "isotonic":
            return cls("isotonic", tuple(map(float, d["x"])), tuple(map(float, d["y"])))
        if d["method"] == "sigmoid":
            return cls("sigmoid", a=float(d["a"]), b=float(d["b"]))
        raise ValueError(f"unknown calibration method {d['method']!r}")


def fit_calibration(
    method: Method, p: npt.NDArray[np.float64], y: npt.NDArray[np.int64]
) -> Calibration:
    """Fit ``method`` on raw probabilities ``p`` and outcomes ``y`` (rows the model was not
    trained on).

    >>> p = np.linspace(0.01, 0.99, 200)
    >>> y = (np.random.default_rng(0).random(200) < p / 2).astype(np.int64)
    >>> cal = fit_calibration("isotonic", p, y)
    >>> bool(cal.apply(np.array([0.9]))[0] < 0.9)
    True
    """
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibration(
            "isotonic",
            tuple(float(v) for v in iso.X_thresholds_),
            tuple(float(v) for v in iso.y_thresholds_),
        )
    from sklearn.linear_model import LogisticRegression

    q = np.clip(p, EPS, 1 - EPS)
    z = np.log(q / (1 - q)).reshape(-1, 1)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
    return Calibration("sigmoid", a=float(lr.coef_[0][0]), b=float(lr.intercept_[0]))
