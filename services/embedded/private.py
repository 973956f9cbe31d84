"""Files only their owner may read: the local clusters' passwords, env files, node
configurations and private keys."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path``, readable by the owner only.

    A new file is created 0600; a file already there (an older version's, or one a person
    copied in with a wider mode) is narrowed to 0600 before anything is written into it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The mode of os.open applies only to a file it creates.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
