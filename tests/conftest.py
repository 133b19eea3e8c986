"""Shared fixtures: seeded synthetic phantoms and a runner for ``python -m monai.bundle``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def run(
    args: list[str], cwd: Path = REPO, env: dict | None = None, expect_failure: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run a command as a user would; fail the test with its output unless it ends as expected."""
    env = env or os.environ.copy()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if (result.returncode != 0) != expect_failure:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def bundle_args(config_files: list[str], bundle_root: Path) -> list[str]:
    """``-m monai.bundle run`` arguments for ``config_files`` (names under ``configs/``) of a bundle."""
    files = [str(bundle_root / "configs" / f) for f in config_files]
    return ["-m", "monai.bundle", "run", "--config_file", repr(files), "--bundle_root", str(bundle_root)]


def bundle_run(config_files: list[str], bundle_root: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of a bundle's configs from the repository root."""
    return run([sys.executable, *bundle_args(config_files, bundle_root), *overrides], **kwargs)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """Ten small two-modality phantoms (6 training, 2 validation, 2 test)."""
    out = tmp_path_factory.mktemp("phantoms")
    run(
        [
            sys.executable,
            "tools/make_synthetic_brats.py",
            "--out",
            str(out),
            "--cases",
            "10",
            "--size",
            "32",
            "--val",
            "2",
            "--test",
            "2",
            "--seed",
            "1",
        ]
    )
    return out


def copy_bundle(name: str, dest: Path, with_models: bool = False) -> Path:
    """A copy of ``bundles/<name>`` so runs never write into the repository."""
    src = REPO / "bundles" / name
    ignore = shutil.ignore_patterns("runs", "eval", *([] if with_models else ["models"]))
    shutil.copytree(src, dest / name, ignore=ignore)
    (dest / name / "models" / "teacher").mkdir(parents=True, exist_ok=True)
    return dest / name
