"""`streamscore models compare`: how the variants behave on the same stream (pure).

Shadow agreement joins the champion's served predictions with the shadow's by event id; per
variant (version and champion/challenger/shadow) it reports volume, mean score, degraded share
and, where labels have arrived, the task's online quality (AUC and log loss; MAE and RMSE; log
loss and accuracy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.task import BINARY, Task
from services.scoring.rollout import agreement

MIN_LABELS_FOR_QUALITY = 50  # below this an online AUC is noise, so none is reported


def online_quality(scores: Sequence[float], outcomes: Sequence[bool]) -> dict[str, float]:
    """AUC and log loss of scores against labels (AUC only with both classes present).

    >>> q = online_quality([0.9, 0.2, 0.8, 0.1], [True, False, True, False])
    >>> q["auc"], round(q["log_loss"], 3)
    (1.0, 0.164)
    """
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(outcomes, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    out = {"labelled": float(len(y)), "log_loss": float(log_loss(y, p, labels=[0, 1]))}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, p))
    return out


def compare_report(
    served: Sequence[Mapping[str, Any]],
    shadow: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Any],
    threshold: float,
    task: Task = BINARY,
) -> dict[str, Any]:
    """Per-variant statistics and champion-vs-shadow agreement over the predictions given.
    ``labels`` maps an event id to the label's target (a boolean, a number or a class, as the
    ``task`` has it); quality and agreement are the task's (no decision flips for regression,
    class changes for multiclass)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for p in [*served, *shadow]:
        groups[(str(p["model_version"]), str(p["variant"]))].append(p)
    variants = []
    for (version, variant), preds in sorted(groups.items()):
        scores = [float(p["score"]) for p in preds]
        row: dict[str, Any] = {
            "model_version": version,
            "variant": variant,
            "predictions": len(preds),
            "mean_score": float(np.mean(scores)),
            "degraded_share": sum(bool(p.get("degraded")) for p in preds) / len(preds),
        }
        known = [p for p in preds if p["event_id"] in labels]
        if len(known) >= MIN_LABELS_FOR_QUALITY:
            y = [labels[p["event_id"]] for p in known]
            if task.kind == "binary":
                row |= online_quality([float(p["score"]) for p in known], y)
            else:
                quality = task.evaluate(task.target(y), _outputs(task, known))
                row |= {"labelled": quality.pop("rows")} | quality
        else:
            row["labelled"] = float(len(known))
        variants.append(row)
    by_event = {p["event_id"]: p for p in served}
    at = threshold if task.kind == "binary" else None
    report: dict[str, Any] = {
        "task": task.kind,
        "variants": variants,
        "threshold": at,
        "shadow_agreement": [],
    }
    for version in sorted({str(s["model_version"]) for s in shadow}, key=_version_key):
        pairs = [
            (by_event[s["event_id"]], s)
            for s in shadow
            if str(s["model_version"]) == version and s["event_id"] in by_event
        ]
        if pairs:
            champ = _outputs(task, [a for a, _ in pairs])
            shad = _outputs(task, [b for _, b in pairs])
            ag = agreement(champ, shad, at)
            report["shadow_agreement"].append(
                {"shadow_version": version}
                | ag.to_dict()
                | {"flip_rate": ag.decision_flips / ag.n if ag.n else 0.0}
            )
    return report


def _outputs(task: Task, predictions: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float64]:
    """The predictions' outputs as the model gave them: the scores, or (multiclass) a row of
    class probabilities each, in the classes' order."""
    if task.kind == "multiclass":
        return np.asarray(
            [[float(p["probabilities"][c]) for c in task.classes] for p in predictions],
            dtype=np.float64,
        )
    return np.asarray([float(p["score"]) for p in predictions], dtype=np.float64)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
