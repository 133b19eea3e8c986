"""Data helpers: datalists checked before training starts, and modality (channel) selection."""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import load_decathlon_datalist
from monai.transforms import MapTransform

NIFTI_SUFFIXES = (".nii", ".nii.gz")
logger = logging.getLogger(__name__)


def read_nifti(path: str, read_voxels: bool) -> tuple[tuple[int, ...] | None, np.ndarray | None]:
    """Spatial shape and (with ``read_voxels``) voxels of a NIfTI file; other formats are only
    checked for existence and give ``(None, None)``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.endswith(NIFTI_SUFFIXES):
        return None, None
    try:
        img = nib.load(path)
        voxels = np.asanyarray(img.dataobj) if read_voxels else None
    except Exception as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e
    return tuple(img.shape[:3]), voxels


def _check_label_values(path: str, voxels: np.ndarray, label_classes: int, ignore_value: int | None) -> None:
    values = np.unique(voxels)
    bad = [v for v in values.tolist() if v != ignore_value and not (0 <= v < label_classes and float(v).is_integer())]
    if bad:
        raise ValueError(
            f"label file {path} holds values {bad[:6]} outside the {label_classes} classes 0..{label_classes - 1}"
            + (f" (and the ignore value {ignore_value})" if ignore_value is not None else "")
            + ": the network's class count and the labels' classes differ."
        )


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
    file exists and can be read (``read_voxels`` decompresses the voxels, catching truncated
    files); a multi-modal ``image`` (a list of per-modality files) has ``image_channels`` files,
    all of one spatial shape, and the label has that shape too; with ``label_classes`` (and
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
        if image_channels is not None and len(images) != image_channels:
            raise ValueError(
                f"case {images[0]}: {len(images)} modality file(s), expected {image_channels} "
                f"(a modality file is missing from the datalist)."
            )
        shapes = {f: read_nifti(f, read_voxels)[0] for f in images}
        if "label" in item:
            shapes[item["label"]], voxels = read_nifti(item["label"], read_voxels)
            if label_classes is not None and voxels is not None:
                _check_label_values(item["label"], voxels, label_classes, ignore_value)
            if required_labels is not None and voxels is not None and not np.isin(voxels, required_labels).any():
                without_required.append(item["label"])
        known = {f: s for f, s in shapes.items() if s is not None}
        if len(set(known.values())) > 1:
            listing = ", ".join(f"{os.path.basename(f)} {s}" for f, s in known.items())
            raise ValueError(f"case {os.path.dirname(images[0])}: image/label shapes differ: {listing}")
    if required_labels is not None and read_voxels:
        _report_required_labels(datalist_file, data_list_key, list(required_labels), without_required, len(items))
    return items


def _report_required_labels(datalist: str, key: str, labels: list[int], without: list[str], n_cases: int) -> None:
    if len(without) == n_cases:
        raise ValueError(
            f"no label map of the {n_cases} cases under {key!r} in {datalist} holds label value(s) {labels} "
            f"(e.g. {without[0]}): the configured target label is wrong for this dataset "
            "(KiTS19 and LiTS tumours are 2; check `target_labels`)."
        )
    if without:
        names = ", ".join(os.path.basename(f) for f in without[:5]) + (" ..." if len(without) > 5 else "")
        logger.warning(f"{len(without)} of {n_cases} cases under {key!r} hold no label {labels}: {names}")


def case_id(item: Mapping, group: str | None = None) -> str:
    """The case an item belongs to: the first match of the regular expression ``group`` in its
    image path (e.g. ``patient\\d+`` keeps both ACDC frames of a patient together), else the path."""
    image = item["image"][0] if isinstance(item["image"], (list, tuple)) else item["image"]
    if group is None:
        return str(image)
    match = re.search(group, str(image))
    if match is None:
        raise ValueError(f"case grouping pattern {group!r} does not match image path {image}.")
    return match.group(0)


def select_fraction(items: Sequence[Mapping], fraction: float, seed: int = 0, group: str | None = None) -> list:
    """A seeded, case-level subset of a datalist: ``round(fraction * cases)`` cases drawn without
    replacement, every item of a chosen case kept, the list's order unchanged.

    Args:
        items: the datalist (e.g. from :func:`load_datalist`).
        fraction: in (0, 1]; 1 keeps every case.
        seed: the draw's seed (a different seed gives a different subset; the same, the same).
        group: regular expression naming the case in an image path (see :func:`case_id`).

    Raises:
        ValueError: ``fraction`` outside (0, 1], or too small to keep a single case.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data_fraction must be in (0, 1], got {fraction}.")
    cases = sorted({case_id(item, group) for item in items})
    keep = round(fraction * len(cases))
    if keep == 0:
        raise ValueError(
            f"data_fraction {fraction} of {len(cases)} cases keeps none; use at least {1 / len(cases):.3g} (one case)."
        )
    chosen = set(random.Random(seed).sample(cases, keep))
    subset = [item for item in items if case_id(item, group) in chosen]
    logger.info(f"data_fraction {fraction}: {keep} of {len(cases)} cases ({len(subset)} of {len(items)} items)")
    return subset


class SelectChannelsd(MapTransform):
    """Keep the listed channels (e.g. the student's modality) of channel-first data.

    Args:
        keys: keys of the data to select from.
        channels: channel indices to keep, in order.
        names: optional names of the input channels (modalities), used in error messages.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: Sequence[int],
        names: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = [int(c) for c in channels]
        if not self.channels:
            raise ValueError("SelectChannelsd needs at least one channel index.")
        self.names = list(names) if names is not None else None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            n = d[key].shape[0]
            bad = [c for c in self.channels if not -n <= c < n]
            if bad:
                named = f" ({', '.join(self.names)})" if self.names else ""
                raise ValueError(f"channel index {bad} out of range: {key!r} has {n} channel(s){named}.")
            d[key] = d[key][self.channels]
        return d


class WarnIfNotCTd(MapTransform):
    """Warn, once per image, when an image that is about to get a Hounsfield-unit window does not
    look like CT: CT holds air at about -1000 HU, so its minimum lies far below zero. An MRI or an
    already normalised image passed through a HU window would be clipped into a nearly constant
    image without any error; this check says so and names the file. Data are passed through unchanged.

    Args:
        keys: image keys to check.
        hu_window: the configured window ``(low, high)``, quoted in the warning.
        max_min_hu: an image whose minimum is above this value is reported (default -500 HU).
    """

    def __init__(
        self,
        keys: KeysCollection,
        hu_window: Sequence[float] = (-1000.0, 1000.0),
        max_min_hu: float = -500.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.hu_window = tuple(float(v) for v in hu_window)
        self.max_min_hu = float(max_min_hu)
        self._warned: set[str] = set()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        for key in self.key_iterator(data):
            image = data[key]
            low, high = float(image.min()), float(image.max())
            source = str(getattr(image, "meta", {}).get("filename_or_obj", key))
            if low > self.max_min_hu and source not in self._warned:
                self._warned.add(source)
                logger.warning(
                    f"{source} does not look like CT in Hounsfield units (intensities {low:g}..{high:g}, no air "
                    f"below {self.max_min_hu:g}): the HU window {self.hu_window} will clip it. For MRI or "
                    "pre-normalised images configure another intensity normalisation."
                )
        return data
