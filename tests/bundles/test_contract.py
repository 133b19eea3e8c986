"""The contract every bundle of the collection keeps, the template included: train with named loss
terms, resume from a real checkpoint, a baseline without distillation, evaluation with a number per
test case, inference on the input's grid, the Model Zoo's checks, a clear message without
``common``, and the exported bundle working outside the repository, in MONAI Label's tasks, with
``torchrun`` and with a real ``python -m monai.bundle run``.

Runs happen in this process (``monai.bundle.run``) except where a process of its own is the point:
one ``torchrun`` and one ``python -m monai.bundle run`` per bundle."""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle import download as monai_download
from monai.utils import OptionalImportError

from tests.bundles.profiles import PROFILES
from tests.helpers import (
    bundle_scripts,
    logged_terms,
    outside_env,
    per_case,
    run,
    run_bundle,
    run_distributed,
    site_key,
)
from tools.bundle import monailabel_compat
from tools.bundle.export import export, verify
from tools.bundle.verify import run_checks

# each bundle's tests run in one pytest-xdist worker, which trains that bundle once
NAMES = [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in sorted(PROFILES)]


def parsed(bundle: Path, config: str, item: str) -> object:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["bundle_root"] = str(bundle)
    with bundle_scripts(bundle):
        return parser.get_parsed_content(item)


def channels(bundle: Path) -> dict[str, str]:
    """The output channels the metadata declares (``channel_def`` of ``pred``)."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return meta["network_data_format"]["outputs"]["pred"]["channel_def"]


@pytest.mark.parametrize("name", NAMES)
def test_distilled_student_logs_every_term_and_exports_a_plain_network(trained, name):
    bundle = trained(name)
    terms = logged_terms(bundle.student_log)
    assert set(terms) == bundle.profile.kd_terms
    assert "Iter: 1/" in bundle.student_log and "val_mean_dice" in bundle.student_log
    state = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    parsed(bundle.root, "inference.json", "network_def").load_state_dict(state, strict=True)  # no adapter leaks
    run_dir = bundle.root / "runs" / bundle.profile.run_name
    checkpoint = torch.load(run_dir / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "best_metric"} <= set(checkpoint)
    adapters = {key.split(".")[1] for key in checkpoint.get("loss", {}) if key.startswith("adapters.")}
    assert adapters == bundle.profile.adapters  # trained with the student, kept in the training checkpoint
    assert list(run_dir.glob("events.out.tfevents.*"))


def writer_threads() -> int:
    """Live threads of TensorBoard event writers (``SummaryWriter`` starts one; ``close()`` ends it).
    The class is imported, not matched by name, so a renamed class fails here instead of counting 0."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    return sum(isinstance(thread, _AsyncWriterThread) for thread in threading.enumerate())


