"""The image's HEALTHCHECK: GET /healthz (or /readyz with --ready) of the role this container runs.

One image runs three roles with three ports: the scoring worker (STREAMSCORE_METRICS__PORT,
9464), the control plane (STREAMSCORE_METRICS__CONTROL_PLANE_PORT, 9465) and the API
(STREAMSCORE_API__PORT, 8000). The role is read from the command line of process 1, so one
HEALTHCHECK line serves all three without a setting of its own. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def role_port(argv: list[str], env: dict[str, str]) -> int:
    """The probe port of the role in ``argv``.

    >>> role_port(["streamscore", "worker", "scoring"], {})
    9464
    >>> role_port(["streamscore", "worker", "control-plane"], {})
    9465
    >>> role_port(["streamscore", "api", "serve"], {"STREAMSCORE_API__PORT": "8080"})
    8080
    """
    if "api" in argv:
        return int(env.get("STREAMSCORE_API__PORT", "8000"))
    if "control-plane" in argv:
        return int(env.get("STREAMSCORE_METRICS__CONTROL_PLANE_PORT", "9465"))
    return int(env.get("STREAMSCORE_METRICS__PORT", "9464"))


def main() -> int:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    except OSError:
        argv = []
    path = "/readyz" if "--ready" in sys.argv[1:] else "/healthz"
    url = f"http://127.0.0.1:{role_port(argv, dict(os.environ))}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed http URL)
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
