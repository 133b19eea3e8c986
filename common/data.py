"""Datalists: loaded and checked before a long run starts, split into seeded, case-level subsets, and
marked for distillation on unlabelled images."""

from __future__ import annotations

import logging
import os
import random
import re
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import load_decathlon_datalist
from monai.transforms import MapTransform

NIFTI_SUFFIXES = (".nii", ".nii.gz")
logger = logging.getLogger(__name__)


# Voxel sizes (mm) outside this range come from a header in the wrong units (metres, microns):
# resampled to millimetres such a volume needs terabytes, or shrinks to nothing.
SPACING_RANGE = (0.05, 50.0)


class NiftiFile(NamedTuple):
    """What :func:`read_nifti` learnt of a file (``None`` fields: a format it does not open)."""

    shape: tuple[int, ...] | None  # spatial
    voxels: np.ndarray | None
    affine: np.ndarray | None
    channels: int


def _truncated(path: str, image: nib.Nifti1Image) -> bool:
    """Whether the file holds fewer voxel bytes than its header declares, without decompressing it:
    a gzip file ends with its uncompressed size (modulo 2^32), which a cut file has lost. A
    mismatch (also a multi-member gzip) is confirmed by reading the voxels."""
    expected = int(image.dataobj.offset) + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
    if not path.endswith(".gz"):
        return os.path.getsize(path) < expected
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if int.from_bytes(f.read(4), "little") == expected % 2**32:
            return False
    try:
        np.asanyarray(image.dataobj)
    except (EOFError, OSError, ValueError, zlib.error):
        return True
    return False


