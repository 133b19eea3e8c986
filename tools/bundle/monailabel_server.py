"""Serve bundles of the collection from a real MONAI Label 0.8.5 server and check what it returns.

    python -m tools.bundle.monailabel_server --venv ~/.cache/kd-monailabel --work /tmp/ml \\
        --case bundles/mtms_contrastive_cardiac_mri ACDC_IMAGE ACDC_LABEL --case bundles/kdnet_brats_mri T1_IMAGE

1. Builds MONAI Label in its own virtual environment ``--venv`` unless it is there already
   (``tools/bundle/monailabel_requirements.txt``, then ``monailabel==0.8.5`` without dependencies; torch
   is ``--torch``, by default the project's pin). When ``import torchvision`` fails because the
   registry's torchvision wheel is built against CUDA torch (the case with a CPU-only torch), a
   ``sitecustomize.py`` in that environment declares the two operators torchvision registers at
   import (``nms``, ``qnms``); they stay unusable, and no segmentation bundle calls them.
2. Exports each bundle (``tools.bundle.export``, verified) and unzips it into the
   ``monaibundle`` sample app's ``model/`` folder, as a site receiving it would.
3. Copies the images into a studies folder and starts ``monailabel.main start_server`` on
   127.0.0.1 with ``--conf models <names> --conf zoo_source local``.
4. For each case: ``GET /info/`` must list the bundle with the label names of its ``channel_def``;
   ``POST /infer/<name>?image=<id>&output=image`` must return a label map with the input's shape
   and affine, holding only those labels, equal to what ``tools.bundle.monailabel_compat`` computes;
   with a reference label, Dice per label (any foreground for a one-label bundle). Prints a
   table; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tools.bundle.export import export, verify
from tools.bundle.monailabel_compat import infer, label_names
from tools.measure.overlap import dice

HERE = Path(__file__).resolve().parent
TORCHVISION_SHIM = """\
# Written by tools.bundle.monailabel_server: this torchvision wheel is built against CUDA torch, so its
# C++ operators cannot load here; declaring the two it registers at import lets it import.
import torch

