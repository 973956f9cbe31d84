"""Imports flow one way: streams -> services/<domain> -> services/core; no faust in services."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_services_import_neither_streams_nor_faust_nor_load() -> None:
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "services").rglob("*.py")
        for m in _imports(p)
        if m.split(".")[0] in {"streams", "faust", "load"}
    }
    assert sorted(bad) == []


def test_core_depends_on_no_other_service_domain() -> None:
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "services" / "core").rglob("*.py")
        for m in _imports(p)
        if m.startswith("services.") and not m.startswith("services.core")
    }
    assert sorted(bad) == []


def test_no_pickle_or_eval_in_production_code() -> None:
    offenders = []
    for package in ("services", "streams"):
        for p in (ROOT / package).rglob("*.py"):
            text = p.read_text(encoding="utf-8")
            if "pickle" in _imports(p) or "eval(" in text.replace("literal_eval(", ""):
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []


def test_top_level_layout() -> None:
    for name in (
        "pyproject.toml",
        "README.md",
        "services",
        "schemas",
        "streams",
        "tests",
        "docker-compose.kafka.yml",
        "load",
        "docs",
        "Makefile",
        ".ci/run",
        "deploy/kafka/pom.xml",
    ):
        assert (ROOT / name).exists(), name
