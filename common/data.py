"""Data helpers: datalists checked before training starts, and modality (channel) selection."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import load_decathlon_datalist
from monai.transforms import MapTransform

NIFTI_SUFFIXES = (".nii", ".nii.gz")


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
) -> list[dict]:
    """``monai.data.load_decathlon_datalist`` that checks every case before a long run starts.

    Checks (each failure names the file or case): the list is not empty; every image and label
    file exists and can be read (``read_voxels`` decompresses the voxels, catching truncated
    files); a multi-modal ``image`` (a list of per-modality files) has ``image_channels`` files,
    all of one spatial shape, and the label has that shape too; with ``label_classes`` (and
    ``read_voxels``), every label value is a class index below it or ``ignore_value``.
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
        known = {f: s for f, s in shapes.items() if s is not None}
        if len(set(known.values())) > 1:
            listing = ", ".join(f"{os.path.basename(f)} {s}" for f, s in known.items())
            raise ValueError(f"case {os.path.dirname(images[0])}: image/label shapes differ: {listing}")
    return items


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
