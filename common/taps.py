"""Feature taps: capture intermediate outputs of a network by module name through forward hooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


def named_layers(network: nn.Module) -> list[str]:
    """Names usable as taps: every named submodule of ``network`` (``""``, the root, excluded)."""
    return [name for name, _ in network.named_modules() if name]


class FeatureTaps:
    """Record the outputs of named submodules of ``network`` while the taps are open.

    The network's ``forward`` is left untouched (torchdistill-style): inside ``with taps:`` one
    forward hook per layer stores the layer's output in ``features[name]``; leaving the block
    removes the hooks and drops the features, so nothing is recorded (or kept alive) outside it,
    e.g. during validation. Features keep their autograd graph, so a loss on a student feature
    trains the student; a teacher run under ``torch.no_grad`` yields detached features.

    Args:
        network: the module to tap.
        layers: module paths as given by ``network.named_modules()``, e.g. ``"down_layers.3"``.

    Raises:
        ValueError: a layer name is not a submodule of ``network``; the message lists valid names.

    Example::

        >>> taps = FeatureTaps(net, ["down_layers.3"])
        >>> with taps:
        ...     logits = net(x)
        ...     bottleneck = taps.features["down_layers.3"]
    """

    def __init__(self, network: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(network.named_modules())
        missing = [name for name in layers if not name or name not in modules]
        if missing:
            raise ValueError(
                f"cannot tap {missing} on {type(network).__name__}: no such module. "
                f"Valid layer names: {named_layers(network)}"
            )
        self._modules = {name: modules[name] for name in layers}
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _recorder(self, name: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, (tuple, list)):  # blocks returning (features, skip) keep the first
                output = output[0]
            self.features[name] = output

        return record

    def __enter__(self) -> FeatureTaps:
        if self._handles:
            raise RuntimeError("these taps are already open.")
        self._handles = [module.register_forward_hook(self._recorder(name)) for name, module in self._modules.items()]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features.clear()


def tapped_channels(
    network: nn.Module, layers: Mapping[str, str | Sequence[str]], input_shape: Sequence[int]
) -> dict[str, int]:
    """The channel count of each tap, by key, read from one forward pass on zeros of
    ``input_shape`` (B, C, *spatial): what a config needs to size an adapter without assuming how
    wide a network's layers are. A key naming several layers (a combination concatenated along
    channels) gets their sum.

    The pass runs without gradients in eval mode (normalisation statistics are not updated) and
    restores the network's mode, so the network is left as it was.

    Example::

        >>> from monai.networks.nets import BasicUNet
        >>> net = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4))
        >>> tapped_channels(net, {"bottleneck": "down_4", "both": ["down_1", "down_2"]}, [1, 1, 32, 32])
        {'bottleneck': 16, 'both': 12}
    """
    names = {key: [layer] if isinstance(layer, str) else list(layer) for key, layer in layers.items()}
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    taps = FeatureTaps(network, sorted({layer for group in names.values() for layer in group}))
    training = network.training
    try:
        with torch.no_grad(), taps:
            network.eval()(torch.zeros(*input_shape, device=device))
            return {key: sum(int(taps.features[layer].shape[1]) for layer in group) for key, group in names.items()}
    finally:
        network.train(training)
