"""Writing files that are never seen half-written."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 600  # a temporary file this old is a killed write's, not a concurrent writer's


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name in the same folder and rename it once
    complete: a reader, or a run killed halfway, never finds a partial file under the final name."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False) as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # a temporary file is private (0600); the result is an ordinary file
    os.replace(f.name, path)
    remove_stale_partials(path)


def remove_stale_partials(path: Path, older_than_s: float = STALE_AFTER_S) -> None:
    """Delete the temporary files that earlier writes of ``path`` killed halfway left behind."""
    cutoff = time.time() - older_than_s
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        with contextlib.suppress(FileNotFoundError):  # another writer may be removing it too
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