@pytest.mark.parametrize("name", NAMES)
def test_a_run_in_this_process_closes_its_one_tensorboard_writer(trained, name, tmp_path):
    """MONAI Label and the tests train in long-lived processes: a writer left open keeps its thread
    (and a data-loader worker forked beside such threads can deadlock). One writer holds the run's
    training terms and validation metric."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bundle = trained(name)
    before = writer_threads()
    run_bundle(
        bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, run_name="writer", model_dir=str(tmp_path))
    )
    assert writer_threads() == before
    (events,) = (bundle.root / "runs" / "writer").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    terms = bundle.profile.kd_terms  # named terms are logged one tag each, a single loss as "train_loss"
    assert (
        "val_mean_dice" in tags and ({"loss", *(f"loss_{term}" for term in terms)} if terms else {"train_loss"}) <= tags
    )


DISTILLING = [n for n in NAMES if PROFILES[n.values[0]].kd_terms]  # bundles that train a student online


@pytest.mark.parametrize("name", DISTILLING)
def test_distillation_also_runs_on_images_whose_labels_the_student_never_sees(trained, name, tmp_path):
    bundle = trained(name)
    overrides = bundle.profile.overrides(
        bundle.data, label_fraction=0.5, run_name="unlabelled", model_dir=str(tmp_path)
    )
    log = run_bundle(bundle.root, ["train.json"], **overrides)
    drawn = re.search(r"label_fraction 0.5: (\d+) of (\d+) cases", log)
    assert drawn and int(drawn.group(1)) == round(int(drawn.group(2)) / 2)
    assert set(logged_terms(log)) == bundle.profile.kd_terms
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    parsed(bundle.root, "inference.json", "network_def").load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", DISTILLING)
def test_each_terms_gradient_on_the_student_is_logged_when_asked(trained, name):
    bundle = trained(name)
    overrides = bundle.profile.overrides(bundle.data, diagnostics_interval=1, run_name="diagnostics")
    logged = logged_terms(run_bundle(bundle.root, ["train.json"], **overrides), prefix="grad_")
    terms = bundle.profile.kd_terms
    reference = next(t for t in ("seg", "seg_dice") if t in terms)
    expected = {f"norm_{t}" for t in terms} | {f"cos_{t}" for t in terms - {reference}}
    assert set(logged) == expected
    assert all(value >= 0 for key, value in logged.items() if key.startswith("norm_"))
    assert all(-1 <= value <= 1 for key, value in logged.items() if key.startswith("cos_"))


BEST = r"Key metric: (\S+) best value: ([\d.e-]+) at epoch: (\d+)"  # MONAI's evaluator, after each validation


@pytest.mark.parametrize("name", NAMES)
def test_an_interrupted_run_resumes_from_its_last_checkpoint(trained, name):
    bundle = trained(name)
    run_dir = bundle.root / "runs" / bundle.profile.run_name
    log = run_bundle(bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, epochs=2))
    assert f"resuming from {run_dir / 'checkpoint_epoch=1.pt'}" in log
    assert "Epoch: 2/2" in log and "Epoch: 1/2" not in log
    assert (run_dir / "checkpoint_epoch=2.pt").is_file()
    # the best validation metric is the whole run's, epoch 1 included, not the resumed part's only
    ((metric, first_best, _),) = re.findall(BEST, bundle.student_log)
    reported = re.findall(BEST, log)[-1]
    assert reported[0] == metric and float(reported[1]) >= float(first_best)


@pytest.mark.parametrize("name", NAMES)
def test_baseline_trains_the_same_student_without_distillation(trained, name):
    bundle = trained(name)
    log = run_bundle(bundle.root, ["train.json", bundle.profile.baseline], **bundle.profile.overrides(bundle.data))
    assert set(logged_terms(log)) == bundle.profile.baseline_terms
    state = torch.load(bundle.root / "models" / bundle.profile.baseline_model / "model.pt", weights_only=True)
    parsed(bundle.root, "inference.json", "network_def").load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_reports_a_number_for_every_test_case(trained, name):
    bundle = trained(name)
    run_bundle(bundle.root, ["train.json", "evaluate.json"], **bundle.profile.overrides(bundle.data))
    for metric in bundle.profile.metrics:
        values = per_case(bundle.root / "runs" / "evaluate_models" / f"{metric}_raw.csv")
        assert len(values) == bundle.profile.test_cases, metric
        assert all(math.isfinite(v) and v >= 0 for v in values), (metric, values)


def inference_overrides(profile, data: Path, out: Path) -> dict:
    overrides = dict(profile.inference)
    overrides["dataset_dir"] = str(data / overrides.get("dataset_dir", "."))
    return overrides | {"output_dir": str(out)}


@pytest.mark.parametrize("name", NAMES)
def test_inference_writes_label_maps_on_the_input_grid(trained, name, tmp_path):
    bundle = trained(name)
    overrides = inference_overrides(bundle.profile, bundle.data, tmp_path)
    run_bundle(bundle.root, ["inference.json"], **overrides)
    written = sorted(tmp_path.glob("*_seg.nii.gz"))
    assert len(written) == bundle.profile.inference_outputs
    sources = {p.name: p for p in Path(overrides["dataset_dir"]).rglob("*.nii.gz")}
    for prediction in written:
        source = nib.load(sources[prediction.name.replace("_seg.nii.gz", ".nii.gz")])
        label = nib.load(prediction)
        assert label.shape == source.shape[:3]
        np.testing.assert_allclose(label.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= set(range(len(channels(bundle.root))))


@pytest.mark.parametrize("name", NAMES)
def test_the_teacher_runs_through_the_same_inference_pipeline(trained, name, tmp_path):
    bundle = trained(name)
    if not (bundle.root / "configs" / "inference_teacher.json").is_file():
        pytest.skip(f"{name} has no inference_teacher.json (the template)")
    overrides = inference_overrides(bundle.profile, bundle.data, tmp_path)
    run_bundle(bundle.root, ["inference.json", "inference_teacher.json"], **overrides)
    written = sorted(tmp_path.glob("*_seg.nii.gz"))
    assert len(written) == bundle.profile.inference_outputs
    sources = {p.name.split(".nii")[0]: p for p in Path(overrides["dataset_dir"]).rglob("*.nii.gz")}
    for prediction in written:
        source = nib.load(sources[prediction.name.removesuffix("_seg.nii.gz")])
        assert nib.load(prediction).shape == source.shape[:3]


# where train.json defines the teacher that inference_teacher.json runs
TEACHER_IDS = {"agnostic_transfer_la_mri": "teacher_nets#unet#network_def"}
# parameters the trained teacher has and inference leaves out (MTMS: the reconstruction head)
TRAINING_ONLY = {"mtms_contrastive_cardiac_mri": ("recon_",)}


@pytest.mark.parametrize("name", [n for n in sorted(PROFILES) if n != "_template_kd"])
def test_the_inference_teacher_is_the_network_train_json_trains(name):
    """``inference_teacher.json`` repeats the teacher's definition of ``train.json`` (a config
    cannot read another file's ids); every parameter of the inference network must be the trained
    teacher's, name by name and shape by shape, and only training heads may be left out, or the
    teacher's checkpoint loads into the wrong network."""
    root = Path(__file__).parents[2] / "bundles" / name

    def shapes(configs: list[str], item: str) -> dict[str, tuple[int, ...]]:
        parser = ConfigParser()
        parser.read_config([str(root / "configs" / c) for c in configs])
        parser["bundle_root"] = str(root)
        with bundle_scripts(root):
            network = parser.get_parsed_content(item)
        return {k: tuple(v.shape) for k, v in network.state_dict().items()}

    trained_teacher = shapes(["train.json"], TEACHER_IDS.get(name, "teacher_def"))
    inference = shapes(["inference.json", "inference_teacher.json"], "network_def")
    assert inference == {k: v for k, v in trained_teacher.items() if k in inference}
    left_out = [k for k in trained_teacher if k not in inference]
    assert all(k.startswith(TRAINING_ONLY.get(name, ())) for k in left_out), left_out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_the_exported_student_gives_pytorch_s_label_maps(trained, name, runtime, tmp_path):
    """The parity gate of deployment: ``inference_<runtime>.json`` on ``models/model.onnx``
    writes, for every phantom, a label map of the same geometry as ``inference.json``'s with
    Dice >= 0.99 per class present."""
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[runtime])
    from tools.bundle.export_onnx import export as export_onnx

    bundle = trained(name)
    onnx_file, _ = export_onnx(bundle.root, [], {}, tmp_path / "model.onnx", atol=1e-3)
    maps = {}
    for label, configs, extra in (
        ("pytorch", ["inference.json"], {}),
        (runtime, ["inference.json", f"inference_{runtime}.json"], {"onnx_file": str(onnx_file)}),
    ):
        out = tmp_path / label
        run_bundle(bundle.root, configs, **inference_overrides(bundle.profile, bundle.data, out), **extra)
        maps[label] = {p.name: nib.load(p) for p in out.glob("*_seg.nii.gz")}
    assert maps["pytorch"] and maps["pytorch"].keys() == maps[runtime].keys()
    for case, reference in maps["pytorch"].items():
        exported = maps[runtime][case]
        assert exported.shape == reference.shape, case
        np.testing.assert_allclose(exported.affine, reference.affine, atol=1e-6)
        a, b = np.asarray(reference.dataobj), np.asarray(exported.dataobj)
        for cls in set(np.unique(a).tolist()) | set(np.unique(b).tolist()):
            dice = 2 * np.sum((a == cls) & (b == cls)) / (np.sum(a == cls) + np.sum(b == cls))
            assert dice >= 0.99, f"{case} class {cls}: Dice {dice:.4f} between PyTorch and {runtime}"


