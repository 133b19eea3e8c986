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


def _spatial_shape(path: str, read_voxels: bool) -> tuple[int, ...] | None:
    """Spatial shape of a NIfTI file (None for other formats, which are only checked for existence)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.endswith(NIFTI_SUFFIXES):
        return None
    try:
        img = nib.load(path)
        if read_voxels:
            np.asanyarray(img.dataobj)
    except Exception as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e
    return tuple(img.shape[:3])


def load_datalist(
    datalist_file: str,
    data_list_key: str = "training",
    base_dir: str | None = None,
    image_channels: int | None = None,
    check_files: bool = True,
    read_voxels: bool = True,
) -> list[dict]:
    """``monai.data.load_decathlon_datalist`` that checks every case before a long run starts.

    Checks (each failure names the file or case): the list is not empty; every image and label
    file exists and can be read (``read_voxels`` decompresses the voxels, catching truncated
    files); a multi-modal ``image`` (a list of per-modality files) has ``image_channels`` files,
    all of one spatial shape, and the label has that shape too.
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
        shapes = {f: _spatial_shape(f, read_voxels) for f in images}
        if "label" in item:
            shapes[item["label"]] = _spatial_shape(item["label"], read_voxels)
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
