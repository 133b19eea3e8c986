"""Loading frozen teacher networks from checkpoints."""

from __future__ import annotations

import os

import torch
from torch import nn


def freeze(network: nn.Module) -> nn.Module:
    """Put ``network`` in eval mode with gradients off, so it can only be a teacher."""
    network.eval()
    network.requires_grad_(False)
    return network


def _state_dict_mismatch(network: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    expected = network.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
    return problems


def load_state_dict_strict(
    network: nn.Module, checkpoint: str, key: str | None = None, map_location="cpu"
) -> nn.Module:
    """Load ``checkpoint`` (``weights_only=True``) into ``network``; a mismatch raises a readable error.

    Args:
        network: the network definition the weights belong to.
        checkpoint: path of a state_dict, or of a dict holding it under ``key`` (e.g. a training
            checkpoint ``{"model": ..., "optimizer": ...}``).
        key: entry of the checkpoint holding the state_dict; ``None`` takes the file as the
            state_dict, unless it is a dict with a single ``"model"`` entry.
        map_location: passed to ``torch.load``.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {checkpoint}: {e}") from e
    if key is not None:
        if key not in state:
            raise KeyError(f"checkpoint {checkpoint} has no entry {key!r}; entries: {sorted(state)}")
        state = state[key]
    elif set(state) == {"model"}:
        state = state["model"]
    problems = _state_dict_mismatch(network, state)
    if problems:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit {type(network).__name__}: "
            + "; ".join(problems)
            + ". Check that the network definition (channels, features) matches the one the weights were trained with."
        )
    network.load_state_dict(state, strict=True)
    return network


def load_teacher(
    network: nn.Module, checkpoint: str, key: str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """A frozen teacher: ``network`` with the weights of ``checkpoint``, on ``device``, eval mode, no gradients.

    Raises ``FileNotFoundError`` when the checkpoint is absent (train the teacher first) and
    ``ValueError`` naming missing/unexpected keys and shape mismatches when it does not fit.
    """
    try:
        load_state_dict_strict(network, checkpoint, key=key)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}. Train the teacher first (configs/train_teacher.json) or point to its weights."
        ) from e
    return freeze(network.to(device))
