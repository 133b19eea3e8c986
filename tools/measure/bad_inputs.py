"""Feed a bundle bad inputs and tabulate what it does: a clear error naming the file or value, or a
correct result, and nothing written half.

    python -m tools.measure.bad_inputs bundles/X --dataset_dir DATA --datalist DATA/datalist.json \\
        --inference_image DATA/case_0/image.nii.gz [--training_configs train.json,train_baseline.json] \\
        [--set epochs=1 --set roi_size=[32,32,32] ...] [--work /tmp/bad_inputs] [--out table.md]

The bundle is copied into ``--work`` (nothing is written into it). From one good image (the
inference image) and the first training case of the datalist it makes each bad input below, and
tries it against the targets it concerns:

- ``inference``: ``inference.json`` on a folder holding only the bad image;
- ``training``: the training configs (``--training_configs``; a baseline overlay needs no teacher)
  with the bad file in place of the image (its first modality) or label of the datalist's first
  case under ``--training_key``;
- ``MONAI Label``: :func:`tools.bundle.monailabel_compat.infer`, what MONAI Label's bundle app does;
- ``verify``: :func:`tools.bundle.export.verify` on the bundle's export, altered.

A row passes when the run stopped with an error whose text names the bad file (or the bad id or
entry), or when it ran and its result is right (a label map on the input's grid; a finished
training), where running is right for that input. After every try, each NIfTI file and
checkpoint the run left must load. Exits 1 when any row fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import stat
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tools.bundle import monailabel_compat
from tools.bundle.export import export, verify
from tools.bundle.files import write_atomic
from tools.bundle.isolation import bundle_scripts


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # the file a case replaces: "image" or "label"
    make: Callable[[Path, Path], None]  # (good file, bad file to write)
    targets: tuple[str, ...]
    may_run: bool  # a correct result is an acceptable answer


@dataclass
class Row:
    case: str
    target: str
    outcome: str  # "error", "ran"
    passed: bool
    detail: str


def _volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def truncated(good: Path, bad: Path) -> None:
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])


def three_channels(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    nib.save(nib.Nifti1Image(np.stack([voxels] * 3, axis=-1), affine), bad)


def two_dimensional(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels[..., voxels.shape[2] // 2]), affine), bad)


def not_finite(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    voxels = voxels.astype(np.float32)
    voxels[:2, :2, :2] = np.nan
    voxels[-1, -1, -1] = np.inf
    nib.save(nib.Nifti1Image(voxels, affine), bad)


def absurd_spacing(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    scaled = affine.copy()
    scaled[:3, :3] *= 1000  # metre-sized voxels: resampled to millimetres, a volume of terabytes
    nib.save(nib.Nifti1Image(voxels, scaled), bad)


def empty_label(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    nib.save(nib.Nifti1Image(np.zeros_like(voxels), affine), bad)


def label_out_of_classes(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    voxels = voxels.astype(np.uint8)
    voxels[:3, :3, :3] = 77
    nib.save(nib.Nifti1Image(voxels, affine), bad)


def label_other_shape(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels[1:]), affine), bad)


def label_other_spacing(good: Path, bad: Path) -> None:
    voxels, affine = _volume(good)
    scaled = affine.copy()
    scaled[:3, :3] *= 2
    nib.save(nib.Nifti1Image(voxels, scaled), bad)


IMAGE_TARGETS = ("inference", "training", "MONAI Label")
CASES = (
    Case("truncated NIfTI (half its bytes)", "image", truncated, IMAGE_TARGETS, may_run=False),
    Case("3 channels where the bundle reads 1", "image", three_channels, IMAGE_TARGETS, may_run=False),
    Case("2-D image", "image", two_dimensional, IMAGE_TARGETS, may_run=False),
    Case("NaN and Inf voxels", "image", not_finite, IMAGE_TARGETS, may_run=False),
    Case("absurd spacing (voxels of metres)", "image", absurd_spacing, IMAGE_TARGETS, may_run=False),
    Case("all-background label", "label", empty_label, ("training",), may_run=True),
    Case("label values outside the classes", "label", label_out_of_classes, ("training",), may_run=False),
    Case("label of another shape than its image", "label", label_other_shape, ("training",), may_run=False),
    Case("label of another spacing than its image", "label", label_other_spacing, ("training",), may_run=False),
)


def error_text(error: BaseException) -> str:
    """Every message of an error chain, outermost first."""
    messages = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        messages.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def naming_line(text: str, names: tuple[str, ...]) -> str | None:
    """The first line of ``text`` naming one of ``names``."""
    return next((line for line in text.splitlines() if any(n in line for n in names)), None)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Runs whose failure is the point: their logs would bury the table."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def bundle_run(bundle: Path, configs: list[str | Path], overrides: dict) -> None:
    from monai.bundle import run

    files = [str(c) if isinstance(c, Path) else str(bundle / "configs" / c) for c in configs]
    with bundle_scripts(bundle), quiet():
        run(config_file=files, logging_file=False, bundle_root=str(bundle), **overrides)


def damaged_files(folder: Path) -> list[str]:
    """Files a run left that do not load: NIfTI images and checkpoints."""
    damaged = []
    for path in sorted(folder.rglob("*")):
        try:
            if path.name.endswith((".nii", ".nii.gz")):
                nib.load(path).get_fdata()
            elif path.suffix == ".pt":
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # exactly what this check looks for
            damaged.append(str(path.relative_to(folder)))
    return damaged


class Trial:
    """The bundle copy, its good inputs and the runs each case is tried with."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.work = args.work
        if self.work.exists():
            shutil.rmtree(self.work)
        self.bundle = self.work / args.bundle.resolve().name
        shutil.copytree(args.bundle, self.bundle, ignore=shutil.ignore_patterns("runs", "eval", "__pycache__"))
        self.dataset_dir = args.dataset_dir.resolve()
        self.datalist = json.loads(args.datalist.read_text())
        self.inference_image = args.inference_image.resolve()
        self.training_configs = args.training_configs.split(",")
        self.training_key = args.training_key
        self.overrides = args.overrides
        self.label_classes_checked = any(
            "label_classes" in (self.bundle / "configs" / c).read_text() for c in self.training_configs
        )

    def first_training_files(self) -> tuple[Path, Path]:
        item = self.datalist[self.training_key][0]
        image = item["image"][0] if isinstance(item["image"], list) else item["image"]
        return self.dataset_dir / image, self.dataset_dir / item["label"]

    def inference(self, bad: Path, out: Path) -> str:
        folder = bad.parent
        bundle_run(
            self.bundle,
            ["inference.json"],
            {"dataset_dir": str(folder), "image_pattern": bad.name, "output_dir": str(out), **self.overrides},
        )
        written = sorted(out.rglob("*.nii.gz"))
        if len(written) != 1:
            raise AssertionError(f"{len(written)} label maps written, expected 1")
        return self.check_grid(bad, written[0])

    @staticmethod
    def check_grid(image: Path, label: Path) -> str:
        source, written = nib.load(image), nib.load(label)
        if written.shape[:3] != source.shape[:3] or not np.allclose(written.affine, source.affine, atol=1e-3):
            raise AssertionError(f"label map {written.shape} is not on the image's grid {source.shape}")
        return f"label map on the input's grid {source.shape[:3]}"

    def training(self, bad: Path, what: str, out: Path) -> str:
        datalist = json.loads(json.dumps(self.datalist))
        item = datalist[self.training_key][0]
        if what == "label":
            item["label"] = str(bad)
        elif isinstance(item["image"], list):
            item["image"][0] = str(bad)
        else:
            item["image"] = str(bad)
        datalist_file = out / "datalist.json"
        datalist_file.write_text(json.dumps(datalist))
        overrides = {
            "dataset_dir": str(self.dataset_dir),
            "datalist": str(datalist_file),
            "run_name": f"bad_inputs_{out.name}",
            "model_dir": str(out / "models"),
            "output_dir": str(out / "output"),
            **self.overrides,
        }
        bundle_run(self.bundle, self.training_configs, overrides)
        return "training finished"

    def monai_label(self, bad: Path, out: Path) -> str:
        with bundle_scripts(self.bundle), quiet():
            label, affine = monailabel_compat.infer(self.bundle, bad)
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), out / "label.nii.gz")
        return self.check_grid(bad, out / "label.nii.gz")

    def attempt(self, case: Case, target: str, number: int) -> Row:
        out = self.work / f"try_{number:02d}"
        out.mkdir()
        good = self.inference_image if case.what == "image" and target != "training" else None
        if good is None:
            image, label = self.first_training_files()
            good = image if case.what == "image" else label
        bad = out / "input" / good.name
        bad.parent.mkdir()
        case.make(good, bad)
        names = (bad.name, str(bad))
        may_run = case.may_run or (case.make is label_out_of_classes and not self.label_classes_checked)
        try:
            if target == "inference":
                result = self.inference(bad, out / "labels")
            elif target == "training":
                result = self.training(bad, case.what, out)
            else:
                result = self.monai_label(bad, out)
        except Exception as e:
            text = error_text(e)
            line = naming_line(text, names)
            outcome = Row(case.name, target, "error", line is not None, (line or text.splitlines()[0]))
        else:
            if may_run and not case.may_run:
                result += " (the training configs check no class range: their labels are mapped by a rule)"
            outcome = Row(case.name, target, "ran", may_run, result)
        runs = self.bundle / "runs" / f"bad_inputs_{out.name}"
        damaged = [f for f in damaged_files(out) if not f.startswith("input/")]
        damaged += damaged_files(runs) if runs.is_dir() else []
        if damaged:
            outcome.passed, outcome.detail = False, f"{outcome.detail}; damaged files left: {damaged}"
        for folder in (out / "input", self.dataset_dir):  # the table names files, not this machine's folders
            outcome.detail = outcome.detail.replace(f"{folder}/", "")
        outcome.detail = outcome.detail.replace("|", "/")
        return outcome

    def export_cases(self) -> list[Row]:
        """A received zip with a path leaving the bundle, and one with a symbolic link."""
        rows = []
        zip_path = export(self.bundle, self.work / "dist")
        for case, entry, link in (
            ("zip with a `../` path", f"{self.bundle.name}/../../evil.py", False),
            ("zip with a symbolic link", f"{self.bundle.name}/docs/passwd", True),
        ):
            altered = self.work / "dist" / f"altered_{len(rows)}.zip"
            with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(altered, "w") as target:
                for info in source.infolist():
                    target.writestr(info, source.read(info))
                info = zipfile.ZipInfo(entry)
                if link:
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                target.writestr(info, "/etc/passwd" if link else "import os")
            digest = hashlib.sha256(altered.read_bytes()).hexdigest()  # a consistent checksum: only the contents tell
            Path(f"{altered}.sha256").write_text(f"{digest}  {altered.name}\n")
            problems = verify(altered)
            line = naming_line("\n".join(problems), (entry,))
            detail = line or (problems[0] if problems else "verify found nothing")
            rows.append(Row(case, "verify", "error" if problems else "ran", line is not None, detail))
        return rows

    def missing_id(self) -> Row:
        """``inference.json`` without ``network_def``, which ``network`` refers to."""
        config = json.loads((self.bundle / "configs" / "inference.json").read_text())
        del config["network_def"]
        broken = self.work / "inference_without_network_def.json"
        broken.write_text(json.dumps(config))
        overrides = {"dataset_dir": str(self.inference_image.parent), "image_pattern": self.inference_image.name}
        overrides["output_dir"] = str(self.work / "missing_id")
        try:
            bundle_run(self.bundle, [broken], {**overrides, **self.overrides})
        except Exception as e:
            line = naming_line(error_text(e), ("network_def",))
            return Row("config with a missing id", "inference", "error", line is not None, line or str(e))
        return Row("config with a missing id", "inference", "ran", False, "ran without the id")


