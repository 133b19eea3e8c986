"""Why a distillation term helps or hurts: how hard each term pulls on the student, and in which
direction compared with the segmentation term."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _flat_gradient(value: torch.Tensor, parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, parameters, strict=True)]
    )


def term_gradients(
    terms: Mapping[str, torch.Tensor], parameters: Sequence[torch.Tensor], reference: str | None
) -> dict[str, float]:
    """For each (weighted) loss term, the L2 norm of its gradient on ``parameters`` (``grad_norm_<name>``)
    and the cosine between that gradient and the ``reference`` term's (``grad_cos_<name>``):

        g_k = d term_k / d theta,    grad_norm_k = ||g_k||,    grad_cos_k = <g_k, g_ref> / (||g_k|| ||g_ref||)

    A distillation term whose norm dwarfs the reference's and whose cosine is near 0 or negative
    pulls the student away from the labels; a cosine near 1 means the term mostly repeats the
    segmentation loss. Costs one backward pass per term (the graph is kept for the real update).
    A cosine with a zero gradient is reported as 0.

    Example::

        >>> w = torch.zeros(2, requires_grad=True)
        >>> term_gradients({"seg": w @ torch.tensor([3.0, 4.0]), "kd": w @ torch.tensor([4.0, -3.0])}, [w], "seg")
        {'grad_norm_seg': 5.0, 'grad_norm_kd': 5.0, 'grad_cos_kd': 0.0}
    """
    if reference is not None and reference not in terms:
        raise ValueError(f"reference term {reference!r} is not a loss term; terms: {sorted(terms)}.")
    parameters = [p for p in parameters if p.requires_grad]
    reference_grad = _flat_gradient(terms[reference], parameters) if reference is not None else None
    out: dict[str, float] = {}
    cosines: dict[str, float] = {}
    for name, value in terms.items():
        grad = reference_grad if name == reference else _flat_gradient(value, parameters)
        norm = float(grad.norm())
        out[f"grad_norm_{name}"] = norm
        if reference_grad is not None and name != reference:
            scale = norm * float(reference_grad.norm())
            cosines[f"grad_cos_{name}"] = float(grad @ reference_grad) / scale if scale > 0 else 0.0
    return out | cosines


def label_agreement(logits: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """How a network's prediction on a batch relates to its labels: ``disagreement``, the fraction
    of voxels whose argmax class is not the label; ``dice``, the mean foreground Dice of the argmax
    over the classes present in the label or the prediction; ``margin``, the mean gap between the
    top two logits (how sure it is), and ``margin_wrong``, that gap where it disagrees (0 without
    disagreement). A teacher that agrees with the labels almost everywhere adds little beyond them.

    Shapes: logits (B, C, *spatial) with C >= 2, label (B, 1, *spatial) of class indices.

    Example::

        >>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]])  # classes 0, 1, 1 at 3 voxels
        >>> label_agreement(logits, torch.tensor([[[0, 0, 1]]]))
        {'disagreement': 0.3333333432674408, 'dice': 0.6666666666666666, 'margin': 2.0, 'margin_wrong': 1.0}
    """
    if logits.shape[1] < 2 or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"label_agreement needs logits (B, C>=2, *spatial) and labels (B, 1, *spatial) on one grid, got "
            f"{tuple(logits.shape)} and {tuple(label.shape)}."
        )
    logits, label = logits.detach().float(), label.detach()[:, 0].long()
    predicted = logits.argmax(1)
    wrong = predicted != label
    top2 = logits.topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    dices = []
    for c in range(1, logits.shape[1]):
        p, t = predicted == c, label == c
        total = int(p.sum() + t.sum())
        if total:
            dices.append(2 * float((p & t).sum()) / total)
    return {
        "disagreement": float(wrong.float().mean()),
        "dice": sum(dices) / len(dices) if dices else 1.0,
        "margin": float(gap.mean()),
        "margin_wrong": float(gap[wrong].mean()) if bool(wrong.any()) else 0.0,
    }
