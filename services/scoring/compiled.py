"""LightGBM models compiled to native code with lleaves, cached on disk by the model's sha256.

A worker compiles its serving set before its first batch, and the model watcher compiles what
it loads later after the worker has already swapped to it (served by LightGBM's predictor
meanwhile); the compiler runs in a low-priority child process, never on the scoring path. The
cache file is keyed by the model text's sha256, the CPU it was compiled for and the lleaves and
llvmlite versions, so a cache shared between hosts or upgrades never loads code built for
something else. LightGBM's own predictor stays as the fallback: a model that cannot be compiled
(lleaves missing, an unsupported tree, a compiler error) is served by LightGBM and counted in
``streamscore_model_compiles_total{outcome}``.

The cache directory holds native code the worker loads: it must be as trusted as the Python
environment itself (same owner, not writable by others).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core import metrics

logger = logging.getLogger(__name__)


class CompiledForest:
    """A compiled LightGBM model: same scores as ``Booster.predict`` (|diff| < 1e-9), faster."""

    def __init__(self, model: Any, path: Path) -> None:
        self._model, self.path = model, path

    def predict(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(self._model.predict(X, n_jobs=1), dtype=np.float64)


def cache_key(model_sha256: str) -> str:
    """File name of a compiled model: artifact, target CPU and compiler all name it."""

    from llvmlite import binding

    cpu = binding.get_host_cpu_name()
    return f"{model_sha256}-{cpu}-lleaves{version('lleaves')}-llvmlite{version('llvmlite')}.so"


COMPILE_TIMEOUT_SECONDS = 600.0


def _compile_in_child(model_file: Path, target: Path) -> None:
    """Compile in a separate process: lleaves builds the LLVM IR in Python for seconds, and in
    this process that would hold the GIL and stall a worker's scoring loop (a model swap is
    prepared on the watcher thread while the loop scores). The child writes a private
    temporary name, renamed into place: no process ever loads a half-written file, and two
    compiling at once both end with a whole one."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    os.unlink(tmp)
    try:
        done = subprocess.run(  # noqa: S603 (this module, this interpreter, our own paths)
            [sys.executable, "-m", "services.scoring.compiled", str(model_file), tmp],
            capture_output=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"compiler exited {done.returncode}: {' '.join(tail)}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_lightgbm(model_file: Path, model_sha256: str, cache_dir: Path) -> CompiledForest | None:
    """Compile ``model_file`` (LightGBM text), or load it from ``cache_dir``; None when it
    cannot be compiled (the caller serves LightGBM's predictor instead)."""
    try:
        import lleaves
    except ImportError as exc:  # lleaves is a dependency; a broken install degrades, loudly
        logger.warning("lleaves unavailable, LightGBM predicts: %s", exc)
        metrics.MODEL_COMPILES.labels(outcome="unavailable").inc()
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = cache_dir / cache_key(model_sha256)
        outcome = "cached" if target.is_file() else "compiled"
        model = lleaves.Model(model_file=str(model_file))
        if outcome == "compiled":
            _compile_in_child(model_file, target)
        model.compile(cache=str(target))
    except Exception as exc:  # noqa: BLE001 (any compiler failure falls back to LightGBM)
        logger.warning("model %s not compiled, LightGBM predicts: %s", model_sha256[:12], exc)
        metrics.MODEL_COMPILES.labels(outcome="failed").inc()
        return None
    metrics.MODEL_COMPILES.labels(outcome=outcome).inc()
    logger.info("model %s %s (%s)", model_sha256[:12], outcome, target.name)
    return CompiledForest(model, target)


if __name__ == "__main__":  # the compiler child: python -m services.scoring.compiled MODEL OUT
    # Lowest priority: on a busy host the compiler takes the CPU that scoring leaves over and
    # never slows the worker that asked for it (it serves LightGBM's predictor meanwhile).
    os.nice(19)
    import lleaves

    lleaves.Model(model_file=sys.argv[1]).compile(cache=sys.argv[2])
