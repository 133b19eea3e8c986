"""Writing files that are never seen half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name in the same folder and rename it once
    complete: a reader, or a run killed halfway, never finds a partial file under the final name."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False) as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # a temporary file is private (0600); the result is an ordinary file
    os.replace(f.name, path)