@pytest.mark.parametrize("name", NAMES)
def test_model_zoo_checks_pass(trained, name):
    bundle = trained(name)
    results = run_checks(str(bundle.root), dataset_dir=str(bundle.data))
    failed = {check: error for check, error in results if error is not None}
    assert len(results) == 7 and failed == {}


@contextlib.contextmanager
def common_replaced(version: str | None) -> Iterator[None]:
    """While the block runs, ``import common`` fails (``version`` None, a bundle copied out without
    it) or finds an older package of that ``version`` (e.g. one a MONAI Label server cached)."""

    class Block:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "common" or fullname.startswith("common."):
                raise ModuleNotFoundError(f"No module named {fullname!r}")

    hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "common" or n.startswith("common.")}
    if version is None:
        sys.meta_path.insert(0, Block())
    else:
        sys.modules["common"] = types.SimpleNamespace(__name__="common", __version__=version)
    try:
        yield
    finally:
        if version is None:
            sys.meta_path.pop(0)
        sys.modules.pop("common", None)
        sys.modules.update(hidden)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize("version, expected", [(None, "No module named 'common'"), ("0.4.0", "requires 'common 0.5'")])
def test_a_missing_or_older_common_is_named_with_how_to_get_it(name, config, version, expected, tmp_path):
    bundle = Path(__file__).resolve().parents[2] / "bundles" / name
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / config), logging_file=False, bundle_root=str(tmp_path)
    )
    with bundle_scripts(tmp_path), common_replaced(version), pytest.raises(Exception) as failure:
        workflow.initialize()
    error = failure.value
    while not isinstance(error, OptionalImportError):  # the config parser wraps it in its own errors
        error = error.__cause__
    message = str(error)
    assert "needs the shared package `common` (version 0.5 or later)" in message and "pip install -e" in message
    assert expected in message


