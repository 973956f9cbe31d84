"""The pages people read (README, CONTRIBUTING, CHANGELOG, docs/) stay true to the code.

- every link inside the repository resolves, anchors included, and no page links outside it;
- every table parses: each row has the header's number of cells (a stray `|` splits one);
- every `streamscore ...` command shown names a real command and only flags it has;
- every `STREAMSCORE_*` variable named is a real setting (read from the settings model);
- no README line outside code is over 120 characters;
- claims that were once wrong stay fixed (alert count, layout table, exit codes, help texts).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import pytest

from services.core.settings import Settings, iter_env_vars
from streams.cli import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    p
    for p in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    + list((ROOT / "docs").rglob("*.md"))
    if p.is_file()
)
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Line:
    page: Path
    number: int
    text: str
    fence: str | None  # the language of the code block it is in; None outside code

    def where(self) -> str:
        return f"{rel(self.page)}:{self.number}"


@cache
def lines(page: Path) -> tuple[Line, ...]:
    """Every line of a page, each marked with the code block (if any) it belongs to."""
    out: list[Line] = []
    fence: str | None = None
    marker = ""
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(text)
        if fence is None and opened:
            fence, marker = opened.group(2).lower(), opened.group(1)
            continue
        if fence is not None and text.strip().startswith(marker):
            fence = None
            continue
        out.append(Line(page, number, text, fence))
    return tuple(out)


def prose(page: Path) -> Iterator[Line]:
    return (line for line in lines(page) if line.fence is None)


def without_code_spans(text: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", text)


def test_the_pages_exist() -> None:
    for name in ("README.md", "LICENSE", "CONTRIBUTING.md", "CHANGELOG.md", "docs/index.md"):
        assert (ROOT / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert len(PAGES) > 15


# -- links ------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    kept = "".join(
        c
        for c in text
        if c in " -_" or unicodedata.category(c)[0] in ("L", "N") or c in "\u0300\u036f"
    )
    return kept.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line.text)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line.text))
    return frozenset(out)


def links() -> Iterator[tuple[Line, str]]:
    for page in PAGES:
        for line in prose(page):
            for target in LINK.findall(without_code_spans(line.text)):
                yield line, target


def test_every_link_inside_the_repository_resolves() -> None:
    broken = []
    for line, target in links():
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # outside the repository: the next test
        path, _, anchor = target.partition("#")
        resolved = (line.page.parent / path).resolve() if path else line.page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{line.where()}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{line.where()}: {target} (no heading #{anchor} in {rel(resolved)})")
    assert broken == []
    assert sum(1 for _ in links()) > 50


def test_every_page_of_docs_is_linked_from_the_index() -> None:
    """docs/index.md lists every page by task: a page it does not link is found by no one."""
    index = ROOT / "docs" / "index.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for line in prose(index)
        for target in LINK.findall(without_code_spans(line.text))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)
    }
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md")} - {index.resolve()}
    assert sorted(rel(p) for p in pages - linked) == []


def test_no_page_links_outside_the_repository() -> None:
    """The docs stand alone. An address written as code (`http://127.0.0.1:5000`) is an
    example to type, not a link."""
    outside = [
        f"{line.where()}: {m}"
        for page in PAGES
        for line in prose(page)
        for m in re.findall(r"(?:https?|ftp)://\S+|mailto:\S+", without_code_spans(line.text))
    ]
    assert outside == []


# -- tables -----------------------------------------------------------------------------------


def cells(row: str) -> list[str]:
    """A table row's cells. As GitHub does, an unescaped `|` splits a cell even inside `code`."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return re.split(r"(?<!\\)\|", row)


def tables() -> Iterator[list[Line]]:
    for page in PAGES:
        block: list[Line] = []
        for line in (*lines(page), None):
            if line is not None and line.fence is None and line.text.lstrip().startswith("|"):
                block.append(line)
                continue
            if block:
                yield block
            block = []


def test_every_table_parses() -> None:
    problems = []
    count = 0
    for table in tables():
        count += 1
        head = table[0]
        width = len(cells(head.text))
        if len(table) < 2 or not all(
            re.fullmatch(r"\s*:?-{3,}:?\s*", c) for c in cells(table[1].text)
        ):
            problems.append(f"{head.where()}: no |---| line under the header")
            continue
        for row in table[1:]:
            if len(cells(row.text)) != width:
                problems.append(
                    f"{row.where()}: {len(cells(row.text))} cells, the header has {width} "
                    "(escape a | inside a cell as \\|)"
                )
    assert problems == []
    assert count > 30


# -- commands ---------------------------------------------------------------------------------


