"""The supply-chain targets without the network: deploy/supply-chain/audit.py's decisions on
pip-audit's reports (a stand-in pip-audit writes them), and `make sbom`'s command on the lock."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "deploy" / "supply-chain" / "audit.py"
BIN = Path(sys.executable).parent


def _fake_pip_audit(tmp_path: Path, report: dict[str, Any] | None, stderr: str = "") -> Path:
    """A pip-audit that writes ``report`` to its -o file (none: it fails as on no network)."""
    exe = tmp_path / "pip-audit"
    body = (
        f"import json, sys\nargs = sys.argv\nreport = {report!r}\n"
        "if report is None:\n"
        f"    sys.stderr.write({stderr!r})\n    sys.exit(1)\n"
        "open(args[args.index('-o') + 1], 'w').write(json.dumps(report))\n"
        "sys.exit(1 if any(d.get('vulns') for d in report['dependencies']) else 0)\n"
    )
    exe.write_text(f"#!{sys.executable}\n{body}")
    exe.chmod(0o755)
    return exe


@pytest.fixture(autouse=True)
def advisory_host() -> Iterator[str]:
    """A listening socket standing in for the advisory service's host, so the connection
    check passes without the network (a test that wants it out of reach names a closed port)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        ADDRESS[0] = f"127.0.0.1:{listener.getsockname()[1]}"
        yield ADDRESS[0]


