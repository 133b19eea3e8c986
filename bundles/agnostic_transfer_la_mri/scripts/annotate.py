"""Black-box teachers and the annotate stage of network-agnostic knowledge transfer.

A teacher is anything that turns an image file into class probabilities: a MONAI bundle folder, a
TorchScript file or a network definition with a state_dict, each with its own preprocessing,
inferer and input spacing. :class:`PseudoLabeler` runs teachers over unlabelled *transferal*
images, brings every teacher's output back to the image's own voxel grid, fuses them and writes
pseudo-label NIfTI files (the input's geometry and affine) plus a datalist for the training stage.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, Invertd
from tqdm import tqdm

from common.data import read_nifti
from common.teachers import freeze, load_state_dict_strict, load_teacher

logger = logging.getLogger(__name__)

ACTIVATIONS = ("softmax", "sigmoid")
FUSIONS = ("mean", "vote")


def sha256(path: str) -> str:
    """SHA-256 of a file (teacher weights, written labels) for the annotation manifest."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Teacher:
    """A frozen model seen only through ``image file -> class probabilities on that file's grid``.

    Args:
        name: how logs, errors and the manifest refer to this teacher.
        network: maps a (1, C_in, *spatial) tensor to logits (1, C, *spatial); any ``nn.Module`` or
            TorchScript module.
        preprocessing: the teacher's own transforms from ``{"image": path}`` to a channel-first
            image (loading, orientation, spacing, intensity scaling); invertible spatial steps are
            undone on the output.
        inferer: e.g. ``SlidingWindowInferer`` with the teacher's patch size.
        activation: ``"softmax"`` (C >= 2 classes) or ``"sigmoid"`` (one foreground channel,
            turned into background/foreground probabilities).
        device: where the teacher runs.
        sources: files that identify the teacher (weights, configs); their hashes go into the manifest.
    """

    def __init__(
        self,
        name: str,
        network: Callable,
        preprocessing: Callable,
        inferer: Callable,
        activation: str = "softmax",
        device: str | torch.device = "cpu",
        sources: Sequence[str] = (),
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"teacher {name!r}: activation must be one of {ACTIVATIONS}, got {activation!r}.")
        self.name = name
        self.device = torch.device(device)
        if isinstance(network, torch.jit.ScriptModule):  # no requires_grad_ there; inference runs under no_grad
            network = network.to(self.device).eval()
        elif isinstance(network, torch.nn.Module):
            network = freeze(network.to(self.device))
        self.network = network
        self.preprocessing = preprocessing if isinstance(preprocessing, Compose) else Compose(preprocessing)
        self.inferer = inferer
        self.activation = activation
        self.sources = [os.path.abspath(s) for s in sources]
        self._invert = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False)

    def fingerprint(self) -> dict:
        return {"kind": type(self).__name__, "sources": {s: sha256(s) for s in self.sources}}

    @torch.no_grad()
    def probabilities(self, image_path: str, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Class probabilities (C, *spatial_shape) of ``image_path`` on its own voxel grid."""
        data = self.preprocessing({"image": image_path})
        logits = self.inferer(data["image"][None].to(self.device), self.network)
        if self.activation == "sigmoid":
            if logits.shape[1] != 1:
                raise ValueError(
                    f"teacher {self.name!r}: sigmoid activation needs one output channel, got {logits.shape[1]}."
                )
            foreground = torch.sigmoid(logits.float())
            probs = torch.cat([1 - foreground, foreground], dim=1)
        else:
            if logits.shape[1] < 2:
                raise ValueError(
                    f"teacher {self.name!r}: softmax needs >= 2 output channels; use activation='sigmoid'."
                )
            probs = torch.softmax(logits.float(), dim=1)
        data["pred"] = probs[0].cpu()
        probs = self._invert(data)["pred"]
        if tuple(probs.shape[1:]) != tuple(spatial_shape):
            raise ValueError(
                f"teacher {self.name!r}: output on {image_path} has shape {tuple(probs.shape[1:])} after undoing its "
                f"preprocessing, the image has {tuple(spatial_shape)}; its preprocessing must be invertible "
                "(MONAI spatial transforms) so the output can be brought back to the image grid."
            )
        return torch.as_tensor(probs).float()


class NetworkTeacher(Teacher):
    """A teacher from a network definition and a state_dict checkpoint (``weights_only=True``, strict)."""

    def __init__(self, name: str, network: torch.nn.Module, checkpoint: str, key: str | None = None, **kwargs) -> None:
        try:
            load_teacher(network, checkpoint, key=key)
        except (OSError, ValueError, KeyError) as e:
            raise type(e)(f"teacher {name!r} failed to load: {e}") from e
        super().__init__(name, network, sources=[checkpoint], **kwargs)


class TorchScriptTeacher(Teacher):
    """A teacher from a TorchScript file (e.g. ``ckpt_export`` output); its preprocessing is stated in the config."""

    def __init__(self, name: str, path: str, **kwargs) -> None:
        device = kwargs.get("device", "cpu")
        try:
            network = torch.jit.load(path, map_location=device)
        except Exception as e:
            raise ValueError(f"teacher {name!r} failed to load TorchScript file {path}: {e}") from e
        super().__init__(name, network.eval(), sources=[path], **kwargs)


class BundleTeacher(Teacher):
    """A teacher from another MONAI bundle folder: its inference config's ``network_def``,
    ``preprocessing`` and ``inferer``, and its ``models/model.pt`` (strict, ``weights_only=True``).

    Args:
        name: teacher name.
        bundle_dir: the bundle folder (holding ``configs/`` and ``models/``).
        config_file: inference config inside the bundle.
        weights: weights file inside the bundle.
        activation, device: as for :class:`Teacher`.
    """

    def __init__(
        self,
        name: str,
        bundle_dir: str,
        config_file: str = "configs/inference.json",
        weights: str = "models/model.pt",
        activation: str = "softmax",
        device: str | torch.device = "cpu",
    ) -> None:
        config_path, weights_path = os.path.join(bundle_dir, config_file), os.path.join(bundle_dir, weights)
        try:
            parser = ConfigParser()
            parser.read_config(config_path)
            parser["bundle_root"] = os.path.abspath(bundle_dir)
            parser["device"] = torch.device(device)
            network = parser.get_parsed_content("network_def")
            preprocessing = parser.get_parsed_content("preprocessing")
            inferer = parser.get_parsed_content("inferer")
            load_state_dict_strict(network, weights_path)
        except Exception as e:
            raise ValueError(f"teacher {name!r} failed to load from bundle {bundle_dir}: {e}") from e
        super().__init__(name, network, preprocessing, inferer, activation, device, sources=[config_path, weights_path])


def fuse(probabilities: Sequence[torch.Tensor], method: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse teachers' class probabilities, each (C, *spatial), into ``(fused, labels)``.

    ``mean``: ``fused`` is the mean probability, ``labels`` its argmax. ``vote``: ``fused`` is the
    fraction of teachers voting for each class, ``labels`` the majority class, ties broken by the
    mean probability. ``fused.max(0)`` is the confidence the confidence mask thresholds.
    """
    if method not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {method!r}.")
    stacked = torch.stack(list(probabilities))
    mean = stacked.mean(0)
    if method == "mean":
        return mean, mean.argmax(0)
    classes = stacked.shape[1]
    votes = torch.nn.functional.one_hot(stacked.argmax(1), classes).movedim(-1, 1).float().mean(0)
    # vote fractions differ by at least 1/n; a tie-break below 1/n never overturns a majority
    return votes, (votes + mean * (0.5 / len(stacked))).argmax(0)


def image_paths(
    datalist_file: str | None = None,
    data_list_key: str = "transferal",
    base_dir: str | None = None,
    folder: str | None = None,
    pattern: str = "*.nii.gz",
) -> list[str]:
    """The transferal images: the ``image`` entries of a datalist list, or the files of ``folder``
    matching ``pattern`` (labels, if any, are never read)."""
    if folder is not None:
        paths = sorted(glob.glob(os.path.join(glob.escape(folder), "**", pattern), recursive=True))
        where = f"folder {folder} (pattern {pattern!r})"
    else:
        if datalist_file is None or not os.path.isfile(datalist_file):
            raise FileNotFoundError(f"transferal datalist not found: {datalist_file}")
        paths = [item["image"] for item in load_decathlon_datalist(datalist_file, False, data_list_key, base_dir)]
        where = f"datalist {datalist_file} (list {data_list_key!r})"
    if not paths:
        raise ValueError(f"the transferal set is empty: no images in {where}.")
    return paths


def _case_name(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def _atomic_nifti(array: np.ndarray, reference: nib.Nifti1Image, path: str, slope: float | None = None) -> None:
    """Write ``array`` with ``reference``'s affine and orientation codes, under a temporary name renamed
    when complete; ``slope`` is the NIfTI scaling readers apply (``value = slope * stored``)."""
    image = nib.Nifti1Image(array, reference.affine)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    image.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]))
    image.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]))
    partial = os.path.join(os.path.dirname(path), f".partial-{os.getpid()}-{os.path.basename(path)}")
    nib.save(image, partial)
    os.replace(partial, path)