def command_lines() -> Iterator[tuple[Line, str]]:
    """Every `streamscore ...` shown: lines of shell blocks (continuations joined, prompts and
    comments dropped) and code spans in the text."""
    for page in PAGES:
        held = ""
        for line in lines(page):
            if line.fence is None:
                for span in re.findall(r"(`+)(.+?)\1", line.text):
                    text = span[1].strip()
                    if re.match(r"^(\$ )?streamscore\s", text):
                        yield line, text.removeprefix("$ ")
                continue
            if line.fence not in SHELL_LANGS:
                continue
            text = held + line.text
            if text.rstrip().endswith("\\"):
                held = text.rstrip()[:-1] + " "
                continue
            held = ""
            text = re.sub(r"^\s*(\$\s+)?", "", text)
            text = re.sub(r"^([A-Z_][A-Z0-9_]*=\S*\s+)+", "", text)  # VAR=value streamscore ...
            text = re.sub(r"^(\S*/)?(bin/)?streamscore\s", "streamscore ", text)
            if text.startswith("streamscore ") or text == "streamscore":
                yield line, text


def tokens(text: str) -> list[str]:
    text = text.split(" #")[0].replace("\\|", " ")
    text = re.split(r"\s(?:\||&&|;|>|2>|<)\s", f" {text} ")[0]
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    return [w.strip("[]()") for w in words[1:] if w.strip("[]()")]


def placeholder(word: str) -> bool:
    """A word that stands for something: V, TOPIC, <id>, ..., a choice like a|b."""
    return "..." in word or word.startswith("<") or "|" in word or word.isupper()


def options(command: click.Command) -> dict[str, click.Parameter]:
    out = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
    return out | {"-h": click.Option(["-h"], is_flag=True), "--help": click.Option(["--help"])}


def takes_value(param: click.Parameter) -> bool:
    return isinstance(param, click.Option) and not param.is_flag and not param.count


def check_command(words: list[str]) -> list[str]:
    """What is wrong with `streamscore WORDS`: an unknown command, or a flag the command lacks."""
    command: click.Command = cli
    rest = list(words)
    problems = []
    while rest:
        word = rest.pop(0)
        if word.startswith("-") and not word.lstrip("-").isdigit():
            flag = word.split("=")[0]
            param = options(command).get(flag)
            if param is None and isinstance(command, click.Group) and "run" in command.commands:
                command, rest = command.commands["run"], [word, *rest]  # replay X is replay run X
                continue
            if param is None:
                problems.append(f"no flag {flag} for `{command.name}`")
            elif takes_value(param) and "=" not in word and rest:
                rest.pop(0)
            continue
        if isinstance(command, click.Group):
            found = command.get_command(click.Context(command), word)
            if found is None and "run" in command.commands and not placeholder(word):
                found, rest = command.get_command(click.Context(command), "run"), [word, *rest]
            if found is None:
                if not placeholder(word):
                    problems.append(f"no command {word!r} in `{command.name}`")
                break
            command = found
    return problems


def test_every_command_in_the_docs_exists_with_the_flags_it_shows() -> None:
    shown = list(command_lines())
    assert len(shown) > 100
    assert {line.page.name for line, _ in shown} >= {"README.md", "cli.md", "operations.md"}
    wrong = [
        f"{line.where()}: {text}: {problem}"
        for line, text in shown
        for problem in check_command(tokens(text))
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("streamscore models canary 7 --percent 10 -m why", None),
        ("streamscore --json lag --by-topic", None),
        ("streamscore replay --from-time 1h --model 7 --sandbox s --execute", None),
        ("streamscore models list | show [V]", None),
        ("streamscore modles list", "no command 'modles'"),
        ("streamscore models canary 7 --percnt 10", "no flag --percnt"),
        ("streamscore tail TOPIC [-n N] [--from-beginning \\| --form-time T]", "--form-time"),
    ],
)
def test_the_command_check_catches_what_it_should(text: str, problem: str | None) -> None:
    found = check_command(tokens(text))
    assert found == [] if problem is None else any(problem in p for p in found), found


# -- settings ---------------------------------------------------------------------------------


def test_every_variable_named_is_a_real_setting() -> None:
    """Names come from the settings model, so a renamed field fails here until the pages say
    the new name. `STREAMSCORE_X__*` stands for a group. The one accepted alias is documented
    in configuration.md only; the pages use the canonical names."""
    real = {name for name, _ in iter_env_vars()}
    wrong = []
    for page in PAGES:
        for line in lines(page):
            # Not inside a longer name: DAG_STREAMSCORE_BIN is the DAG's, not a setting.
            for name in re.findall(r"(?<![A-Za-z0-9_])STREAMSCORE_[A-Z0-9_]*[A-Z0-9_*]", line.text):
                if name.endswith("*") or name.endswith("_"):
                    ok = name == "STREAMSCORE_*" or any(
                        r.startswith(name.rstrip("*")) for r in real
                    )
                elif name == "STREAMSCORE_SCHEMA_REGISTRY_URL":
                    ok = page.name == "configuration.md"
                else:
                    ok = name in real
                if not ok:
                    wrong.append(f"{line.where()}: {name}")
    assert wrong == []


