"""Do with a bundle what MONAI Label 0.8.5's ``monaibundle`` app does with it, using MONAI only.

    python -m tools.bundle.monailabel_compat infer BUNDLE IMAGE [--out label.nii.gz] [--device cpu]
    python -m tools.bundle.monailabel_compat train BUNDLE STUDIES [--max_epochs 1] [--val_split 0.2] [--nproc 2]

A pre-flight check for a bundle that is to be loaded into MONAI Label (and what the tests run for
every bundle of the collection), without installing MONAI Label itself. It follows
``monailabel/tasks/infer/bundle.py`` (``BundleInferTask``), ``tasks/infer/basic_infer.py`` and
``tasks/train/bundle.py`` (``BundleTrainTask``) of MONAI Label 0.8.5:

``infer``: reads ``configs/inference.json`` with ``bundle_root`` set to the bundle's absolute path,
builds ``network_def`` (never ``network``), loads ``models/model.pt`` with ``strict=False`` (and then,
unlike MONAI Label, fails when any key was skipped), runs the ``preprocessing`` transforms one by
one with ``LoadImaged(image_only=False)`` on a data dict holding MONAI Label's own keys
(``image_path``, ``device``, ``model`` ...), the bundle's ``inferer`` on ``image`` and the
``postprocessing`` without ``SaveImaged``, then restores the input's shape and affine
(``Restored``). Label names are ``channel_def`` of the first output in the metadata, lower-cased,
background left out. ``@device`` is replaced by the device the request names.

``train``: builds MONAI Label's datalist from a studies folder (``<id>.nii.gz`` images, labels in
``labels/final/<id>.nii.gz``), splits it ``1 - val_split : val_split`` without shuffling, inserts
its ``CheckpointLoader`` (``models/model.pt`` into ``@network``, ``strict=False``) at the head of
``train#handlers`` and overrides ``bundle_root``, ``device``, ``train#trainer#max_epochs``,
``train#dataset#data`` and ``validate#dataset#data``. With ``--nproc 1`` it runs
``monai.bundle.run`` in this process with the bundle's own ``scripts`` package in place of any
other bundle's (MONAI Label puts the bundle on ``sys.path`` and unloads ``scripts``; here the
package is loaded from the bundle folder directly, to the same effect); otherwise it
writes ``configs/monailabel_train.json`` and runs ``torchrun -m monai.bundle run`` with
``multi_gpu_train.json`` merged last, in a subprocess whose ``PYTHONPATH`` is left as it is.
Before training, the shipped weights must load strictly into the training ``network_def``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import partition_dataset
from monai.inferers import SimpleInferer
from monai.transforms import Compose, LoadImaged, Resize, SaveImaged

from tools.bundle.isolation import bundle_scripts

MODEL_FILE = "model.pt"


def _parser(bundle: Path, config_name: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config_name))
    parser["bundle_root"] = str(bundle)
    return parser


def label_names(bundle: Path) -> dict[str, int]:
    """MONAI Label's label map: the first output's ``channel_def``, lower-cased, without background."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    output = next(iter(meta["network_data_format"]["outputs"].values()))
    return {name.lower(): int(k) for k, name in output.get("channel_def", {}).items() if name.lower() != "background"}


def load_weights_strictly(network: torch.nn.Module, checkpoint: Path, config_id: str) -> None:
    """Load as MONAI Label does (``strict=False``, the ``model`` entry or the whole file), then fail
    when a key was skipped: MONAI Label would only log a warning and run half-initialised."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{checkpoint} does not match `{config_id}`: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]} (MONAI Label loads with strict=False and would ignore this)"
        )


def _transforms(parser: ConfigParser, ids: tuple[str, ...]) -> list:
    transforms: list = []
    for config_id in ids:  # MONAI Label reads both names; the last present one wins
        if config_id in parser:
            content = parser.get_parsed_content(config_id, instantiate=True)
            transforms = list(content.transforms) if isinstance(content, Compose) else list(content)
    return transforms


def infer(bundle: Path, image: Path, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The label map (spatial, channel squeezed) and affine MONAI Label returns for ``image``."""
    bundle, image = bundle.resolve(), image.resolve()
    parser = _parser(bundle, "inference.json")
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_weights_strictly(network, bundle / "models" / MODEL_FILE, "network_def")
    network = network.to(device).eval()

    parser["device"] = device  # MONAI Label replaces `@device` by the request's device
    data = {"image": str(image), "image_path": str(image), "device": device, "model": bundle.name}
    data |= {"model_filename": [MODEL_FILE], "description": "monailabel_compat"}
    for transform in _transforms(parser, ("preprocessing", "pre_transforms")):
        if isinstance(transform, LoadImaged):
            transform._loader.image_only = False
        data = transform(data)

    inferer = parser.get_parsed_content("inferer", instantiate=True) if "inferer" in parser else SimpleInferer()
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None].to(device), network)[0]
    for transform in _transforms(parser, ("postprocessing", "post_transforms")):
        if not isinstance(transform, SaveImaged):
            data = transform(data)
    if data.get("image_path") != str(image):
        raise RuntimeError("the bundle's transforms lost MONAI Label's `image_path`, which its writer needs")

    pred, meta = data["pred"], data["image"].meta
    shape = tuple(int(s) for s in meta["spatial_shape"])
    if tuple(pred.shape[1:]) != shape:
        pred = Resize(spatial_size=shape, mode="nearest")(pred)
    label = np.asarray(pred.detach().cpu())
    return (label[0] if label.shape[0] == 1 else label), np.asarray(meta["original_affine"])