def _atomic_json(content: dict, path: str) -> None:
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(partial, path)


class PseudoLabeler:
    """The annotate stage: teachers label the transferal images; the student later learns from the labels.

    For each image: every teacher's probabilities on the image grid, fused (``mean`` probability or
    majority ``vote``), hard labels by argmax; with ``confidence_threshold``, voxels whose fused
    maximum probability is below it get ``ignore_value`` (the student's loss skips them). Writes
    ``labels/<case>.nii.gz`` (uint8, the image's affine), optionally ``probabilities/<case>.nii.gz``
    (classes last, uint8 with NIfTI scaling 1/255 so readers get probabilities in steps of 1/255:
    an extension for soft-target training), ``datalist.json`` (list
    ``training``) and ``manifest.json`` (teachers with file hashes, settings, per-case label hashes).

    Safe to interrupt: each file is written under a temporary name and renamed when complete, the
    manifest after every case; a re-run skips cases whose label is in the manifest with a matching
    hash, and annotates everything again when teachers or settings changed.

    Args:
        teachers: :class:`Teacher` objects (unique names).
        images: transferal image files.
        output_dir: where labels, datalist and manifest go.
        fusion: ``"mean"`` or ``"vote"``.
        confidence_threshold: ``None`` (keep every voxel) or a value in (0, 1].
        ignore_value: label value of masked voxels (must not be a class index).
        num_classes: classes the student expects; teachers must all produce this many.
        save_probabilities: also write the fused probabilities.
        progress: show a progress bar.
    """

    def __init__(
        self,
        teachers: Sequence[Teacher],
        images: Sequence[str],
        output_dir: str,
        fusion: str = "mean",
        confidence_threshold: float | None = None,
        ignore_value: int = 255,
        num_classes: int | None = None,
        save_probabilities: bool = False,
        progress: bool = True,
    ) -> None:
        teachers = list(teachers)
        if not teachers:
            raise ValueError("no teacher given: the annotate stage needs at least one.")
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}.")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
        if confidence_threshold is not None and not 0 < confidence_threshold <= 1:
            raise ValueError(f"confidence_threshold must be in (0, 1] or None, got {confidence_threshold}.")
        if not 0 < ignore_value < 256 or (num_classes is not None and ignore_value < num_classes):
            raise ValueError(f"ignore_value {ignore_value} must be in 1..255 and not a class index.")
        if not images:
            raise ValueError("the transferal set is empty: no images to annotate.")
        if not isinstance(save_probabilities, bool):
            raise TypeError(f"save_probabilities must be True or False, got {save_probabilities!r}.")
        cases = [_case_name(p) for p in images]
        duplicates = sorted({c for c in cases if cases.count(c) > 1})
        if duplicates:
            raise ValueError(f"transferal images share file names {duplicates}; pseudo labels are named after them.")
        self.teachers, self.images, self.cases = teachers, list(images), cases
        self.output_dir = output_dir
        self.fusion, self.confidence_threshold, self.ignore_value = fusion, confidence_threshold, ignore_value
        self.num_classes, self.save_probabilities, self.progress = num_classes, save_probabilities, progress

    def _settings(self) -> dict:
        return {
            "teachers": {t.name: t.fingerprint() for t in self.teachers},
            "fusion": self.fusion,
            "confidence_threshold": self.confidence_threshold,
            "ignore_value": self.ignore_value,
            "save_probabilities": self.save_probabilities,
        }

    def _done(self, entry: dict | None, image: str) -> bool:
        if not entry or entry["image"] != os.path.abspath(image):
            return False
        files = [(entry["label"], entry["label_sha256"])]
        if self.save_probabilities:
            files.append((entry.get("probabilities"), entry.get("probabilities_sha256")))
        for relative, digest in files:
            path = os.path.join(self.output_dir, relative) if relative else ""
            if not os.path.isfile(path) or sha256(path) != digest:
                return False
        return True

    def _teacher_probabilities(self, image: str, spatial_shape: Sequence[int]) -> list[torch.Tensor]:
        outputs = [t.probabilities(image, spatial_shape) for t in self.teachers]
        counts = {t.name: p.shape[0] for t, p in zip(self.teachers, outputs, strict=True)}
        expected = self.num_classes or outputs[0].shape[0]
        if any(c != expected for c in counts.values()):
            raise ValueError(
                f"teachers disagree on the number of classes on {image}: {counts}"
                + (f"; the student expects {self.num_classes}" if self.num_classes else "")
                + ". Every teacher must produce the same classes as the student."
            )
        return outputs

    def run(self) -> str:
        """Annotate every transferal image not already done; return the path of the written datalist."""
        shapes = {p: read_nifti(p, read_voxels=True)[0] for p in self.images}  # names an unreadable file up front
        for sub in ("labels", "probabilities") if self.save_probabilities else ("labels",):
            os.makedirs(os.path.join(self.output_dir, sub), exist_ok=True)
        manifest_path = os.path.join(self.output_dir, "manifest.json")
        settings = self._settings()
        manifest = {"settings": settings, "cases": {}}
        if os.path.isfile(manifest_path):
            with open(manifest_path) as f:
                previous = json.load(f)
            if previous.get("settings") == settings:
                manifest["cases"] = previous.get("cases", {})
            else:
                logger.warning(
                    f"teachers or settings changed since {manifest_path} was written: annotating every case again."
                )
        skipped = 0
        for image, case in tqdm(
            zip(self.images, self.cases, strict=True),
            total=len(self.images),
            desc="annotate",
            disable=not self.progress,
        ):
            if self._done(manifest["cases"].get(case), image):
                skipped += 1
                continue
            reference = nib.load(image)
            fused, labels = fuse(self._teacher_probabilities(image, shapes[image]), self.fusion)
            labels = labels.numpy().astype(np.uint8)
            if self.confidence_threshold is not None:
                labels[fused.max(0).values.numpy() < self.confidence_threshold] = self.ignore_value
            entry = {"image": os.path.abspath(image), "label": f"labels/{case}.nii.gz"}
            _atomic_nifti(labels, reference, os.path.join(self.output_dir, entry["label"]))
            entry["label_sha256"] = sha256(os.path.join(self.output_dir, entry["label"]))
            if self.save_probabilities:
                entry["probabilities"] = f"probabilities/{case}.nii.gz"
                path = os.path.join(self.output_dir, entry["probabilities"])
                quantized = torch.round(fused.movedim(0, -1) * 255).numpy().astype(np.uint8)
                _atomic_nifti(quantized, reference, path, slope=1 / 255)
                entry["probabilities_sha256"] = sha256(path)
            entry["ignored_fraction"] = float((labels == self.ignore_value).mean())
            manifest["cases"][case] = entry
            _atomic_json(manifest, manifest_path)
            logger.info(
                f"{case}: labelled by {[t.name for t in self.teachers]}, {entry['ignored_fraction']:.1%} ignored"
            )
        keys = ("image", "label", "probabilities") if self.save_probabilities else ("image", "label")
        datalist = {
            "description": "pseudo labels written by the transfer bundle's PseudoLabeler; see manifest.json",
            "teachers": [t.name for t in self.teachers],
            "training": [{k: manifest["cases"][c][k] for k in keys} for c in self.cases],
        }
        datalist_path = os.path.join(self.output_dir, "datalist.json")
        _atomic_json(datalist, datalist_path)
        logger.info(f"{len(self.cases) - skipped} case(s) annotated, {skipped} already done; datalist {datalist_path}")
        return datalist_path
