"""The blocks every bundle carries, kept in step with their one source in ``bundles/_blocks/``.

    python -m tools.bundle.blocks --check          # exit 1 and list every bundle copy that drifted
    python -m tools.bundle.blocks                  # rewrite the bundles' copies from the source
    python -m tools.bundle.blocks bundles/X ...    # only these bundles

A bundle must be self-contained (it is sent alone to another site), so each one holds its own
copy of what they all share; this tool is what keeps the copies identical:

- whole files, copied as they are into ``configs/``: ``multi_gpu_train.json`` (DDP, samplers,
  rank-0 logging and checkpoints), ``logging.conf``, and ``inference_onnx.json`` /
  ``inference_openvino.json`` (``inference.json`` run by ONNX Runtime or OpenVINO on
  ``models/model.onnx``, which ``python -m tools.bundle.export_onnx`` writes);
- ids of ``train.json`` (``blocks/train.json``: the ``bundle_root`` convention, the check that
  the ``common`` package is there, the bundle folder on ``sys.path``, the TensorBoard writer the
  handlers share) and of ``inference.json`` (``blocks/inference.json``: MONAI Label's
  ``image_path`` kept away from ``Spacingd``). An id holding a list must start with the block's
  items (a bundle may add its own after them); any other id must equal the block's value.

The check also makes sure every ``@id`` the blocks refer to exists in the bundle's
``train.json`` (``train#log_handlers``, ``train#resume``, ... are the ids the multi-GPU overlay
switches), so an overlay can never cut a list by position.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from monai.bundle import ConfigParser

BLOCKS = Path(__file__).resolve().parents[2] / "bundles" / "_blocks"
REPO = Path(__file__).resolve().parents[2]
WHOLE_FILES = ("multi_gpu_train.json", "logging.conf", "inference_onnx.json", "inference_openvino.json")
ID_BLOCKS = ("train.json", "inference.json")
REFERENCE = re.compile(r"@([\w#]+)")


def bundles_in(root: Path) -> list[Path]:
    """Every bundle folder (one holding ``configs/metadata.json``) under ``root/bundles``, template included."""
    return sorted(p for p in (root / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def _id_block(name: str) -> dict:
    return json.loads((BLOCKS / name).read_text())


def _merged(current: object, block_value: object) -> object:
    """The bundle's value brought in line with the block's: lists keep their own items after the block's."""
    if isinstance(block_value, list) and isinstance(current, list):
        return block_value + [item for item in current if item not in block_value]
    return block_value


def _conforms(current: object, block_value: object) -> bool:
    if isinstance(block_value, list):
        return isinstance(current, list) and current[: len(block_value)] == block_value
    return current == block_value


def _outside_references(name: str) -> set[str]:
    """The ids a JSON block refers to without defining them itself."""
    return set(REFERENCE.findall((BLOCKS / name).read_text())) - set(_id_block(name))


def drift(bundle: Path) -> list[str]:
    """How ``bundle``'s copies differ from the blocks (an empty list: in step)."""
    configs = bundle / "configs"
    problems = []
    for name in WHOLE_FILES:
        copy = configs / name
        if not copy.is_file() or copy.read_bytes() != (BLOCKS / name).read_bytes():
            problems.append(f"{copy} differs from {BLOCKS / name}")
    for name in ID_BLOCKS:
        config = json.loads((configs / name).read_text())
        for key, value in _id_block(name).items():
            if key not in config:
                problems.append(f"{configs / name}: id {key!r} of {BLOCKS / name} is missing")
            elif not _conforms(config[key], value):
                problems.append(f"{configs / name}: id {key!r} differs from {BLOCKS / name}")
    train = ConfigParser()
    train.read_config(str(configs / "train.json"))
    for name in ("multi_gpu_train.json", "train.json"):  # the blocks merged with train.json
        for ref in sorted(_outside_references(name)):
            if ref not in train:
                problems.append(f"{configs / 'train.json'}: no id {ref!r}, which {BLOCKS / name} refers to")
    return problems


def sync(bundle: Path) -> None:
    """Rewrite ``bundle``'s copies from the blocks (JSON configs are written with 4-space indents)."""
    configs = bundle / "configs"
    for name in WHOLE_FILES:
        (configs / name).write_bytes((BLOCKS / name).read_bytes())
    for name in ID_BLOCKS:
        path = configs / name
        config = json.loads(path.read_text())
        for key, value in _id_block(name).items():
            config[key] = _merged(config.get(key), value)
        path.write_text(json.dumps(config, indent=4) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", type=Path, help="bundle folders (default: all under bundles/)")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    bundles = args.bundles or bundles_in(REPO)
    if not args.check:
        for bundle in bundles:
            sync(bundle)
    problems = [problem for bundle in bundles for problem in drift(bundle)]
    if problems:
        print("\n".join(problems))
        sys.exit(f"{len(problems)} problem(s); `python -m tools.bundle.blocks` rewrites drifted copies.")
    print(f"{len(bundles)} bundle(s) in step with {BLOCKS}")


if __name__ == "__main__":
    main()
