"""Audit the lock files with pip-audit and say plainly what was checked (`make audit`, part of
`make lint`).

pip-audit prints "No known vulnerabilities found" and exits 0 even when it could audit nothing
(every package skipped because the advisory service did not answer for it). This wrapper reads
its JSON report instead and decides:

- a known vulnerability in any locked package: exit 1, naming package, version and advisory,
  unless the reviewed ignore file (audit-ignore.toml) names that advisory for that package with
  a reason, a reviewer and an expiry date not yet passed: then it is listed as ignored. An
  expired entry fails like the finding it covered;
- the advisory data reached, but fewer packages in the report than the locks pin: exit 1,
  naming those left out (an audit that silently covered part of the locks is no audit);
- every locked package audited, none vulnerable: exit 0, with the count and the service;
- the advisory data unreachable (no TCP connection within --connect-timeout, pip-audit failed
  without a report, or skipped packages): a loud NOT AUDITED banner on stderr naming the service
  and the first reason, and exit 0, unless --require-advisories (`make lint AUDIT_REQUIRED=1`),
  then exit 1. The connection is tried first, for a few seconds: offline, pip-audit would wait
  its read timeout once per package (hundreds of them);
- pip-audit missing, a lock file missing, or an invalid ignore file: exit 2.

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

FOUND, CLEAN, NOT_AUDITED, USAGE = 1, 0, 3, 2
HERE = Path(__file__).resolve().parent
# Where each pip-audit service fetches its advisories (what the connection check tries).
SERVICE_HOSTS = {"pypi": "pypi.org", "osv": "api.osv.dev"}
IGNORE_FIELDS = ("id", "package", "reason", "reviewed_by", "expires")


def canonical(name: str) -> str:
    """PEP 503's normal form of a package name: the locks and pip-audit spell names freely."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(locks: list[Path]) -> set[str]:
    """Every package the lock files pin (`name==version` at the start of a line)."""
    pin = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==", re.M)
    return {canonical(m) for lock in locks for m in pin.findall(lock.read_text())}


def load_ignores(path: Path) -> list[dict[str, Any]]:
    """The reviewed ignore file's entries; each must say what, why, who and until when.

    Raises:
        ValueError: an entry lacks a field or its expiry is not a date.
    """
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text()).get("ignore", [])
    for entry in entries:
        missing = [f for f in IGNORE_FIELDS if not entry.get(f)]
        if missing:
            raise ValueError(f"{path}: entry {entry.get('id', '?')} lacks {', '.join(missing)}")
        if not isinstance(entry["expires"], datetime.date):
            raise ValueError(f"{path}: entry {entry['id']}: expires must be a date (2027-01-31)")
    return entries


def connect_check(service: str, timeout: float, address: str | None = None) -> str | None:
    """None when a TCP connection to the advisory host (or the HTTPS proxy, when one is set)
    opens within ``timeout`` seconds; else why not."""
    if address is None:
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
        if proxy:
            parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            address = f"{parsed.hostname}:{parsed.port or 80}"
        else:
            address = f"{SERVICE_HOSTS.get(service, service)}:443"
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"no connection to {address} within {timeout:g} s ({exc})"
    return None


def verdict(
    report: dict[str, Any],
    ignores: list[dict[str, Any]] | None = None,
    today: datetime.date | None = None,
) -> tuple[int, list[str], list[str], list[str]]:
    """(outcome, vulnerability lines, skip reasons, ignored lines) of a pip-audit JSON report,
    with the reviewed ignores applied (an expired one ignores nothing)."""
    today = today or datetime.date.today()
    found, skipped, ignored = [], [], []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            line = f"{dep['name']} {dep.get('version')}: {vuln.get('id')} (fixed in {fixes})"
            ids = {vuln.get("id"), *(vuln.get("aliases") or [])}
            entry = next(
                (
                    e
                    for e in ignores or []
                    if e["id"] in ids and canonical(e["package"]) == canonical(dep["name"])
                ),
                None,
            )
            if entry is None:
                found.append(line)
            elif entry["expires"] < today:
                found.append(f"{line}; its ignore entry expired on {entry['expires']}")
            else:
                ignored.append(
                    f"{line}: reviewed by {entry['reviewed_by']} until {entry['expires']}: "
                    f"{entry['reason']}"
                )
    if found:
        return FOUND, found, skipped, ignored
    return (NOT_AUDITED if skipped else CLEAN), found, skipped, ignored


