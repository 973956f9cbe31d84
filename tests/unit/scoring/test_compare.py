"""`models compare`: per-variant statistics, quality only with enough labels, agreement per
shadow version joined by event id."""

from __future__ import annotations

import numpy as np

from services.scoring.compare import compare_report


def _pred(event: int, version: str, variant: str, score: float) -> dict[str, object]:
    return {"event_id": f"e{event}", "model_version": version, "variant": variant, "score": score}


def test_report_per_variant_and_per_shadow_version() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    champ = np.where(truth, 0.6, 0.2) + rng.normal(0, 0.1, 400)
    served = [_pred(i, "1", "champion", float(champ[i])) for i in range(400)]
    # v2 shadows the first half, v3 the second half (a new challenger mid-way).
    shadow = [_pred(i, "2", "shadow", float(champ[i])) for i in range(200)]
    shadow += [_pred(i, "3", "shadow", float(1 - champ[i])) for i in range(200, 400)]
    labels = {f"e{i}": bool(truth[i]) for i in range(0, 400, 2)}  # half the labels arrived
    report = compare_report(served, shadow, labels, 0.5)

    rows = {(r["model_version"], r["variant"]): r for r in report["variants"]}
    assert rows[("1", "champion")]["predictions"] == 400
    assert rows[("1", "champion")]["labelled"] == 200 and rows[("1", "champion")]["auc"] > 0.9
    assert rows[("3", "shadow")]["auc"] < 0.1  # the inverted shadow ranks everything backwards
    agreement = {a["shadow_version"]: a for a in report["shadow_agreement"]}
    assert agreement["2"]["n"] == 200 and agreement["2"]["mean_abs_diff"] == 0.0
    assert agreement["3"]["rank_correlation"] < -0.99


def test_no_quality_figures_from_a_handful_of_labels() -> None:
    served = [_pred(i, "1", "champion", 0.1 * (i % 10)) for i in range(100)]
    report = compare_report(served, [], {f"e{i}": i % 2 == 0 for i in range(10)}, 0.5)
    (row,) = report["variants"]
    assert "auc" not in row and row["labelled"] == 10
    assert report["shadow_agreement"] == []