def studies_datalist(studies: Path) -> list[dict[str, str]]:
    """MONAI Label's training list: every image with a final label, as absolute paths."""
    items = []
    for image in sorted(studies.glob("*.nii*")):
        label = studies / "labels" / "final" / image.name
        if label.exists():
            items.append({"image": str(image.resolve()), "label": str(label.resolve())})
    if not items:
        raise FileNotFoundError(f"no image in {studies} has a label in {studies / 'labels' / 'final'}")
    return items


def train_overrides(
    bundle: Path, datalist: list[dict], device: str | torch.device, max_epochs: int, val_split: float
) -> dict:
    """The ids ``BundleTrainTask`` overrides, with its ``CheckpointLoader`` in ``train#handlers``."""
    parser = _parser(bundle, "train.json")
    handlers = parser.get("train#handlers", [])
    checkpoint = bundle / "models" / MODEL_FILE
    if checkpoint.exists() and not any(h.get("_target_") == "CheckpointLoader" for h in handlers):
        load_weights_strictly(parser.get_parsed_content("network_def", instantiate=True), checkpoint, "network_def")
        loader = {"_target_": "CheckpointLoader", "load_path": str(checkpoint), "strict": False}
        handlers.insert(0, loader | {"load_dict": {"model": "$@network"}})
    train, val = partition_dataset(datalist, ratios=[1 - val_split, val_split], shuffle=False)
    return {
        "bundle_root": str(bundle),
        "train#trainer#max_epochs": max_epochs,
        "train#dataset#data": train,
        "device": device,
        "train#handlers": handlers,
        "validate#dataset#data": val,
    }


def train(bundle: Path, overrides: dict, nproc: int = 1, logging_file: str | bool | None = None) -> None:
    """Run the training as MONAI Label does: in this process for one device, ``torchrun`` otherwise.
    ``logging_file`` is passed to ``monai.bundle.run`` (``None``: the bundle's ``logging.conf``, as
    MONAI Label; ``False`` leaves this process's logging alone)."""
    configs = bundle / "configs"
    if nproc == 1:
        from monai.bundle import run

        with bundle_scripts(bundle):
            run(
                run_id="run",
                meta_file=str(configs / "metadata.json"),
                config_file=str(configs / "train.json"),
                logging_file=logging_file,
                **overrides,
            )
        return
    subprocess.run(multi_gpu_command(bundle, overrides, nproc), check=True, env=os.environ.copy())


def multi_gpu_command(bundle: Path, overrides: dict, nproc: int) -> list[str]:
    """Write ``configs/monailabel_train.json`` (``train.json`` with the overrides) as MONAI Label does
    and return its ``torchrun`` command, ``multi_gpu_train.json`` merged last."""
    configs = bundle / "configs"
    parser = _parser(bundle, "train.json")
    for key, value in overrides.items():
        parser[key] = str(value) if isinstance(value, torch.device) else value
    ConfigParser.export_config_file(parser.config, str(configs / "monailabel_train.json"), indent=2)
    config_files = repr([str(configs / "monailabel_train.json"), str(configs / "multi_gpu_train.json")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    command = [*torchrun, f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run", "run"]
    command += ["--meta_file", str(configs / "metadata.json"), "--config_file", config_files]
    return command + ["--logging_file", str(configs / "logging.conf")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    infer_parser = commands.add_parser("infer", help="infer on one image as BundleInferTask does")
    infer_parser.add_argument("bundle", type=Path)
    infer_parser.add_argument("image", type=Path)
    infer_parser.add_argument("--out", type=Path, help="write the label map here (NIfTI, uint8)")
    infer_parser.add_argument("--device", default="cpu")
    train_parser = commands.add_parser("train", help="train on a studies folder as BundleTrainTask does")
    train_parser.add_argument("bundle", type=Path)
    train_parser.add_argument("studies", type=Path, help="<id>.nii.gz images, labels in labels/final/")
    train_parser.add_argument("--max_epochs", type=int, default=1)
    train_parser.add_argument("--val_split", type=float, default=0.2)
    train_parser.add_argument("--nproc", type=int, default=1, help="> 1: MONAI Label's multi-GPU torchrun path")
    train_parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    bundle = args.bundle.resolve()
    if args.command == "infer":
        label, affine = infer(bundle, args.image, torch.device(args.device))
        values = [int(v) for v in np.unique(label)]
        print(f"labels {label_names(bundle)}; label map {label.shape}, values {values}")
        if args.out:
            nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(args.out))
    else:
        overrides = train_overrides(
            bundle, studies_datalist(args.studies), torch.device(args.device), args.max_epochs, args.val_split
        )
        train(bundle, overrides, args.nproc)


if __name__ == "__main__":
    main()
