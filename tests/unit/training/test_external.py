"""Staging a model trained elsewhere: safe formats only, the spec's feature names in the spec's
order, a model of the domain's task, loaded exactly as a worker loads a version."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from services.core.errors import ConfigError, ModelLoadError
from services.core.task import Task
from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.training.external import stage

SPEC = FeatureSpec.from_dict(
    {
        "version": "t1",
        "groups": [
            {"name": "card", "key_field": "card_id", "features": [
                {"name": "a", "default": 0, "min": -9, "max": 9},
                {"name": "b", "default": 0, "min": -9, "max": 9}]},
        ],
        "context": [{"name": "amount", "kind": "number", "min": 0, "max": 1e6, "default": 0}],
    }
)  # fmt: skip
NAMES = ["a", "b", "amount"]
RNG = np.random.default_rng(4)
X = RNG.normal(size=(300, 3))
Y = (X[:, 0] + X[:, 2] > 0).astype(int)


def test_the_spec_order_is_the_one_written_here() -> None:
    assert list(feature_names(SPEC)) == NAMES


def test_a_skops_classifier_fitted_on_named_columns_is_staged(tmp_path: Path) -> None:
    model = LogisticRegression().fit(pd.DataFrame(X, columns=NAMES), Y)
    path = tmp_path / "m.skops"
    sio.dump(model, path)
    (tmp_path / "artifact").mkdir()
    loaded = stage(path, SPEC, 0.5, tmp_path / "artifact")
    assert loaded.metadata.flavor == "sklearn" and loaded.metadata.feature_names == tuple(NAMES)
    expected = model.predict_proba(pd.DataFrame(X[:5], columns=NAMES))[:, 1]
    np.testing.assert_allclose(loaded.predict(X[:5]), expected)


def test_a_lightgbm_text_model_is_staged_byte_for_byte(tmp_path: Path) -> None:
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1},
        lightgbm.Dataset(X, Y, feature_name=NAMES),
        num_boost_round=3,
    )
    path = tmp_path / "m.txt"
    booster.save_model(str(path))
    (tmp_path / "artifact").mkdir()
    stage(path, SPEC, 0.1, tmp_path / "artifact")
    assert (tmp_path / "artifact" / "model.txt").read_bytes() == path.read_bytes()


def _dump(model: object, path: Path) -> Path:
    sio.dump(model, path)
    return path


@pytest.mark.parametrize(
    "make, error, says",
    [
        (lambda d: d / "m.pkl", ConfigError, "pickle and joblib files are refused"),
        (
            lambda d: _dump(LogisticRegression().fit(X, Y), d / "m.skops"),
            ConfigError,
            "has no feature names",
        ),
        (
            lambda d: _dump(
                LogisticRegression().fit(pd.DataFrame(X, columns=["b", "a", "amount"]), Y),
                d / "m.skops",
            ),
            ConfigError,
            "the same names in another order",
        ),
        (
            lambda d: _dump(
                LogisticRegression().fit(pd.DataFrame(X, columns=["a", "b", "amt"]), Y),
                d / "m.skops",
            ),
            ConfigError,
            "missing ['amount'], unknown ['amt']",
        ),
        (
            lambda d: _dump(
                LinearRegression().fit(pd.DataFrame(X, columns=NAMES), Y), d / "m.skops"
            ),
            ConfigError,
            "is a regression model, but this domain's task is binary",
        ),
    ],
    ids=["pickle", "no-names", "order", "names", "regressor"],
)
def test_a_model_that_does_not_fit_the_spec_is_refused(
    tmp_path: Path, make: object, error: type[Exception], says: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    if path.suffix == ".pkl":
        path.write_bytes(pickle.dumps(LogisticRegression()))
    (tmp_path / "artifact").mkdir()
    with pytest.raises(error) as refused:
        stage(path, SPEC, 0.5, tmp_path / "artifact")
    assert says in str(refused.value)


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    import functools

    from sklearn.preprocessing import FunctionTransformer

    path = _dump(FunctionTransformer(func=functools.partial(print)), tmp_path / "m.skops")
    (tmp_path / "artifact").mkdir()
    with pytest.raises(ModelLoadError, match="untrusted types"):
        stage(path, SPEC, 0.5, tmp_path / "artifact")


def _lightgbm(tmp_path: Path, params: dict[str, object], y: np.ndarray) -> Path:
    booster = lightgbm.train(
        {"verbose": -1, **params}, lightgbm.Dataset(X, y, feature_name=NAMES), num_boost_round=3
    )
    path = tmp_path / "m.txt"
    booster.save_model(str(path))
    return path


def test_a_model_of_the_domains_task_is_staged_and_another_refused(tmp_path: Path) -> None:
    regression = Task("regression")
    three = Task("multiclass", ("a", "b", "c"))
    value = X[:, 0] * 3 + X[:, 2]
    classes = np.digitize(X[:, 0], [-0.5, 0.5])
    (tmp_path / "artifact").mkdir()
    path = _lightgbm(tmp_path, {"objective": "regression"}, value)
    loaded = stage(path, SPEC, float(value.mean()), tmp_path / "artifact", regression)
    assert loaded.metadata.task == regression and loaded.predict(X[:4]).shape == (4,)
    with pytest.raises(ConfigError, match="a regression model, but this domain's task is binary"):
        stage(path, SPEC, 0.5, tmp_path / "artifact")
    path = _lightgbm(tmp_path, {"objective": "multiclass", "num_class": 3}, classes)
    loaded = stage(path, SPEC, 0.0, tmp_path / "artifact", three, (0.3, 0.4, 0.3))
    assert loaded.predict(X[:4]).shape == (4, 3)
    np.testing.assert_allclose(loaded.predict(X[:4]).sum(axis=1), 1.0)
    with pytest.raises(ConfigError, match="the model has 3 classes; this domain's task has 4"):
        stage(path, SPEC, 0.0, tmp_path / "artifact", Task("multiclass", ("a", "b", "c", "d")))
    with pytest.raises(ConfigError, match="a multiclass model, but this domain's task is regr"):
        stage(path, SPEC, 0.0, tmp_path / "artifact", regression)
    path = _dump(
        HistGradientBoostingRegressor(max_iter=5).fit(pd.DataFrame(X, columns=NAMES), value),
        tmp_path / "r.skops",
    )
    loaded = stage(path, SPEC, 0.0, tmp_path / "artifact", regression)
    assert loaded.predict(X[:4]).shape == (4,)


# -- multiclass class order -------------------------------------------------------------------
# The label enum's order is not alphabetical, as in the delivery bands: scikit-learn sorts string
# labels, so a model fitted on the names has its probability columns in another order.
BANDS = Task("multiclass", ("low", "mid", "high"))
BAND = np.digitize(X[:, 0] + X[:, 2], [-0.7, 0.7])  # the index in BANDS' order


def test_a_skops_model_whose_classes_are_in_another_order_is_refused(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame = pd.DataFrame(X, columns=NAMES)
    names = np.array(BANDS.classes)[BAND]
    (tmp_path / "artifact").mkdir()
    sorted_names = _dump(
        HistGradientBoostingClassifier(max_iter=5).fit(frame, names), tmp_path / "n.skops"
    )
    with pytest.raises(ConfigError) as refused:
        stage(sorted_names, SPEC, 0.0, tmp_path / "artifact", BANDS)
    assert "in the order ['high', 'low', 'mid'], this domain's label enum in ['low', " in str(
        refused.value
    ) and "\n" not in str(refused.value)
    # On the class indexes in the enum's order: staged, and its columns are the enum's.
    coded = _dump(HistGradientBoostingClassifier(max_iter=5).fit(frame, BAND), tmp_path / "c.skops")
    loaded = stage(coded, SPEC, 0.0, tmp_path / "artifact", BANDS)
    assert loaded.predict(X[:4]).shape == (4, 3)


class _NoRegistry:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"a refused model must not reach the registry ({name})")


def test_a_lightgbm_model_trained_on_shuffled_labels_is_refused_on_its_holdout(
    tmp_path: Path,
) -> None:
    from services.training.external import register_external

    shuffled = np.array([2, 0, 1])[BAND]  # low -> 2, mid -> 0, high -> 1
    params = {"objective": "multiclass", "num_class": 3}
    path = _lightgbm(tmp_path, params | {"num_boost_round": 30}, shuffled)
    with pytest.raises(ConfigError) as refused:
        register_external(
            _NoRegistry(),  # type: ignore[arg-type]  # never reached
            SPEC,
            path,
            holdout=(X, BAND),
            task=BANDS,
        )
    assert (
        "look like the classes (mid, high, low), not the label enum's order (low, mid, high)"
        in (str(refused.value))
    )
    # The same model trained on the enum's indexes passes the check (and reaches the registry).
    from services.training.external import check_class_columns
    from services.training.external import stage as staged

    good = _lightgbm(tmp_path, params | {"num_boost_round": 30}, BAND)
    (tmp_path / "artifact").mkdir()
    loaded = staged(good, SPEC, 0.0, tmp_path / "artifact", BANDS, (0.3, 0.4, 0.3))
    check_class_columns(loaded.predict(X), BAND, BANDS)
