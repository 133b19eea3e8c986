"""Check a bundle offline the way the MONAI Model Zoo CI does, and print one line per check.

    python -m tools.bundle.verify bundles/kdnet_brats_mri [--dataset_dir DATA] [--schema SCHEMA]

Checks: required files; metadata version present in the changelog; ``verify_metadata`` against
the schema; ``verify_net_in_out`` of the inference ``network_def``; ``ckpt_export`` of
``models/model.pt`` to TorchScript and ``torch.jit.load`` of the result; ``check_properties()``
of the train and inference workflows (with ``--dataset_dir``, which it needs to resolve the
datasets; without it, only the presence of the required ids). The metadata schema is the Model
Zoo's ``meta_schema_20240725.json``, shipped beside this tool (nothing is downloaded). Exit code 1
when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.utils import BundleProperty, BundlePropertyConfig

from tools.bundle.isolation import bundle_scripts

SCHEMA = Path(__file__).with_name("meta_schema_20240725.json")
SCHEMA_SHA256 = "d95c74c2915faef04ff6a2d6bd865da922bc8cd5afb4a0719b2dc6e1220528e7"  # the Model Zoo's published file
ZOO_CALLS = ("verify_net_in_out", "ckpt_export + torch.jit.load")  # MONAI calls the Zoo's ci/verify_bundle.py makes
REQUIRED_FILES = ("LICENSE", "configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md")


def check_files(bundle: str) -> None:
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(bundle, f))]
    if missing:
        raise FileNotFoundError(f"missing {missing}")


def check_changelog(bundle: str) -> None:
    with open(os.path.join(bundle, "configs", "metadata.json")) as f:
        meta = json.load(f)
    if meta.get("version") not in meta.get("changelog", {}):
        raise ValueError(f"version {meta.get('version')!r} has no changelog entry")


def check_properties(bundle: str, workflow_type: str, config: str, dataset_dir: str | None) -> None:
    """``check_properties()`` resolves every required id, datasets included, so it needs data:
    without ``dataset_dir`` only the presence of the required ids is checked."""
    # num_workers 0: datasets load in this thread (a cache thread pool once failed here without a traceback)
    overrides = {"dataset_dir": dataset_dir, "num_workers": 0} if dataset_dir else {}
    workflow = ConfigWorkflow(
        config_file=os.path.join(bundle, "configs", config),
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        logging_file=False,  # the caller's logging stays as it is (configs/logging.conf is a shared block)
        workflow_type=workflow_type,
        bundle_root=bundle,
        **overrides,
    )
    workflow.initialize()
    if dataset_dir:
        missing = workflow.check_properties()
    else:
        missing = [
            name
            for name, prop in workflow.properties.items()
            if prop.get(BundleProperty.REQUIRED) and prop[BundlePropertyConfig.ID] not in workflow.parser
        ]
    if missing:
        raise ValueError(f"{workflow_type} workflow lacks required properties {missing}")


def _example_input_shape(meta_file: str) -> list[int]:
    """(1, C, *spatial) with ``n = 2`` in the metadata's ``spatial_shape`` expressions (e.g. ``"32*n"``)."""
    with open(meta_file) as f:
        image = json.load(f)["network_data_format"]["inputs"]["image"]
    spatial = [int(eval(str(s), {"__builtins__": {}}, {"n": 2})) for s in image["spatial_shape"]]
    return [1, int(image["num_channels"]), *spatial]


def export_torchscript(bundle: str, path: str) -> None:
    """``models/model.pt`` to TorchScript at ``path`` by scripting, as the Model Zoo does; a network
    MONAI cannot script (e.g. ``FlexibleUNet`` with a ResNet backbone) is traced on an input the
    metadata allows."""
    meta_file = os.path.join(bundle, "configs", "metadata.json")
    export = partial(
        ckpt_export,
        net_id="network_def",
        filepath=path,
        ckpt_file=os.path.join(bundle, "models", "model.pt"),
        meta_file=meta_file,
        config_file=os.path.join(bundle, "configs", "inference.json"),
        bundle_root=bundle,
    )
    try:
        export()
    except Exception as e:
        print(f"  scripting failed ({type(e).__name__}); exporting by tracing instead")
        shape = _example_input_shape(meta_file)
        export(use_trace=True, input_shape=shape)
        _check_trace_generalises(bundle, path, shape)