# -- the README -------------------------------------------------------------------------------


def test_no_readme_line_outside_code_is_over_120_characters() -> None:
    long = [
        f"{line.where()}: {len(line.text)}"
        for line in prose(ROOT / "README.md")
        if len(line.text) > 120
    ]
    assert long == []


def test_the_readme_is_short_and_reaches_a_prediction() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 130
    for needed in ("make demo", "streamscore produce", "streamscore tail", "LICENSE", "mermaid"):
        assert needed in text, needed


# -- claims that were wrong once --------------------------------------------------------------

# Each phrase was in the pages or the help while untrue; see CHANGELOG.md.
STALE = {
    "later issue": "the control plane, rollout and observability exist",
    "scoring-path issue": "pages describe the code, not the issues that built it",
    "registry issue": "pages describe the code, not the issues that built it",
    "drift issue": "pages describe the code, not the issues that built it",
    "/health/ready": "the readiness endpoint is /readyz",
    "user id hash": "canary routing is by the domain's key field",
    "by user id": "canary routing is by the domain's key field",
    "runs we looked at": "figures name the command that produced them",
    "~5x": "performance.md measured 3.65x",
    "make demo --no-drift": "make passes no flags to the demo: streamscore demo --no-drift",
    "during this review": "pages describe the code, not how it was made",
}


def help_texts() -> Iterator[tuple[str, str]]:
    def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
        yield " ".join(path), command.help or ""
        for param in command.params:
            yield " ".join(path), getattr(param, "help", None) or ""
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                sub = command.get_command(click.Context(command), name)
                assert sub is not None
                yield from walk(sub, (*path, name))

    yield from walk(cli, ("streamscore",))


def test_stale_claims_stay_gone() -> None:
    found = []
    sources = [(rel(p), p.read_text(encoding="utf-8")) for p in PAGES]
    sources.append(("pyproject.toml", (ROOT / "pyproject.toml").read_text(encoding="utf-8")))
    sources += [(f"`{path} --help`", text) for path, text in help_texts()]
    for where, text in sources:
        flat = " ".join(text.split())
        found += [f"{where}: {p!r} ({why})" for p, why in STALE.items() if p in flat]
    assert found == []


def test_help_names_no_domain_and_no_fixed_schema_folder() -> None:
    """The code serves any domain (docs/adapting.md): its help texts name none of the feed's
    records and no path inside the feed's folder."""
    words = re.compile(r"\b(users?|items?|interactions?|engagement|schemas/manifest\.json)\b", re.I)
    found = [f"{path}: {text}" for path, text in help_texts() if words.search(text)]
    assert found == []


def test_the_alert_count_in_the_docs_is_the_rules_file() -> None:
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    count = len(re.findall(r"^\s*- alert:", rules, re.M))
    claims = [
        (f"{line.where()}", int(n))
        for page in PAGES
        for line in prose(page)
        for n in re.findall(r"\b(\d+) alert(?:s| rules)\b", line.text)
    ]
    assert claims, "architecture.md says how many alerts there are"
    assert [c for c in claims if c[1] != count] == []


def test_the_layout_table_names_every_package() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {m for m in re.findall(r"^\| `(services/\w+|streams/\w*|load/)`", text, re.M)}
    packages = {
        f"services/{p.name}" for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()
    }
    assert sorted(packages - rows) == []
    assert sorted(r for r in rows if r.startswith("services/") and r not in packages) == []


def test_the_exit_code_table_names_every_command_that_exits_2_for_its_input() -> None:
    """`produce` and `schemas register` refuse input with exit 2: the table must say so."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if re.match(r"^\s*\| 2 \|", line))
    saying = {path.removeprefix("streamscore ") for path, h in help_texts() if "exit 2" in h}
    assert {"produce", "schemas register"} <= saying
    assert [c for c in sorted(saying) if f"`{c}`" not in row] == []


def test_the_ports_table_lists_every_port_setting_with_its_default() -> None:
    """operations.md's Ports table: every setting that opens a port has a row, and the row's
    first port is that setting's default (`streamscore config show`)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("### Ports", 1)[1].split("\n#", 1)[0]
    rows = [cells(r) for r in section.splitlines() if r.startswith("| ") and "---" not in r]
    moved_by = {}
    for row in rows[1:]:
        for name in re.findall(r"STREAMSCORE_[A-Z0-9_]+", row[-1]):
            moved_by[name] = row[0]
    ports = {name for name, _ in iter_env_vars() if name.endswith("PORT")}
    assert ports and ports <= set(moved_by), ports - set(moved_by)
    dumped = Settings().model_dump()
    for name in ports:
        group, field = name.removeprefix("STREAMSCORE_").lower().split("__")
        first = re.match(r"\d+", moved_by[name].strip())
        assert first and int(first.group()) == dumped[group][field], (name, moved_by[name])
