"""Audit the lock files with pip-audit and say plainly what was checked (`make audit`, part of
`make lint`).

pip-audit prints "No known vulnerabilities found" and exits 0 even when it could audit nothing
(every package skipped because the advisory service did not answer for it). This wrapper reads
its JSON report instead and decides:

- a known vulnerability in any locked package: exit 1, naming package, version and advisory;
- every package audited, none vulnerable: exit 0, with the count and the service;
- the advisory data unreachable (pip-audit failed without a report, or skipped packages):
  a loud NOT AUDITED banner on stderr naming the service and the first reason, and exit 0,
  unless --require-advisories (`make lint AUDIT_REQUIRED=1`), then exit 1;
- pip-audit missing or a lock file missing: exit 2.

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FOUND, CLEAN, NOT_AUDITED, USAGE = 1, 0, 3, 2


def verdict(report: dict[str, Any]) -> tuple[int, list[str], list[str]]:
    """(outcome, vulnerability lines, skip reasons) of a pip-audit JSON report."""
    found, skipped = [], []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            found.append(f"{dep['name']} {dep.get('version')}: {vuln.get('id')} (fixed in {fixes})")
    if found:
        return FOUND, found, skipped
    return (NOT_AUDITED if skipped else CLEAN), found, skipped


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
    outcome, found, skipped = verdict(report)
    total = len(report.get("dependencies", []))
    if outcome == FOUND:
        sys.stderr.write(f"pip-audit ({args.service}): {len(found)} known vulnerabilities:\n")
        sys.stderr.write("".join(f"  {line}\n" for line in found))
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
