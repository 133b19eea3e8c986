"""What the tests share: running bundles in this process or as a user would, importing a bundle's
``scripts``, and the phantom data sets."""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tools.bundle.isolation import bundle_scripts

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLES = REPO / "bundles"


def run(
    args: list[str], cwd: Path = REPO, env: dict | None = None, expect_failure: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run a command as a user would; fail the test with its output unless it ends as expected."""
    result = subprocess.run(
        args, cwd=cwd, env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout
    )
    if (result.returncode != 0) != expect_failure:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def bundle_module(bundle: Path, module: str) -> ModuleType:
    """``scripts.<module>`` of ``bundle``, imported apart from any other bundle's ``scripts``."""
    with bundle_scripts(bundle):
        return importlib.import_module(f"scripts.{module}")


# MONAI's StatsHandler logs (iterations, loss terms, metrics) through this logger, which does not propagate
STATS_LOGGER = "monai.handlers.StatsHandler"


@contextlib.contextmanager
def captured_log() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above while the block runs, as the bundle's console would show it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s - %(levelname)s - %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger(STATS_LOGGER)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def run_bundle(bundle: Path, configs: list[str], **overrides: object) -> str:
    """``monai.bundle.run`` of ``configs`` (names under ``bundle/configs``) in this process, with
    ``bundle_root`` set to ``bundle`` and ids overridden (``id#sub`` ids as ``**{"id#sub": v}``);
    returns the log. Errors propagate; the log so far is printed (pytest shows it with the failure)."""
    from monai.bundle import run as monai_run

    files = [str(bundle / "configs" / name) for name in configs]
    with bundle_scripts(bundle), captured_log() as log:
        try:
            monai_run(
                config_file=files,
                meta_file=str(bundle / "configs" / "metadata.json"),
                logging_file=False,
                bundle_root=str(bundle),
                **overrides,
            )
        except Exception:
            print(f"log of the failed run:\n{log.getvalue()[-4000:]}")
            raise
    return log.getvalue()


def run_fails(bundle: Path, configs: list[str], **overrides: object) -> str:
    """The error chain (every message, outermost first) of a bundle run that must fail."""
    with pytest.raises(Exception) as info:
        run_bundle(bundle, configs, **overrides)
    messages, error = [], info.value
    while error is not None:
        messages.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def per_case(path: Path) -> list[float]:
    """The per-case values (last column, one row per case) of a ``MetricsSaver`` ``*_raw.csv``."""
    with open(path) as f:
        return [float(row[-1]) for row in list(csv.reader(f))[1:]]


def logged_terms(log: str, prefix: str = "loss_") -> dict[str, float]:
    """The values of the first iteration's log line named ``<prefix><name>: value``, by name."""
    words = next(line for line in log.splitlines() if "Iter: 1/" in line).split()
    pairs = zip(words, words[1:], strict=False)
    return {w[len(prefix) :].rstrip(":"): float(v) for w, v in pairs if w.startswith(prefix)}


def copy_bundle(name: str, dest: Path, with_models: bool = False) -> Path:
    """A copy of ``bundles/<name>`` so runs never write into the repository."""
    ignore = shutil.ignore_patterns("runs", "eval", "__pycache__", *([] if with_models else ["models"]))
    shutil.copytree(BUNDLES / name, dest / name, ignore=ignore)
    (dest / name / "models" / "teacher").mkdir(parents=True, exist_ok=True)
    return dest / name


def outside_env() -> dict:
    """The environment without any part of the repository on ``PYTHONPATH``."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and str(REPO) not in p]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


def run_distributed(command: list[str], cwd: Path) -> str:
    """A ``torchrun`` command of 2 CPU processes (gloo, one thread each) from ``cwd``, without the
    repository on ``PYTHONPATH``; returns the combined log, in which only rank 0 may report."""
    result = run(command, cwd=cwd, env=outside_env() | {"OMP_NUM_THREADS": "1"})
    log = result.stdout + result.stderr
    assert log.count("Epoch: 1/1, Iter: 1/") == 1, "expected iteration logs from rank 0 only"
    assert log.count("Got new best metric") <= 1, "expected evaluator logs from rank 0 only"
    return log


def site_key(path: Path, comment: str = "site") -> Path:
    """An OpenSSH Ed25519 key pair as ``ssh-keygen -t ed25519 -N ''`` writes it (``path``,
    ``path.pub``), made with ``cryptography`` so that the tests need no ssh-keygen."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.write_bytes(private)
    Path(f"{path}.pub").write_text(f"{public.decode()} {comment}\n")
    return path
