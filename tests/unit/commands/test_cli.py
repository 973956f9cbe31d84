"""The CLI as a script sees it: JSON results, masked secrets, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.codec.schemas import DEFAULT_SCHEMAS_DIR
from services.core.settings import TopicSettings
from streams.cli import cli
from streams.topics import topic_table


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_topics_json_is_the_table() -> None:
    code, out = run("topics", "--json")
    assert code == 0
    data = json.loads(out)
    assert [(t["name"], t["partitions"]) for t in data] == [
        (t.name, t.partitions) for t in topic_table(TopicSettings())
    ]
    assert data[0]["subject"] == "feed.interactions.v1-value"


def test_global_and_leaf_json_flags_are_equivalent() -> None:
    assert run("--json", "topics")[1] == run("topics", "--json")[1]


def test_config_show_masks_secrets() -> None:
    code, out = run(
        "config", "show", "--json", env={"STREAMSCORE_KAFKA__SASL_PASSWORD": "s3cr3t-value"}
    )
    assert code == 0
    assert "s3cr3t-value" not in out
    assert json.loads(out)["kafka"]["sasl_password"] == "**********"


def test_flags_override_env_in_config_show() -> None:
    code, out = run(
        "--bootstrap-servers",
        "flag:1",
        "config",
        "show",
        "--json",
        env={"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "env:1"},
    )
    assert code == 0 and json.loads(out)["effective"]["kafka_bootstrap"] == "flag:1"


def test_schemas_check_passes_on_the_committed_contract() -> None:
    code, out = run("schemas", "check", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["problems"] == [] and data["schemas"] == 8 and data["examples_ok"] >= 8


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, target)
    return target


def test_schemas_check_fails_loudly_on_a_malformed_example(schemas_copy: Path) -> None:
    example = schemas_copy / "examples" / "Interaction" / "home_feed_ios.json"
    data = json.loads(example.read_text())
    data["position"] = "third"
    (schemas_copy / "examples" / "Interaction" / "broken.json").write_text(json.dumps(data))
    code, out = run(
        "schemas",
        "check",
        "--json",
        env={"STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR": str(schemas_copy)},
    )
    assert code == 1
    problems = json.loads(out)["problems"]
    assert len(problems) == 1
    assert "broken.json" in problems[0] and "position" in problems[0]


def test_schemas_check_fails_when_a_schema_changed_without_registering(
    schemas_copy: Path,
) -> None:
    path = schemas_copy / "Label.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "weight", "type": "double", "default": 1.0})
    path.write_text(json.dumps(schema))
    env = {"STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR": str(schemas_copy)}
    code, out = run("schemas", "check", "--json", env=env)
    assert code == 1
    assert any("feed.labels.v1-value" in p for p in json.loads(out)["problems"])
    # Registering adds version 2 with a new id, after which the contract holds again.
    code, out = run("schemas", "register", "--json", env=env)
    labels = next(r for r in json.loads(out) if r["subject"] == "feed.labels.v1-value")
    assert (labels["version"], labels["id"], labels["added"]) == (2, 10, True)
    assert run("schemas", "check", env=env)[0] == 0


def test_schemas_register_refuses_an_incompatible_change(schemas_copy: Path) -> None:
    path = schemas_copy / "Label.avsc"
    schema = json.loads(path.read_text())
    next(f for f in schema["fields"] if f["name"] == "engaged")["type"] = "string"
    path.write_text(json.dumps(schema))
    env = {"STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR": str(schemas_copy)}
    code, out = run("schemas", "check", "--json", env=env)
    assert code == 1
    assert any(
        "Label.engaged: boolean cannot be read as string" in p for p in json.loads(out)["problems"]
    )
    before = (schemas_copy / "manifest.json").read_text()
    result = CliRunner().invoke(cli, ["schemas", "register"], env=env)
    assert "not FULL compatible" in str(result.exception)
    assert (schemas_copy / "manifest.json").read_text() == before  # nothing written


@pytest.mark.parametrize("level", ["FULL", "FORWARD"])
def test_schemas_check_refuses_removing_a_required_field(schemas_copy: Path, level: str) -> None:
    path = schemas_copy / "Interaction.avsc"
    schema = json.loads(path.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "country"]
    path.write_text(json.dumps(schema))
    env = {
        "STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR": str(schemas_copy),
        "STREAMSCORE_SCHEMA_REGISTRY__COMPATIBILITY": level,
    }
    code, out = run("schemas", "check", "--json", env=env)
    assert code == 1
    assert any(
        "Interaction.country: field removed, and it had no default" in p
        for p in json.loads(out)["problems"]
    )


def test_version() -> None:
    from importlib.metadata import version

    code, out = run("--version")
    assert code == 0 and out.strip() == f"streamscore, version {version('streamscore')}"


def test_lag_against_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "--bootstrap-servers", "127.0.0.1:9", "lag"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cannot read consumer lag from 127.0.0.1:9")
    )


def test_schemas_check_lints_a_new_domain_folder_before_any_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "payments-copy"
    shutil.copytree(DEFAULT_SCHEMAS_DIR / "domains" / "payments", folder)
    (folder / "manifest.json").unlink()
    env = {"STREAMSCORE_DOMAIN": str(folder)}
    code, out = run("schemas", "check", "--json", env=env)
    assert code == 0, out
    data = json.loads(out)
    assert data["problems"] == [] and data["ok"] is True
    assert "payments.transactions.v1-value" in data["unregistered"]
    # It still lints: a broken example of the new folder fails the check.
    example = next((folder / "examples" / "Transaction").glob("*.json"))
    broken = json.loads(example.read_text()) | {"amount": "twelve"}
    (folder / "examples" / "Transaction" / "broken.json").write_text(json.dumps(broken))
    code, out = run("schemas", "check", "--json", env=env)
    assert code == 1
    [problem] = json.loads(out)["problems"]
    assert "broken.json" in problem and "amount" in problem
    assert not (folder / "manifest.json").exists()  # checking never registers
