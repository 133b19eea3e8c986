"""The HLFD bundle's input check: a Hounsfield-unit window only makes sense on CT."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

logger = logging.getLogger(__name__)


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