def read_nifti(
    path: str, read_voxels: bool, spatial_dims: int = 3, spacing_range: Sequence[float] | None = SPACING_RANGE
) -> NiftiFile:
    """Check a NIfTI file and return its spatial shape, channels, affine and (with ``read_voxels``)
    voxels; other formats are only checked for existence.

    Each failure names the file: missing, unreadable, truncated (found from the header and the
    file's end alone), fewer than ``spatial_dims`` dimensions, a voxel size outside
    ``spacing_range`` (mm), and with ``read_voxels`` NaN or infinite voxels. A 4-D file's last
    dimension counts as its channels."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.endswith(NIFTI_SUFFIXES):
        return NiftiFile(None, None, None, 1)
    try:
        image = nib.load(path)
        cut = _truncated(path, image)
    except Exception as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e
    if cut:
        raise ValueError(f"image file {path} is truncated: it holds fewer voxels than its header declares.")
    if len(image.shape) < spatial_dims:
        raise ValueError(f"image file {path} has shape {image.shape}: this bundle reads {spatial_dims}-D volumes.")
    spacing = tuple(float(z) for z in image.header.get_zooms()[:spatial_dims])
    if spacing_range is not None and not all(spacing_range[0] <= z <= spacing_range[1] for z in spacing):
        shown = tuple(float(f"{z:.4g}") for z in spacing)
        raise ValueError(
            f"image file {path} has voxel spacing {shown} mm, outside the plausible {tuple(spacing_range)} mm: "
            "its header's units are likely wrong (metres or microns)."
        )
    voxels = None
    if read_voxels:
        try:
            voxels = np.asanyarray(image.dataobj)
        except Exception as e:
            raise ValueError(f"cannot read image file {path}: {e}") from e
        if np.issubdtype(voxels.dtype, np.floating) and not np.isfinite(voxels).all():
            raise ValueError(f"image file {path} holds {int((~np.isfinite(voxels)).sum())} NaN or infinite voxel(s).")
    channels = int(np.prod(image.shape[spatial_dims:], dtype=int))
    return NiftiFile(tuple(image.shape[:spatial_dims]), voxels, image.affine, channels)


def _check_label_values(path: str, voxels: np.ndarray, label_classes: int, ignore_value: int | None) -> None:
    values = np.unique(voxels)
    bad = [v for v in values.tolist() if v != ignore_value and not (0 <= v < label_classes and float(v).is_integer())]
    if bad:
        raise ValueError(
            f"label file {path} holds values {bad[:6]} outside the {label_classes} classes 0..{label_classes - 1}"
            + (f" (and the ignore value {ignore_value})" if ignore_value is not None else "")
            + ": the network's class count and the labels' classes differ."
        )


def _check_one_grid(case: str, files: Mapping[str, NiftiFile]) -> None:
    """The images and label of a case must share one voxel grid: shape, and affine to a tenth of a
    voxel (resampling would otherwise move the label against its image)."""
    if len({f.shape for f in files.values()}) > 1:
        listing = ", ".join(f"{os.path.basename(p)} {f.shape}" for p, f in files.items())
        raise ValueError(f"case {case}: image/label shapes differ: {listing}")
    affines = {p: f.affine for p, f in files.items()}
    if not affines:
        return
    first, reference = next(iter(affines.items()))
    tolerance = 0.1 * np.linalg.norm(reference[:3, :3], axis=0).min()
    differing = [p for p, a in affines.items() if np.abs(a - reference).max() > tolerance]
    if differing:

        def grid(path: str) -> str:
            affine = affines[path]
            spacing = tuple(np.round(np.linalg.norm(affine[:3, :3], axis=0), 3).tolist())
            return f"{os.path.basename(path)} spacing {spacing} origin {tuple(np.round(affine[:3, 3], 2).tolist())}"

        listing = ", ".join(grid(p) for p in differing)
        raise ValueError(f"case {case}: image/label grids differ: {listing}, against {grid(first)}")


def load_datalist(
    datalist_file: str,
    data_list_key: str = "training",
    base_dir: str | None = None,
    image_channels: int | None = None,
    check_files: bool = True,
    read_voxels: bool = True,
    label_classes: int | None = None,
    ignore_value: int | None = None,
    required_labels: Sequence[int] | None = None,
) -> list[dict]:
    """``monai.data.load_decathlon_datalist`` that checks every case before a long run starts.

    Checks (each failure names the file or case): the list is not empty; every image and label
    file passes :func:`read_nifti` (exists, is whole, is 3-D, has a plausible voxel spacing and,
    with ``read_voxels``, finite voxels); an item's image files (one per modality, or one 4-D file)
    hold ``image_channels`` channels together; images and label share one grid (shape and affine);
    with ``label_classes`` (and
    ``read_voxels``), every label value is a class index below it or ``ignore_value``; with
    ``required_labels`` (e.g. the tumour label), at least one case holds one of these values,
    and cases holding none are listed in a warning.
    """
    if not os.path.isfile(datalist_file):
        raise FileNotFoundError(f"datalist not found: {datalist_file}")
    try:
        items = load_decathlon_datalist(datalist_file, data_list_key=data_list_key, base_dir=base_dir)
    except ValueError as e:
        raise ValueError(f"datalist {datalist_file}: {e}") from e
    if not items:
        raise ValueError(f"datalist {datalist_file} has no cases under {data_list_key!r}.")
    if not check_files:
        return items
    without_required: list[str] = []
    for item in items:
        images = item["image"] if isinstance(item["image"], (list, tuple)) else [item["image"]]
        files = {f: read_nifti(f, read_voxels) for f in images}
        if image_channels is not None and sum(f.channels for f in files.values()) != image_channels:
            listing = ", ".join(f"{os.path.basename(p)} {f.channels}" for p, f in files.items())
            raise ValueError(
                f"case {images[0]}: {sum(f.channels for f in files.values())} image channel(s) ({listing}), "
                f"expected {image_channels} (a modality file is missing from the datalist, or a file holds "
                "another number of channels)."
            )
        if "label" in item:
            files[item["label"]] = label = read_nifti(item["label"], read_voxels)
            if label_classes is not None and label.voxels is not None:
                _check_label_values(item["label"], label.voxels, label_classes, ignore_value)
            if required_labels is not None and label.voxels is not None:
                if not np.isin(label.voxels, required_labels).any():
                    without_required.append(item["label"])
        _check_one_grid(os.path.dirname(images[0]), {p: f for p, f in files.items() if f.shape is not None})
    if required_labels is not None and read_voxels:
        _report_required_labels(datalist_file, data_list_key, list(required_labels), without_required, len(items))
    return items


def _report_required_labels(datalist: str, key: str, labels: list[int], without: list[str], n_cases: int) -> None:
    if len(without) == n_cases:
        raise ValueError(
            f"no label map of the {n_cases} cases under {key!r} in {datalist} holds label value(s) {labels} "
            f"(e.g. {without[0]}): the configured target label is wrong for this dataset "
            "(check the label values of its label maps and the bundle's target label setting, e.g. `target_labels`)."
        )
    if without:
        names = ", ".join(os.path.basename(f) for f in without[:5]) + (" ..." if len(without) > 5 else "")
        logger.warning(f"{len(without)} of {n_cases} cases under {key!r} hold no label {labels}: {names}")


def case_id(item: Mapping, group: str | None = None) -> str:
    """The case an item belongs to: the first match of the regular expression ``group`` in its
    image path (e.g. ``patient\\d+`` keeps both frames of a patient together), else the path."""
    image = item["image"][0] if isinstance(item["image"], (list, tuple)) else item["image"]
    if group is None:
        return str(image)
    match = re.search(group, str(image))
    if match is None:
        raise ValueError(f"case grouping pattern {group!r} does not match image path {image}.")
    return match.group(0)


def group_cases(items: Sequence[Mapping], group: str | None = None) -> list[list]:
    """Items grouped by :func:`case_id`, groups in first-seen order (each item its own group
    without ``group``)."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(case_id(item, group), []).append(item)
    return list(groups.values())


