"""The composite distillation loss: named, weighted terms reading named tensors, and the learnable
adapters those terms own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from common.keys import LABEL, LABELLED, parse_key
from common.losses.base import concat_resized

InputSpec = str | Sequence[str]
TERM_KEYS = ("loss", "inputs", "weight", "adapter", "adapters")


def select_terms(terms: Mapping[str, Mapping], names: Sequence[str], prefix: str = "") -> dict[str, Mapping]:
    """The terms ``prefix + name`` for each of ``names``, e.g. the scales an ablation distils
    (``select_terms(contrastive_terms, ["bottleneck"], prefix="contrast_")``); an unknown name is
    an error listing the valid ones."""
    valid = [key.removeprefix(prefix) for key in terms if key.startswith(prefix)]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"unknown term(s) {unknown}; choose from {valid}.")
    return {prefix + name: terms[prefix + name] for name in names}


class DistillationLoss(nn.Module):
    """Weighted sum of named loss terms, each reading named tensors (mdistiller's dict of losses).

    ``terms`` maps a term name to ``{"loss": callable, "inputs": [spec, ...], "weight": w,
    "adapter": module, "adapters": [module | None, ...]}`` (``weight`` and the adapters optional).
    An input ``spec`` is a key of :mod:`common.keys` (``"student"``, ``"label"``, ``"image"``, a
    teacher's name, ``"<owner>:<layer>"``), or a list of keys whose maps are combined: concatenated
    along channels on the grid of the smallest (:func:`~common.losses.base.concat_resized`, e.g.
    several teacher layers). ``adapters`` holds one optional module per input, applied to that
    input before the loss (e.g. a learnable 1x1 convolution); ``adapter`` is short for an adapter
    on the first (student) input. The loss is then called as ``loss(*inputs)``.

    Adapters are submodules of this loss: optimise ``loss.parameters()`` with the student and save
    this module in training checkpoints; they are not part of the student network and never
    reach ``model.pt``.

    ``forward(inputs)`` returns ``(total, terms)``: the weighted sum and a dict of each weighted
    term, for logging by name. When ``inputs`` holds ``"labelled"``, a (B,) mask of the samples
    whose label may be used, each term reading ``"label"`` is computed on those samples only (and
    is 0 in a batch without any), while the other terms, e.g. distillation, use every sample.

    Example::

        >>> loss = DistillationLoss({
        ...     "seg": {"loss": DiceCELoss(to_onehot_y=True, softmax=True), "inputs": ["student", "label"]},
        ...     "kd": {"loss": LogitDistillationLoss(4.0), "inputs": ["student", "teacher"], "weight": 0.5},
        ... })
        >>> total, terms = loss({"student": s, "teacher": t, "label": y})  # terms: {"seg": ..., "kd": ...}
    """

    def __init__(self, terms: Mapping[str, Mapping]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("DistillationLoss needs at least one term.")
        self.losses: dict[str, Callable] = {}
        self.inputs: dict[str, list[InputSpec]] = {}
        self.weights: dict[str, float] = {}
        self.adapters = nn.ModuleDict()
        loss_modules = nn.ModuleDict()
        for name, spec in terms.items():
            unknown = set(spec) - set(TERM_KEYS)
            if unknown or "loss" not in spec or "inputs" not in spec:
                raise ValueError(
                    f"term {name!r} must have 'loss' and 'inputs' (optional 'weight', 'adapter', 'adapters'); "
                    f"got keys {sorted(spec)}."
                )
            keys = spec["inputs"]
            if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
                raise ValueError(f"term {name!r}: 'inputs' must be a non-empty list of input names, got {keys!r}.")
            for key in keys:
                if not isinstance(key, str) and (not isinstance(key, Sequence) or not key):
                    raise ValueError(f"term {name!r}: input {key!r} is neither a name nor a non-empty list of names.")
                for one in [key] if isinstance(key, str) else key:
                    try:
                        parse_key(one)
                    except ValueError as e:
                        raise ValueError(f"term {name!r}: {e}") from e
            self.losses[name] = spec["loss"]
            if isinstance(spec["loss"], nn.Module):
                loss_modules[name] = spec["loss"]
            self.inputs[name] = [key if isinstance(key, str) else list(key) for key in keys]
            self.weights[name] = float(spec.get("weight", 1.0))
            adapters = self._adapters(name, spec, len(keys))
            if adapters is not None:
                self.adapters[name] = adapters
        self.loss_modules = loss_modules

    @staticmethod
    def _adapters(name: str, spec: Mapping, n_inputs: int) -> nn.ModuleList | None:
        if spec.get("adapter") is not None and spec.get("adapters") is not None:
            raise ValueError(f"term {name!r}: give 'adapter' (first input) or 'adapters' (one per input), not both.")
        adapters = spec.get("adapters")
        if adapters is None:
            adapters = [spec.get("adapter")] + [None] * (n_inputs - 1)
        if len(adapters) != n_inputs:
            raise ValueError(f"term {name!r}: {len(adapters)} adapters for {n_inputs} inputs; use null for none.")
        if all(a is None for a in adapters):
            return None
        return nn.ModuleList([nn.Identity() if a is None else a for a in adapters])

    @staticmethod
    def keys_of(specs: Sequence[InputSpec]) -> set[str]:
        """The input keys a list of input specs reads (a combined input reads each of its keys)."""
        return {key for spec in specs for key in ([spec] if isinstance(spec, str) else spec)}

    @property
    def required_inputs(self) -> set[str]:
        """Every input key some term reads."""
        return self.keys_of([spec for specs in self.inputs.values() for spec in specs])

    def _gather(self, name: str, spec: InputSpec, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        keys = [spec] if isinstance(spec, str) else spec
        missing = [key for key in keys if key not in inputs]
        if missing:
            raise KeyError(f"loss term {name!r} needs {missing}; available inputs: {sorted(inputs)}.")
        if isinstance(spec, str):
            return inputs[spec]
        try:
            return concat_resized([inputs[key] for key in keys])
        except ValueError as e:
            raise ValueError(f"loss term {name!r}, combining {keys}: {e}") from e

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms: dict[str, torch.Tensor] = {}
        labelled = inputs.get(LABELLED)
        for name, loss in self.losses.items():
            args = [self._gather(name, spec, inputs) for spec in self.inputs[name]]
            if name in self.adapters:
                for i, adapter in enumerate(self.adapters[name]):
                    try:
                        args[i] = adapter(args[i])
                    except RuntimeError as e:
                        raise RuntimeError(
                            f"adapter {i} of loss term {name!r} failed on input {self.inputs[name][i]!r} "
                            f"of shape {tuple(args[i].shape)}: {e}"
                        ) from e
            if labelled is not None and LABEL in self.keys_of(self.inputs[name]):
                mask = torch.as_tensor(labelled, device=args[0].device).reshape(-1).bool()
                if not bool(mask.any()):  # no label in this batch: 0, with every input kept in the graph
                    terms[name] = sum(a.sum() * 0.0 for a in args if a.requires_grad) + args[0].new_zeros(())
                    continue
                args = [a[mask] for a in args]
            terms[name] = self.weights[name] * loss(*args).mean()
        total = torch.stack(list(terms.values())).sum()
        return total, terms