def _banner(text: str) -> None:
    line = "!" * 78
    sys.stderr.write(f"{line}\nNOT AUDITED: {text}\n{line}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="+", type=Path, help="hashed requirements files")
    parser.add_argument("--pip-audit", default="pip-audit", help="the pip-audit executable")
    parser.add_argument("--service", default="pypi", help="pip-audit's vulnerability service")
    parser.add_argument("--timeout", default="15", help="pip-audit's socket timeout, seconds")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=3.0,
        help="seconds to open a connection to the advisory host first (none: NOT AUDITED)",
    )
    parser.add_argument(
        "--advisory-address",
        help="HOST:PORT the connection check tries (default: the HTTPS proxy, else the service)",
    )
    parser.add_argument(
        "--ignore-file",
        type=Path,
        default=HERE / "audit-ignore.toml",
        help="reviewed advisories to ignore, each with a reason, a reviewer and an expiry",
    )
    parser.add_argument(
        "--require-advisories",
        action="store_true",
        help="fail (exit 1) when the advisory data could not be reached",
    )
    args = parser.parse_args(argv)
    exe = shutil.which(args.pip_audit)
    if exe is None:
        sys.stderr.write(f"error: {args.pip_audit} not found (make install)\n")
        return USAGE
    for lock in args.locks:
        if not lock.is_file():
            sys.stderr.write(f"error: {lock}: no such lock file (make lock)\n")
            return USAGE
    try:
        ignores = load_ignores(args.ignore_file)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE
    unreachable = connect_check(args.service, args.connect_timeout, args.advisory_address)
    if unreachable is not None:
        _banner(f"the {args.service} advisory service is out of reach: {unreachable}")
        return FOUND if args.require_advisories else CLEAN
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        argv_ = [exe, "--disable-pip", "--progress-spinner", "off", "--desc", "off"]
        argv_ += ["-s", args.service, "--timeout", args.timeout, "-f", "json", "-o", str(out)]
        for lock in args.locks:
            argv_ += ["-r", str(lock)]
        try:
            ran = subprocess.run(argv_, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603 (pip-audit)
        except (OSError, subprocess.TimeoutExpired) as exc:
            ran, failure = None, f"{type(exc).__name__}: {exc}"
        report = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else None
    locks = " ".join(str(lock) for lock in args.locks)
    if report is None:
        if ran is not None:
            lines = (ran.stderr or ran.stdout).strip().splitlines()
            failure = lines[-1][:300] if lines else f"exit {ran.returncode}"
        _banner(f"pip-audit could not reach the {args.service} advisory service: {failure}")
        return FOUND if args.require_advisories else CLEAN
    outcome, found, skipped, ignored = verdict(report, ignores)
    total = len(report.get("dependencies", []))
    if ignored:
        sys.stderr.write(f"pip-audit ({args.service}): {len(ignored)} reviewed and ignored:\n")
        sys.stderr.write("".join(f"  {line}\n" for line in ignored))
    if outcome == FOUND:
        sys.stderr.write(f"pip-audit ({args.service}): {len(found)} known vulnerabilities:\n")
        sys.stderr.write("".join(f"  {line}\n" for line in found))
        return FOUND
    audited = {canonical(d["name"]) for d in report.get("dependencies", []) if "name" in d}
    left_out = sorted(locked_names(args.locks) - audited)
    if outcome == CLEAN and left_out:
        sys.stderr.write(
            f"pip-audit ({args.service}) reported {total} packages, but the locks pin "
            f"{total + len(left_out)}: not audited: {', '.join(left_out)}\n"
        )
        return FOUND
    if outcome == NOT_AUDITED:
        _banner(
            f"{len(skipped)} of {total} locked packages were not audited: the {args.service} "
            f"advisory data did not answer for them (first: {skipped[0]})"
        )
        return FOUND if args.require_advisories else CLEAN
    print(f"pip-audit ({args.service}): {total} packages in {locks}, no known vulnerabilities")
    return CLEAN


if __name__ == "__main__":
    sys.exit(main())
