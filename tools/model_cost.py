"""Parameter count and CPU sliding-window inference time per volume of a bundle's networks.

    python tools/model_cost.py --bundle bundles/kdnet_brats_mri --shape 75 90 72 \
        --model teacher train.json,train_teacher.json --model student train.json

Each model is the ``network_def`` its configs define (weights do not change the cost); the input
is a random volume of ``--shape`` (the preprocessed size, e.g. a BraTS head at 2 mm) with the
network's input channels, run through ``validate#inferer`` under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser


def parse_model(bundle: Path, configs: list[str], overrides: dict | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(bundle), "device": "cpu", **(overrides or {})})
    return parser


def input_channels(net: torch.nn.Module) -> int:
    return next(m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)).in_channels


def cost(
    bundle: Path, configs: list[str], shape: list[int], repeats: int = 3, overrides: dict | None = None
) -> tuple[int, float]:
    """(parameters, median seconds per volume)."""
    parser = parse_model(bundle, configs, overrides)
    net = parser.get_parsed_content("network_def").eval()
    inferer = parser.get_parsed_content("validate#inferer")
    x = torch.randn(1, input_channels(net), *shape)
    times = []
    with torch.no_grad():
        inferer(x, net)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            inferer(x, net)
            times.append(time.perf_counter() - start)
    return sum(p.numel() for p in net.parameters()), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--shape", nargs="+", type=int, required=True)
    parser.add_argument("--model", nargs=2, action="append", metavar=("NAME", "CONFIGS"), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = "x".join(map(str, args.shape))
    print(f"| model | parameters | CPU s/volume ({shape}, {torch.get_num_threads()} threads) |")
    print("|---|---:|---:|")
    for name, configs in args.model:
        params, seconds = cost(args.bundle, configs.split(","), args.shape, args.repeats)
        print(f"| {name} | {params:,} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