ADDRESS = [""]


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _audit(
    tmp_path: Path, exe: Path, *extra: str, lock_text: str = "six==1.16.0 --hash=sha256:00\n"
) -> subprocess.CompletedProcess[str]:
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock_text)
    if "--advisory-address" not in extra:
        extra = ("--advisory-address", ADDRESS[0], *extra)
    if "--ignore-file" not in extra:
        extra = ("--ignore-file", str(tmp_path / "no-ignores.toml"), *extra)
    return subprocess.run(
        [sys.executable, str(AUDIT), "--pip-audit", str(exe), *extra, str(lock)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CLEAN = {"dependencies": [{"name": "six", "version": "1.16.0", "vulns": []}], "fixes": []}
VULNERABLE = {
    "dependencies": [
        {"name": "six", "version": "1.16.0", "vulns": []},
        {
            "name": "jinja2",
            "version": "3.1.2",
            "vulns": [{"id": "PYSEC-2024-0001", "fix_versions": ["3.1.3"]}],
        },
    ],
    "fixes": [],
}
SKIPPED = {
    "dependencies": [
        {"name": "six", "version": "1.16.0", "vulns": []},
        {"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ],
    "fixes": [],
}


def test_a_clean_audit_says_what_it_checked(tmp_path: Path) -> None:
    ran = _audit(tmp_path, _fake_pip_audit(tmp_path, CLEAN))
    assert ran.returncode == 0, ran.stderr
    assert (
        "pip-audit (pypi): 1 packages in" in ran.stdout and "no known vulnerabilities" in ran.stdout
    )


@pytest.mark.parametrize("extra", [(), ("--require-advisories",)])
def test_a_known_vulnerability_always_fails(tmp_path: Path, extra: tuple[str, ...]) -> None:
    ran = _audit(tmp_path, _fake_pip_audit(tmp_path, VULNERABLE), *extra)
    assert ran.returncode == 1
    assert "jinja2 3.1.2: PYSEC-2024-0001 (fixed in 3.1.3)" in ran.stderr


def test_skipped_packages_are_not_audited_loudly_and_fail_only_when_required(
    tmp_path: Path,
) -> None:
    exe = _fake_pip_audit(tmp_path, SKIPPED)
    ran = _audit(tmp_path, exe)
    assert ran.returncode == 0 and "no known vulnerabilities" not in ran.stdout
    assert "NOT AUDITED: 1 of 2 locked packages were not audited" in ran.stderr
    assert "aiohttp: Dependency not found on PyPI" in ran.stderr
    assert _audit(tmp_path, exe, "--require-advisories").returncode == 1


def test_an_unreachable_service_is_not_audited_loudly(tmp_path: Path) -> None:
    error = "requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'\n"
    exe = _fake_pip_audit(tmp_path, None, stderr="Traceback (most recent call last):\n" + error)
    ran = _audit(tmp_path, exe, "--service", "osv")
    assert ran.returncode == 0
    assert f"NOT AUDITED: pip-audit could not reach the osv advisory service: {error}" in ran.stderr
    assert _audit(tmp_path, exe, "--service", "osv", "--require-advisories").returncode == 1


def test_no_connection_within_seconds_is_not_audited_without_running_pip_audit(
    tmp_path: Path,
) -> None:
    """Offline, pip-audit would wait its read timeout once per locked package."""
    exe = tmp_path / "pip-audit"
    exe.write_text(f"#!{sys.executable}\nopen({str(tmp_path / 'ran')!r}, 'w')\n")
    exe.chmod(0o755)
    closed = ("--advisory-address", _closed_port(), "--connect-timeout", "1")
    ran = _audit(tmp_path, exe, *closed)
    assert ran.returncode == 0 and not (tmp_path / "ran").exists()
    assert "NOT AUDITED: the pypi advisory service is out of reach: no connection to" in ran.stderr
    assert _audit(tmp_path, exe, *closed, "--require-advisories").returncode == 1


def test_fewer_packages_audited_than_locked_fails(tmp_path: Path) -> None:
    """The advisory data answered, but the report covers part of the locks only."""
    lock = "six==1.16.0 \\\n    --hash=sha256:00\nAio_HTTP==3.9.0 \\\n    --hash=sha256:00\n"
    ran = _audit(tmp_path, _fake_pip_audit(tmp_path, CLEAN), lock_text=lock)
    assert ran.returncode == 1
    assert "reported 1 packages, but the locks pin 2: not audited: aio-http" in ran.stderr


def _ignore_file(tmp_path: Path, **entry: str) -> tuple[str, str]:
    fields = {
        "id": "PYSEC-2024-0001",
        "package": "Jinja2",
        "reason": "the sandbox escape needs untrusted templates; streamscore renders none",
        "reviewed_by": "the on-call reviewer",
        "expires": "2999-01-31",
    } | entry
    body = "\n".join(
        f"{k} = {v}" if k == "expires" else f"{k} = {v!r}" for k, v in fields.items() if v
    )
    path = tmp_path / "ignore.toml"
    path.write_text(f"[[ignore]]\n{body}\n")
    return "--ignore-file", str(path)


def test_a_reviewed_ignore_holds_until_it_expires(tmp_path: Path) -> None:
    exe = _fake_pip_audit(tmp_path, VULNERABLE)
    ran = _audit(tmp_path, exe, *_ignore_file(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert "1 reviewed and ignored:" in ran.stderr and "reviewed by the on-call" in ran.stderr
    ran = _audit(tmp_path, exe, *_ignore_file(tmp_path, expires="2020-01-31"))
    assert ran.returncode == 1
    assert "PYSEC-2024-0001 (fixed in 3.1.3); its ignore entry expired on 2020-01-31" in ran.stderr
    # Another package with the same advisory id is not covered.
    assert _audit(tmp_path, exe, *_ignore_file(tmp_path, package="six")).returncode == 1


def test_an_ignore_without_its_reason_is_refused(tmp_path: Path) -> None:
    ran = _audit(
        tmp_path, _fake_pip_audit(tmp_path, VULNERABLE), *_ignore_file(tmp_path, reason="")
    )
    assert ran.returncode == 2
    assert ran.stderr.endswith("entry PYSEC-2024-0001 lacks reason\n")


def test_the_shipped_ignore_file_is_valid_and_empty() -> None:
    shipped = tomllib.loads((AUDIT.parent / "audit-ignore.toml").read_text())
    assert shipped.get("ignore", []) == []


def test_a_missing_pip_audit_or_lock_is_one_line_and_exit_2(tmp_path: Path) -> None:
    ran = _audit(tmp_path, tmp_path / "no-pip-audit")
    assert (
        ran.returncode == 2
        and ran.stderr == f"error: {tmp_path / 'no-pip-audit'} not found (make install)\n"
    )
    ran = subprocess.run(
        [
            sys.executable,
            str(AUDIT),
            "--pip-audit",
            str(_fake_pip_audit(tmp_path, CLEAN)),
            "x.lock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2 and ran.stderr == "error: x.lock: no such lock file (make lock)\n"


def test_the_sbom_lists_every_locked_package_offline(tmp_path: Path) -> None:
    """`make sbom`'s command on the image's lock file: a CycloneDX document whose components
    are exactly the lock's pins (name and version, each with its purl). ~3 s: the CycloneDX
    schema validation (~22 s here) is left to `make sbom`."""
    lock = ROOT / "requirements.lock"
    pins: dict[str, str] = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock.read_text(), re.MULTILINE)
    )
    out = tmp_path / "sbom.cdx.json"
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env |= {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}  # offline
    ran = subprocess.run(
        [
            str(BIN / "cyclonedx-py"),
            "requirements",
            "--pyproject",
            str(ROOT / "pyproject.toml"),
            "--output-reproducible",
            "--no-validate",
            "--of",
            "JSON",
            "-o",
            str(out),
            str(lock),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    sbom = json.loads(out.read_text())
    assert (
        sbom["bomFormat"] == "CycloneDX" and sbom["metadata"]["component"]["name"] == "streamscore"
    )
    listed = {c["name"].lower(): c["version"] for c in sbom["components"]}
    assert listed == {k.lower(): v for k, v in pins.items()}
    assert all(c["purl"].startswith("pkg:pypi/") for c in sbom["components"])


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", text, re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in found}


def test_the_locks_agree_and_the_report_lock_moves_no_runtime_pin() -> None:
    """The drift report's lock is the runtime lock plus the extra `report`: a package both pin
    has one version in all three locks, so the image, the development environment and one with
    the report run the same code, and `make install-locked REPORT=1` installs both locks."""
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    report = _pins("requirements-report.lock")
    postgres_only = {"psycopg", "psycopg-binary"}  # the image's extra, not the report's
    assert set(runtime) - set(report) == postgres_only
    for other in (dev, report):
        moved = {n: (v, other[n]) for n, v in runtime.items() if n in other and other[n] != v}
        assert moved == {}
    assert {n: report[n] for n in dev if n in report and dev[n] != report[n]} == {}
    major, minor = (int(x) for x in report["evidently"].split(".")[:2])
    assert (major, minor) == (0, 7)  # pyproject: evidently>=0.7,<0.8
    # Hashes for every pin, as `pip install --require-hashes` needs.
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", (ROOT / "requirements-report.lock").read_text())
    assert all("--hash=sha256:" in b for b in blocks if "==" in b.split("\n")[0])