def unseen_input(shape: list[int]) -> torch.Tensor:
    """An input an export never saw (other values and range than its random example): a trace that
    froze part of its example gives another network on it."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 4 - 1


def _check_trace_generalises(bundle: str, path: str, shape: list[int]) -> None:
    """A trace records one example; a network that reads tensor values as constants (MONAI's ResNet
    shortcut type 'A' reads ``.data``) gives another network on every other input. Compare the
    trace with the eager network on an input it never saw; remove it and fail when they differ."""
    from common.teachers import load_state_dict_strict
    from tools.measure.model_cost import parse_model

    with bundle_scripts(bundle):
        network = parse_model(Path(bundle), ["inference.json"]).get_parsed_content("network_def").eval()
    load_state_dict_strict(network, os.path.join(bundle, "models", "model.pt"))
    unseen = unseen_input(shape)
    with torch.no_grad():
        difference = float((torch.jit.load(path)(unseen) - network(unseen)).abs().max())
    if difference > 1e-3:
        os.remove(path)
        raise ValueError(
            f"{bundle}: the traced TorchScript differs from the network on an input other than its example "
            f"(largest logit difference {difference:.3g}): the network reads a tensor's values as a constant "
            "(e.g. MONAI's ResNet shortcut type 'A'); it can be neither scripted nor traced."
        )


def check_export(bundle: str) -> None:
    """TorchScript export and ``torch.jit.load`` of the result."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.ts")
        export_torchscript(bundle, path)
        torch.jit.load(path)


def run_checks(
    bundle: str, schema: str | Path = SCHEMA, dataset_dir: str | None = None
) -> list[tuple[str, str | None]]:
    """Every check's name and its error (None when it passed)."""
    meta = os.path.join(bundle, "configs", "metadata.json")
    inference = os.path.join(bundle, "configs", "inference.json")
    schema_hash = {"hash_val": SCHEMA_SHA256, "hash_type": "sha256"} if Path(schema) == SCHEMA else {}
    checks: list[tuple[str, Callable[[], object]]] = [
        ("required files", lambda: check_files(bundle)),
        ("version in changelog", lambda: check_changelog(bundle)),
        ("verify_metadata", lambda: verify_metadata(meta_file=meta, filepath=str(schema), **schema_hash)),
        (
            "verify_net_in_out",
            lambda: verify_net_in_out(net_id="network_def", meta_file=meta, config_file=inference, bundle_root=bundle),
        ),
        ("ckpt_export + torch.jit.load", lambda: check_export(bundle)),
        ("check_properties(train)", lambda: check_properties(bundle, "train", "train.json", dataset_dir)),
        ("check_properties(infer)", lambda: check_properties(bundle, "infer", "inference.json", dataset_dir)),
    ]
    results = []
    for name, check in checks:
        try:
            # this bundle's scripts, not those of one checked before; the Zoo's own checks run with
            # nothing on the path but what the configs put there, as in the Zoo's CI
            with bundle_scripts(bundle, preload=name not in ZOO_CALLS):
                check()
            results.append((name, None))
        except BaseException as e:  # verify_metadata raises SystemExit-like errors too
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc(file=sys.stderr)
            root = e
            while root.__cause__ is not None:  # config instantiation wraps the real error several times
                root = root.__cause__
            cause = f" (caused by {type(root).__name__}: {root})" if root is not e else ""
            results.append((name, f"{type(e).__name__}: {e}{cause}"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", help="bundle folders")
    parser.add_argument("--schema", default=str(SCHEMA), help="metadata schema JSON (default: the shipped copy)")
    parser.add_argument("--dataset_dir", help="data the configs can load, for a full check_properties()")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.schema):
        parser.error(f"schema file not found: {args.schema}")
    failed = False
    for bundle in args.bundles:
        for name, error in run_checks(bundle, args.schema, args.dataset_dir):
            status = "ok" if error is None else f"FAIL {error}"
            print(f"{os.path.basename(os.path.normpath(bundle)):24s} {name:32s} {status}")
            failed |= error is not None
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
