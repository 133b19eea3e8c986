"""Running several bundles in one process: every bundle's own code is a package named ``scripts``,
so a bundle's ``scripts`` must replace any other before it runs (MONAI Label unloads them too)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path


def unload_scripts() -> None:
    """Forget every imported ``scripts`` module."""
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        del sys.modules[name]


@contextlib.contextmanager
def bundle_scripts(bundle: str | Path, preload: bool = True) -> Iterator[None]:
    """While the block runs, ``scripts`` is ``bundle``'s own package (found without ``sys.path``,
    from its ``scripts/__init__.py``) and no other bundle's; ``sys.path``, which the bundle's
    ``initialize`` may extend, is restored afterwards. ``preload`` False leaves finding it to the
    bundle's configs, as where nobody prepares the path (the Model Zoo's CI, MONAI Label)."""
    saved_path = list(sys.path)
    unload_scripts()
    package = Path(bundle) / "scripts"
    if preload and (package / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(
            "scripts", package / "__init__.py", submodule_search_locations=[str(package)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["scripts"] = module
        spec.loader.exec_module(module)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        unload_scripts()
