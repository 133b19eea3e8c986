"""Parameter count and CPU sliding-window inference time per volume of a bundle's networks.

    python -m tools.measure.model_cost --bundle bundles/kdnet_brats_mri --shape 75 90 72 \
        --model teacher train.json,train_teacher.json --model student train.json
    python -m tools.measure.model_cost --bundle bundles/agnostic_transfer_la_mri --image IMG.nii.gz --label SEG.nii.gz \
        --model "SegResNet teacher" train.json,train_teacher.json,teacher_name=segresnet --model student train.json

Each model is the ``network_def`` its configs define (weights do not change the cost), with
``key=value`` items of CONFIGS as overrides. The input is a random volume of ``--shape`` (the
preprocessed size, e.g. a BraTS head at 2 mm) with the network's input channels, or ``--image``
after each model's own ``validate#preprocessing`` (models may differ in spacing), run through
``validate#inferer`` under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from tools.bundle.isolation import bundle_scripts


def parse_model(bundle: Path, configs: list[str], overrides: dict | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(bundle), "device": "cpu", **(overrides or {})})
    return parser


def model_spec(spec: str) -> tuple[list[str], dict]:
    """``"a.json,b.json,key=value"`` -> config files and overrides (values read as JSON when they parse)."""
    configs, overrides = [], {}
    for item in re.split(r",(?![^\[\]]*\])", spec):  # commas inside [...] belong to a value
        if "=" in item:
            key, value = item.split("=", 1)
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        else:
            configs.append(item)
    return configs, overrides


def input_channels(net: torch.nn.Module) -> int:
    return next(m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)).in_channels


def cost(
    bundle: Path,
    configs: list[str],
    shape: list[int] | None = None,
    repeats: int = 3,
    overrides: dict | None = None,
    case: dict | None = None,
) -> tuple[int, float, tuple[int, ...]]:
    """(parameters, median seconds per volume, input shape); input of ``shape`` or ``case`` preprocessed."""
    with bundle_scripts(bundle):  # the bundle's own networks and transforms
        parser = parse_model(bundle, configs, overrides)
        net = parser.get_parsed_content("network_def").eval()
        inferer = parser.get_parsed_content("validate#inferer")
        if case is not None:
            x = parser.get_parsed_content("validate#preprocessing")(dict(case))["image"][None].as_tensor()
        else:
            x = torch.randn(1, input_channels(net), *shape)
        times = []
        with torch.no_grad():
            inferer(x, net)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                inferer(x, net)
                times.append(time.perf_counter() - start)
    return sum(p.numel() for p in net.parameters()), statistics.median(times), tuple(x.shape[2:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--shape", nargs="+", type=int, help="preprocessed input size (random input)")
    parser.add_argument("--image", help="a real image, preprocessed by each model's own transforms")
    parser.add_argument("--label", help="its label (the validation transforms may load one)")
    parser.add_argument("--model", nargs=2, action="append", metavar=("NAME", "CONFIGS"), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if (args.shape is None) == (args.image is None):
        parser.error("give either --shape or --image")
    case = {"image": args.image, "label": args.label or args.image} if args.image else None
    print(f"| model | parameters | input voxels | CPU s/volume ({torch.get_num_threads()} threads) |")
    print("|---|---:|---|---:|")
    for name, spec in args.model:
        configs, overrides = model_spec(spec)
        params, seconds, shape = cost(args.bundle, configs, args.shape, args.repeats, overrides, case)
        print(f"| {name} | {params:,} | {'x'.join(map(str, shape))} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