def split_cases(cases: Sequence, sizes: Mapping[str, int], seed: int, rest: str = "training") -> dict[str, list]:
    """The collection's one seeded split: ``cases`` shuffled with ``seed``, cut into disjoint lists
    of ``sizes`` (name: count, in order), the remaining cases under ``rest``. Every list keeps the
    input order; the same cases, sizes and seed give the same lists.

    Example::

        >>> split_cases(list("abcdefgh"), {"test": 2, "validation": 2}, seed=0)
        {'training': ['a', 'd', 'g', 'h'], 'test': ['b', 'e'], 'validation': ['c', 'f']}
    """
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) > len(cases):
        raise ValueError(f"cannot take {dict(sizes)} cases out of {len(cases)}.")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    split, start = {}, 0
    for name, n in sizes.items():
        split[name] = [cases[i] for i in sorted(order[start : start + n])]
        start += n
    return {rest: [cases[i] for i in sorted(order[start:])], **split}


def _draw(items: Sequence[Mapping], fraction: float, seed: int, group: str | None, what: str) -> list:
    """The items of ``round(fraction * cases)`` cases drawn by :func:`split_cases`, in the list's order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"{what} must be in (0, 1], got {fraction}.")
    groups = group_cases(items, group)
    keep = round(fraction * len(groups))
    if keep == 0:
        raise ValueError(
            f"{what} {fraction} of {len(groups)} cases keeps none; use at least {1 / len(groups):.3g} (one case)."
        )
    chosen = {id(item) for case in split_cases(groups, {"kept": keep}, seed)["kept"] for item in case}
    subset = [item for item in items if id(item) in chosen]
    logger.info(f"{what} {fraction}: {keep} of {len(groups)} cases ({len(subset)} of {len(items)} items)")
    return subset


def select_fraction(items: Sequence[Mapping], fraction: float, seed: int = 0, group: str | None = None) -> list:
    """A seeded, case-level subset of a datalist: ``round(fraction * cases)`` cases chosen by
    :func:`split_cases`, every item of a chosen case kept, the list's order unchanged.

    Args:
        items: the datalist (e.g. from :func:`load_datalist`).
        fraction: in (0, 1]; 1 keeps every case.
        seed: the draw's seed (a different seed gives a different subset; the same, the same).
        group: regular expression naming the case in an image path (see :func:`case_id`).

    Raises:
        ValueError: ``fraction`` outside (0, 1], or too small to keep a single case.
    """
    return _draw(items, fraction, seed, group, "data_fraction")


def split_labelled(
    items: Sequence[Mapping], label_fraction: float = 1.0, seed: int = 0, group: str | None = None
) -> list[dict]:
    """A training list for distillation on unlabelled images too: the labels of a seeded, case-level
    ``label_fraction`` of the labelled cases (drawn as :func:`select_fraction` draws) are used,
    every other item is kept without its label.

    Such an item gets ``"labelled": 0`` and, in place of its label, the path of its (first) image, so
    that its label file is never read and the loading transforms see one geometry;
    :class:`BlankUnlabelledd` then blanks that stand-in right after loading, and the distillation
    loss keeps the unlabelled samples out of every term that reads the label (:mod:`common.keys`).
    Labelled items get ``"labelled": 1``. With ``label_fraction`` 1 and every item labelled, the
    list is returned unchanged (no flag: the ordinary supervised pipeline).

    Raises:
        ValueError: ``label_fraction`` outside (0, 1], or too small to keep a single labelled case.
    """
    with_label = [item for item in items if "label" in item]
    if label_fraction == 1 and len(with_label) == len(items):
        return list(items)
    kept = {id(item) for item in _draw(with_label, label_fraction, seed, group, "label_fraction")}
    marked = []
    for item in items:
        if id(item) in kept:
            marked.append({**item, "labelled": 1})
        else:
            image = item["image"][0] if isinstance(item["image"], (list, tuple)) else item["image"]
            marked.append({**item, "label": image, "labelled": 0})
    return marked


class BlankUnlabelledd(MapTransform):
    """Blank (zero) the label of an item marked ``"labelled": 0`` by :func:`split_labelled`, whose
    label is a stand-in loaded from its image; items without the flag (validation, fully labelled
    training) pass unchanged. Put it right after loading, before anything reads the label.

    Args:
        keys: the label key(s).
        flag_key: the item's labelled flag.
    """

    def __init__(self, keys: KeysCollection = "label", flag_key: str = "labelled", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.flag_key = flag_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if int(d.get(self.flag_key, 1)) == 0:
            for key in self.key_iterator(d):
                d[key] = d[key] * 0
        return d


class CheckImageFiled(MapTransform):
    """Before loading: check the image file(s) of ``keys`` from their headers (:func:`read_nifti`:
    present, whole, ``spatial_dims``-D, a plausible voxel spacing) and, with ``channels``, that the
    files hold that many channels together. Each failure names the file; inference stops before a
    truncated, 2-D or wrongly scaled image reaches the network (a header in metres would otherwise
    be resampled to a volume of terabytes).

    Args:
        keys: the image key(s); a value is a path or a list of paths (one per modality).
        channels: the channels the network reads (``None``: not checked).
        spatial_dims: the dimensions of a volume.
        spacing_range: the plausible voxel size in mm (``None``: not checked).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        channels: int | None = None,
        spatial_dims: int = 3,
        spacing_range: Sequence[float] | None = SPACING_RANGE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels, self.spatial_dims, self.spacing_range = channels, spatial_dims, spacing_range

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = [str(p) for p in d[key]] if isinstance(d[key], (list, tuple)) else [str(d[key])]
            files = {p: read_nifti(p, False, self.spatial_dims, self.spacing_range) for p in paths}
            found = sum(f.channels for f in files.values())
            if self.channels is not None and found != self.channels:
                listing = ", ".join(f"{p} {f.channels}" for p, f in files.items())
                raise ValueError(
                    f"image file(s) with {found} channel(s) ({listing}): this network reads {self.channels}."
                )
        return d


class CheckFinited(MapTransform):
    """After loading: the loaded image(s) of ``keys`` hold no NaN or infinite voxel (the network
    would turn them into a meaningless label map); a failure names the image's file."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            bad = int((~torch.isfinite(torch.as_tensor(d[key]))).sum())
            if bad:
                source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"image file {source} holds {bad} NaN or infinite voxel(s).")
        return d