def installed(bundle: Path, dest: Path) -> Path:
    """The bundle exported and signed as a hospital sends it, verified strictly against the
    sender's key (signature, checksum, manifest, config audit), and installed as MONAI users do
    (``monai.bundle download`` from the zip's URL)."""
    from tools.bundle.signing import sign

    key = site_key(dest / "site_key", "sending site")
    archive = export(bundle, dest / "dist")
    sign(archive, key)
    assert verify(archive, trusted=Path(f"{key}.pub"), strict=True) == []
    monai_download(name=bundle.name, url=archive.as_uri(), bundle_dir=str(dest / "installed"))
    return dest / "installed" / bundle.name


@pytest.mark.parametrize("name", NAMES)
def test_exported_bundle_works_outside_the_repository_and_in_monai_label(trained, name, tmp_path, caplog):
    bundle = trained(name)
    site = installed(bundle.root, tmp_path)
    where = run([sys.executable, "-c", "import common; print(common.__file__)"], cwd=site, env=outside_env())
    assert where.stdout.strip() == str(site / "common" / "__init__.py")  # the vendored copy

    # MONAI Label's inference equals the bundle's own inference.json on the same image
    image, studies = bundle.profile.monailabel_cases(bundle.data)
    label, affine = monailabel_compat.infer(site, image)
    run_bundle(
        site, ["inference.json"], dataset_dir=str(image.parent), image_pattern=image.name, output_dir=str(tmp_path)
    )
    own = nib.load(tmp_path / image.name.replace(".nii.gz", "_seg.nii.gz"))
    np.testing.assert_array_equal(label, np.asarray(own.dataobj).squeeze())
    np.testing.assert_allclose(affine, nib.load(image).affine, atol=1e-4)
    assert set(monailabel_compat.label_names(site).values()) <= set(range(1, 256))

    # MONAI Label's training: in one process, then its multi-GPU path under torchrun (2 CPU processes)
    overrides = monailabel_compat.train_overrides(
        site, [{"image": str(i), "label": str(s)} for i, s in studies], "cpu", 1, 0.5
    )
    # In this pytest worker, whose earlier in-process runs left threads behind (TensorBoard writers), forked
    # data-loader workers can deadlock (the likely stall of a CI run); MONAI Label trains in a fresh process, and the
    # torchrun step below keeps the bundle's own num_workers.
    with caplog.at_level("INFO"):
        monailabel_compat.train(site, overrides | {"num_workers": 0}, nproc=1, logging_file=False)
    assert f"Restored all variables from {site / 'models' / 'model.pt'}" in caplog.text
    log = run_distributed(monailabel_compat.multi_gpu_command(site, overrides, nproc=2), cwd=tmp_path)
    assert f"Restored all variables from {site / 'models' / 'model.pt'}" in log
    checkpoint = torch.load(site / "runs" / bundle.profile.run_name / "checkpoint_epoch=1.pt", weights_only=True)
    adapters = {key.split(".")[1] for key in checkpoint.get("loss", {}) if key.startswith("adapters.")}
    assert adapters == bundle.profile.adapters  # saved unwrapped from DDP, as in one process

    # a user's own command, from inside the installed bundle; MONAI Label's run has finished, so it starts anew
    bundle.profile.prepare_installed(site, bundle.data)
    overrides = bundle.profile.overrides(bundle.data)
    args = [
        f"--{key}={value!r}" if not isinstance(value, str) else f"--{key}={value}" for key, value in overrides.items()
    ]
    result = run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", *args],
        cwd=site,
        env=outside_env(),
    )
    assert "ends a finished run of 1 epoch(s): starting a new run" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_inference_runs_the_window_and_spacing_the_model_was_selected_with(name):
    """``inference.json``'s sliding window and spacing are those of ``train.json``'s validation,
    where ``model.pt`` was chosen. Networks that normalise over the window (group or instance norm:
    SegResNet, BasicUNet) see other statistics in another window: KD-Net's student, trained on 48³
    crops, segmented one real case with Dice 0.62 through a 48³ window and 0.00 through 64³."""
    root = Path(__file__).parents[2] / "bundles" / name

    def resolved(config: str, *items: str) -> list:
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / config))
        return [list(parser.get_parsed_content(item)) for item in items]

    assert resolved("inference.json", "inferer#roi_size", "pixdim") == resolved(
        "train.json", "validate#inferer#roi_size", "pixdim"
    )