_torchvision_ops = torch.library.Library("torchvision", "DEF")
_torchvision_ops.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_torchvision_ops.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
"""


def sh(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, **kwargs)


def build_venv(venv: Path, torch_requirement: str) -> Path:
    """MONAI Label's environment; returns its python."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import monailabel"], capture_output=True).returncode == 0:
        return python
    sh(sys.executable, "-m", "venv", venv)
    pip = [python, "-m", "pip", "install", "-q"]
    sh(*pip, torch_requirement)
    installed_torch = sh(python, "-c", "import torch; print(torch.__version__)", capture_output=True, text=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={installed_torch.stdout.strip()}\n")
    sh(*pip, "-c", constraints, "-r", HERE / "monailabel_requirements.txt")
    sh(*pip, "--no-deps", "monailabel==0.8.5")
    if subprocess.run([python, "-c", "import torchvision"], capture_output=True).returncode != 0:
        site = sh(python, "-c", "import site; print(site.getsitepackages()[0])", capture_output=True, text=True)
        (Path(site.stdout.strip()) / "sitecustomize.py").write_text(TORCHVISION_SHIM)
        print("torchvision does not match this torch build: declared its operators in sitecustomize.py")
    sh(python, "-c", "import torchvision, monailabel, monai; print('MONAI', monai.__version__)")
    return python


def install_bundle(bundle: Path, models_dir: Path, work: Path) -> Path:
    """Export, verify and unzip a bundle into the app's model folder; returns the installed folder."""
    archive = export(bundle, work / "dist")
    problems = verify(archive)
    if problems:
        raise RuntimeError(f"the export of {bundle} does not verify: {problems}")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(models_dir)
    return models_dir / bundle.name


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> dict:
    start = time.time()
    while time.time() - start < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"no answer from {url} within {timeout} s; see {log}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="MONAI Label's virtual environment (built if absent)")
    parser.add_argument("--work", type=Path, required=True, help="app, studies and logs go here")
    parser.add_argument("--case", nargs="+", action="append", required=True, metavar="BUNDLE IMAGE [LABEL]")
    parser.add_argument("--torch", default="torch==2.13.0", help="pip requirement for torch in that environment")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)

    started = time.time()
    python = build_venv(args.venv.resolve(), args.torch)
    print(f"MONAI Label environment ready in {time.time() - started:.0f} s")
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    sh(python, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", work / "apps")
    app, studies = work / "apps" / "monaibundle", work / "studies"
    studies.mkdir(parents=True)
    cases = []
    for index, (bundle, image, *label) in enumerate(args.case):
        installed = install_bundle(Path(bundle).resolve(), app / "model", work)
        study = f"{installed.name}_case{index}.nii.gz"
        shutil.copyfile(image, studies / study)
        cases.append((installed, studies / study, Path(label[0]) if label else None))

    names = sorted({c[0].name for c in cases})
    log = work / "server.log"
    command = [python, "-m", "monailabel.main", "start_server", "--app", app, "--studies", studies]
    command += ["--host", "127.0.0.1", "--port", str(args.port), "--conf", "models", ",".join(names)]
    command += ["--conf", "zoo_source", "local", "--conf", "sam2", "false"]
    env = os.environ | {"MONAI_LABEL_SESSION_PATH": str(work / "sessions"), "PYTHONPATH": ""}
    with open(log, "w") as log_file:
        server = subprocess.Popen([str(c) for c in command], stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{args.port}"
    failures = []
    try:
        info = wait_for(f"{url}/info/", server, log)
        print(f"server up after {time.time() - started:.0f} s; models {sorted(info['models'])}")
        header = f"{'bundle':30} {'study':38} {'labels':>28} {'shape ok':>8} {'affine ok':>9} {'= replica':>9}"
        print(f"\n{header} {'s':>5}  Dice")
        for bundle, image, reference in cases:
            expected = label_names(bundle)
            served = info["models"].get(bundle.name, {}).get("labels")
            if served != expected:
                failures.append(f"{bundle.name}: /info labels {served}, channel_def gives {expected}")
            study_id = image.name.removesuffix(".gz").removesuffix(".nii")
            tic = time.time()
            request = urllib.request.Request(f"{url}/infer/{bundle.name}?image={study_id}&output=image", method="POST")
            with (
                urllib.request.urlopen(request, timeout=600) as response,
                tempfile.NamedTemporaryFile(suffix=".nii.gz") as f,
            ):
                f.write(response.read())
                f.flush()
                returned = nib.load(f.name)
                label = np.asarray(returned.dataobj).astype(np.int64)
                affine = returned.affine
            seconds = time.time() - tic
            source = nib.load(image)
            shape_ok = label.shape == source.shape[:3]
            affine_ok = bool(np.allclose(affine, source.affine, atol=1e-3))
            replica, _ = infer(bundle, image, torch.device("cpu"))
            same = replica.shape == label.shape and bool(np.array_equal(replica.astype(np.int64), label))
            values_ok = set(np.unique(label).tolist()) <= {0, *expected.values()}
            scores = ""
            if reference is not None:
                truth = np.asarray(nib.load(reference).dataobj).astype(np.int64)
                if len(expected) == 1:  # a one-label bundle (whole tumour, left atrium): any foreground
                    truth = (truth > 0).astype(np.int64) * next(iter(expected.values()))
                scores = " ".join(f"{n} {dice(label == v, truth == v):.3f}" for n, v in expected.items())
            print(
                f"{bundle.name:30} {image.name:38} {json.dumps(served):>28} {shape_ok!s:>8} "
                f"{affine_ok!s:>9} {same!s:>9} {seconds:5.1f}  {scores}"
            )
            if not (shape_ok and affine_ok and same and values_ok):
                failures.append(
                    f"{bundle.name} on {image.name}: shape {shape_ok}, affine {affine_ok}, "
                    f"equal to the replica {same}, label values {sorted(np.unique(label).tolist())}"
                )
    finally:
        server.terminate()
        server.wait(timeout=60)
    if failures:
        sys.exit("FAILED:\n" + "\n".join(failures) + f"\nserver log: {log}")
    print(f"\nall checks passed ({time.time() - started:.0f} s); server log: {log}")


if __name__ == "__main__":
    main()
