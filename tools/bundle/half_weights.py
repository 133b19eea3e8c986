"""Store a bundle's weights in half precision, to keep a weight file under the Model Zoo's 25 MB limit.

    python -m tools.bundle.half_weights SRC [DST]   (DST defaults to SRC, replaced atomically)

Floating-point tensors of the state dict become float16 (integer buffers, e.g. batch-norm counters,
stay as they are); the file halves. Loading needs no change: ``load_state_dict`` (MONAI's
``CheckpointLoader``, MONAI Label, the Zoo's export) copies each value into the network's float32
parameter, so inference still runs in float32 with weights rounded to 11 significant bits. Refused
when a value would not survive: beyond float16's range (±65504) or a nonzero weight that rounds to
zero in more than ``--max_flushed`` of a tensor's entries. Prints the sizes and the largest
rounding error relative to its tensor's largest magnitude; compare the model's Dice before and
after on validation data before shipping.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from tools.bundle.files import write_atomic

FLOAT16_MAX = torch.finfo(torch.float16).max


def to_half(state: dict[str, torch.Tensor], max_flushed: float = 0.001) -> tuple[dict[str, torch.Tensor], float]:
    """``state`` with floating tensors in float16, and the largest rounding error relative to its
    tensor's largest magnitude (at most 2⁻¹¹ ≈ 4.9e-4 for values in float16's normal range)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("expected a state dict (names → tensors), as the bundles' models/*.pt files hold.")
    half, worst = {}, 0.0
    for name, value in state.items():
        if not value.is_floating_point():
            half[name] = value
            continue
        if value.numel() and value.abs().max() > FLOAT16_MAX:
            raise ValueError(f"{name}: largest magnitude {float(value.abs().max()):.4g} is beyond float16 (±65504).")
        rounded = value.to(torch.float16)
        nonzero = value != 0
        flushed = float((nonzero & (rounded == 0)).sum()) / max(int(nonzero.sum()), 1)
        if flushed > max_flushed:
            raise ValueError(f"{name}: {flushed:.2%} of its nonzero values round to zero in float16.")
        if nonzero.any():
            error = (rounded.float() - value.float()).abs().max() / value.float().abs().max()
            worst = max(worst, float(error))
        half[name] = rounded
    return half, worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a state-dict weight file (models/*.pt)")
    parser.add_argument("dst", type=Path, nargs="?", help="where to write (default: replace SRC)")
    parser.add_argument("--max_flushed", type=float, default=0.001, help="tolerated fraction of weights lost to zero")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        parser.error(f"{args.src} not found.")
    try:
        state = torch.load(args.src, map_location="cpu", weights_only=True)
        half, worst = to_half(state, args.max_flushed)
    except (ValueError, RuntimeError) as e:
        parser.error(f"{args.src}: {e}")
    buffer = io.BytesIO()
    torch.save(half, buffer)
    dst, before = args.dst or args.src, args.src.stat().st_size
    write_atomic(dst, buffer.getvalue())
    print(
        f"{dst}: {before / 1e6:.1f} MB → {dst.stat().st_size / 1e6:.1f} MB in float16; "
        f"largest rounding error {worst:.2e} of its tensor's largest magnitude"
    )


if __name__ == "__main__":
    main()
