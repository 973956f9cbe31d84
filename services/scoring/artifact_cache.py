"""Local copies of the verified versions a worker served, and the rollout state it served last.

A worker that starts while the registry is unavailable serves what it served before, verified
again against the digest (and signature) recorded when it was first verified. It never serves a
version that was not served from the registry's own state. Without a copy it refuses to start.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from services.core.errors import ModelLoadError
from services.scoring.model import LoadedModel, load_artifacts
from services.scoring.rollout import MODES, Mode, RolloutState

STATE_FILE = "served.json"
SHA_FILE = "artifact_sha256"
SIGNATURE_FILE = "artifact_hmac"
KEEP_VERSIONS = 4  # copies kept besides the ones served now


class ArtifactCache:
    """``<root>/<model name>/<version>/`` (the artifact plus its digest) and ``served.json``."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.name = name

    def put(self, version: str, sha256: str, signature: str | None, directory: Path) -> None:
        """Keep a verified artifact (atomically: a crash leaves the old copy or none)."""
        target = self.dir / version
        if (target / SHA_FILE).is_file() and (target / SHA_FILE).read_text() == sha256:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.dir))
        shutil.copytree(directory, tmp / "artifact")
        (tmp / SHA_FILE).write_text(sha256)
        if signature:
            (tmp / SIGNATURE_FILE).write_text(signature)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)

    def load(self, version: str, signing_key: bytes | None = None) -> LoadedModel:
        """A cached version, verified again. Raises ModelLoadError when it is not there."""
        target = self.dir / version
        try:
            expected = (target / SHA_FILE).read_text().strip()
        except OSError as exc:
            raise ModelLoadError(f"{self.name} v{version}: no local copy ({exc})") from exc
        signed = target / SIGNATURE_FILE
        signature = signed.read_text().strip() if signed.is_file() else None
        return load_artifacts(
            target / "artifact",
            self.name,
            version,
            expected,
            signature=signature,
            signing_key=signing_key,
        )

    def remember(self, state: RolloutState) -> None:
        """The state a worker serves now (its versions are in the cache)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        body = {
            "champion": state.champion,
            "challenger": state.challenger,
            "mode": state.mode,
            "canary_percent": state.canary_percent,
        }
        tmp = self.dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.dir / STATE_FILE)
        self._prune({v for v in (state.champion, state.challenger) if v})

    def last_state(self) -> RolloutState | None:
        """What was served last, from ``served.json``; None when there is none or it is not
        one: unreadable, or of the wrong shape (versions are digit strings, the canary share a
        number from 0 to 100), so that a start without the registry refuses, decided."""
        try:
            body = json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        champion, challenger = body.get("champion"), body.get("challenger")
        percent = body.get("canary_percent")
        versions_ok = all(
            v is None or (isinstance(v, str) and v.isdigit()) for v in (champion, challenger)
        )
        if not isinstance(percent, int | float) or isinstance(percent, bool):
            return None
        if not versions_ok or not 0 <= float(percent) <= 100:
            return None
        mode: Mode = "none"
        for known in MODES:
            if body.get("mode") == known:
                mode = known
        return RolloutState(champion, challenger, mode, float(percent))

    def _prune(self, serving: set[str]) -> None:
        found = sorted(
            (p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        others = [p for p in found if p.name not in serving]
        for old in others[KEEP_VERSIONS:]:
            shutil.rmtree(old, ignore_errors=True)
