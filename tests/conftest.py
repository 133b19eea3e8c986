"""Shared fixtures: seeded synthetic phantoms and a runner for ``python -m monai.bundle``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
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


def logged_terms(log: str) -> dict[str, float]:
    """The loss terms of the first iteration's log line (``loss_<name>: value``), by name."""
    words = next(line for line in log.splitlines() if "Iter: 1/" in line).split()
    return {w[len("loss_") :].rstrip(":"): float(v) for w, v in zip(words, words[1:], strict=False) if w[:5] == "loss_"}


def torchrun_bundle(config_files: list[str], bundle_root: Path, port: int, *overrides: str) -> str:
    """``torchrun --nproc_per_node=2`` of a bundle's configs on CPU (gloo, one thread per process);
    returns the combined log, in which only rank 0 may report iterations and validation."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    args = torchrun + bundle_args(config_files, bundle_root) + list(overrides)
    result = run(args, env=os.environ | {"OMP_NUM_THREADS": "1"})
    log = result.stdout + result.stderr
    assert log.count("Epoch: 1/1, Iter: 1/") == 1, "expected iteration logs from rank 0 only"
    assert log.count("Got new best metric") <= 1, "expected evaluator logs from rank 0 only"
    return log


def verify_bundle(bundle_root: Path, dataset_dir: Path) -> None:
    """``tools/verify_bundle.py`` (the Model Zoo CI's checks) passes all seven checks."""
    verify = [sys.executable, "tools/verify_bundle.py", str(bundle_root), "--schema", str(SCHEMA)]
    result = run([*verify, "--dataset_dir", str(dataset_dir)])
    assert result.stdout.count(" ok") == 7, result.stdout


def install_exported(bundle_root: Path, dest: Path) -> Path:
    """Export a bundle folder as a hospital would receive it (``tools/export_bundle.py``), verify the
    zip, and install it as MONAI users do (``python -m monai.bundle download --url file://...``)
    into a fresh folder; returns the installed bundle folder."""
    out = dest / "dist"
    run([sys.executable, "tools/export_bundle.py", "export", str(bundle_root), "--out", str(out)])
    archive = next(out.glob("*.zip"))
    run([sys.executable, "tools/export_bundle.py", "verify", str(archive)])
    installed = dest / "installed"
    download = ["-m", "monai.bundle", "download", "--name", bundle_root.name, "--url", archive.as_uri()]
    run([sys.executable, *download, "--bundle_dir", str(installed)], cwd=dest)
    return installed / bundle_root.name


def outside_env() -> dict:
    """The environment without any part of the repository on ``PYTHONPATH``."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and str(REPO) not in p]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


def run_outside(bundle: Path, config_files: list[str], *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` from inside an installed bundle (its own folder as the current
    directory, the repository nowhere on ``PYTHONPATH``), as at another site."""
    files = repr([f"configs/{f}" for f in config_files])
    return run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *overrides],
        cwd=bundle,
        env=outside_env(),
        **kwargs,
    )


def check_vendored_common(bundle: Path) -> None:
    """Run from the installed bundle, ``common`` resolves to the bundle's own vendored copy."""
    result = run([sys.executable, "-c", "import common; print(common.__file__)"], cwd=bundle, env=outside_env())
    assert result.stdout.strip() == str(bundle / "common" / "__init__.py")


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


MONAILABEL = [sys.executable, str(REPO / "tools" / "monailabel_compat.py")]


def _monailabel_studies(cases: list[tuple[Path, Path]], dest: Path) -> Path:
    """A MONAI Label studies folder: ``<id>.nii.gz`` images with their labels in ``labels/final``."""
    (dest / "labels" / "final").mkdir(parents=True)
    for index, (image, label) in enumerate(cases):
        name = f"case_{index:03d}.nii.gz"
        shutil.copyfile(image, dest / name)
        shutil.copyfile(label, dest / "labels" / "final" / name)
    return dest


def check_monailabel(
    bundle: Path, image: Path, bundle_prediction: Path, cases: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    """What MONAI Label 0.8.5 does with an installed bundle, from a folder that is neither the
    repository nor the bundle and with the repository off ``PYTHONPATH``: infer (the label map equals
    the bundle's own ``inference.json`` output, label names from ``channel_def``), then train on the
    labelled ``cases`` (image, label) in one process and with ``torchrun`` (2 processes, its multi-GPU path), each time
    starting from the shipped weights through MONAI Label's ``CheckpointLoader``."""
    workdir = tmp_path / "monailabel"
    workdir.mkdir()
    out = workdir / "label.nii.gz"
    result = run([*MONAILABEL, "infer", str(bundle), str(image), "--out", str(out)], cwd=workdir, env=outside_env())
    names = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]
    channel_def = next(iter(names.values()))["channel_def"]
    expected = {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    assert f"labels {expected};" in result.stdout
    ours, theirs = nib.load(out), nib.load(bundle_prediction)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj).squeeze())
    np.testing.assert_allclose(ours.affine, nib.load(image).affine, atol=1e-4)

    studies = _monailabel_studies(cases, tmp_path / "studies")
    for nproc in ("1", "2"):
        train = [*MONAILABEL, "train", str(bundle), str(studies), "--val_split", "0.5", "--nproc", nproc]
        result = run(train, cwd=workdir, env=outside_env() | {"OMP_NUM_THREADS": "1"})
        log = result.stdout + result.stderr
        assert f"Restored all variables from {bundle / 'models' / 'model.pt'}" in log, log[-3000:]
        assert "Epoch[1] Complete" in log or "Epoch: 1/1" in log, log[-3000:]
    assert (bundle / "configs" / "monailabel_train.json").exists()
