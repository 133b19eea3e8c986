"""The KD-Net bundle's modality selection: the student reads some channels of a multi-modal image."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


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
