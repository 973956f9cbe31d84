"""docs/configuration.md lists exactly the variables the settings model reads."""

from __future__ import annotations

import re
from pathlib import Path

from services.core.settings import iter_env_vars

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(re.findall(r"`(STREAMSCORE_[A-Z0-9_]+)`", DOC.read_text(encoding="utf-8")))
    model = {name for name, _ in iter_env_vars()}
    aliases = {"STREAMSCORE_SCHEMA_REGISTRY_URL"}
    assert sorted(model - documented) == [], "undocumented settings"
    assert sorted(documented - model - aliases) == [], "documented settings that do not exist"


def test_every_reason_code_is_explained_in_the_runbook() -> None:
    from services.core.outcomes import Reason

    runbook = (DOC.parent / "operations.md").read_text(encoding="utf-8")
    assert [r.value for r in Reason if f"| `{r.value}` |" not in runbook] == []