def table(bundle: str, rows: list[Row]) -> str:
    lines = [f"| {bundle}: input | target | outcome | passes | what it said or did |", "|---|---|---|---|---|"]
    for row in rows:
        detail = row.detail if len(row.detail) <= 200 else row.detail[:197] + "..."
        outcome = "clear error" if row.outcome == "error" and row.passed else row.outcome
        lines.append(f"| {row.case} | {row.target} | {outcome} | {'yes' if row.passed else 'NO'} | {detail} |")
    return "\n".join(lines) + "\n"


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--datalist", type=Path, required=True, help="its first training case is altered")
    parser.add_argument("--inference_image", type=Path, required=True, help="a good image inference.json reads")
    parser.add_argument("--training_configs", default="train.json,train_baseline.json")
    parser.add_argument("--training_key", default="training", help="the datalist list those configs train on")
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bad_inputs"), help="emptied first")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    args.overrides = dict(args.overrides)
    trial = Trial(args)
    rows = []
    for case in CASES:
        for target in case.targets:
            rows.append(trial.attempt(case, target, len(rows)))
            print(f"{case.name} / {target}: {'pass' if rows[-1].passed else 'FAIL'}", file=sys.stderr, flush=True)
    rows += trial.export_cases()
    rows.append(trial.missing_id())
    text = table(args.bundle.resolve().name, rows)
    print(text)
    if args.out:
        write_atomic(args.out, text.encode())
    sys.exit(0 if all(r.passed for r in rows) else 1)


if __name__ == "__main__":
    main()
