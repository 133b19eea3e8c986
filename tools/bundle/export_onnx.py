"""Export a bundle's student to ONNX, ``models/model.onnx``, the file ``inference_onnx.json`` (ONNX
Runtime) and ``inference_openvino.json`` (OpenVINO) run.

    python -m tools.bundle.export_onnx bundles/kdnet_brats_mri
    python -m tools.bundle.export_onnx bundles/agnostic_transfer_la_mri --out /tmp/student.onnx

Builds ``network_def`` from ``inference.json`` (plus ``--configs`` overlays and ``--set id=value``
overrides), loads ``models/model.pt`` (``weights_only``) and converts it with MONAI's
``convert_to_onnx``: traced on one image of the config's inferer ``roi_size`` (export again after
changing it), input ``input`` and output ``output``. The shape is fixed: traced networks may keep
the batch size as a constant (MONAI's ResNet shortcut pads with it), so the inference configs run
a sliding-window batch image by image. The export is checked against PyTorch with ONNX Runtime
within ``--atol`` on the random input it was traced with and on another one (a trace that froze
part of its example, as MONAI's ResNet shortcut ``'A'`` does, is refused), written under a
temporary name and renamed once complete; the tool prints its size and SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch
from monai.networks.utils import convert_to_onnx

from common.teachers import load_state_dict_strict
from tools.bundle.isolation import bundle_scripts
from tools.bundle.verify import unseen_input
from tools.measure.kd_audit import parse_set
from tools.measure.model_cost import input_channels, parse_model

OPSET = 17


def unseen_input_difference(network: torch.nn.Module, onnx_file: Path, example: torch.Tensor) -> float:
    """The largest logit difference between PyTorch and ONNX Runtime on an input the export never saw
    (other values and range than the traced example): a trace that froze part of the example shows here."""
    import onnxruntime

    unseen = unseen_input(list(example.shape))
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = network(unseen).numpy()
    return float(abs(session.run(None, {"input": unseen.numpy()})[0] - expected).max())


def export(bundle: Path, configs: list[str], overrides: dict, out: Path, atol: float) -> tuple[Path, str]:
    """Write ``out`` (default ``models/model.onnx``) and return it with its SHA-256."""
    with bundle_scripts(bundle):
        parser = parse_model(bundle, ["inference.json", *configs], overrides)
        network = parser.get_parsed_content("network_def").eval()
        roi_size = list(parser.get_parsed_content("inferer").roi_size)
        load_state_dict_strict(network, str(bundle / "models" / "model.pt"))
        example = torch.randn(1, input_channels(network), *roi_size)
        partial = out.with_name(out.name + ".partial")
        convert_to_onnx(
            network,
            [example],
            input_names=["input"],
            output_names=["output"],
            opset_version=OPSET,
            filename=str(partial),
            verify=True,
            use_ort=True,
            use_trace=True,
            rtol=1e-3,
            atol=atol,
            dynamo=False,
        )
        difference = unseen_input_difference(network, partial, example)
        if difference > atol:
            partial.unlink()
            raise ValueError(
                f"{bundle}: the ONNX export matches PyTorch on the input it was traced with but not on another "
                f"(largest logit difference {difference:.3g} > {atol}): the network holds a step that tracing "
                "freezes into a constant (e.g. MONAI's ResNet shortcut type 'A', which reads `.data`). Export a "
                "network without it; no model.onnx was written."
            )
    os.replace(partial, out)
    return out, hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--configs", nargs="*", default=[], help="overlays on inference.json")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE", help="a config override")
    parser.add_argument("--out", type=Path, help="default: <bundle>/models/model.onnx")
    parser.add_argument("--atol", type=float, default=1e-3, help="largest logit difference to PyTorch allowed")
    args = parser.parse_args(argv)
    out, digest = export(
        args.bundle, args.configs, parse_set(args.set), args.out or args.bundle / "models" / "model.onnx", args.atol
    )
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB, sha256 {digest}")


if __name__ == "__main__":
    main()
