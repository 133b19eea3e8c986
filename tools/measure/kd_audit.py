"""Why a bundle's distillation helps or not, measured on its own training batches, in one table.

    python -m tools.measure.kd_audit bundles/kdnet_brats_mri --batches 8 \\
        --set dataset_dir=/data/brats --set datalist=/data/brats/split.json
    python -m tools.measure.kd_audit bundles/hlfd_tumour_ct --configs acdc_mri.json --student runs/seed1/model.pt

Builds the bundle's distillation trainer from ``train.json`` (plus ``--configs`` overlays and
``--set id=value`` overrides, values read as JSON when they parse), with its frozen teachers and
the student weights of ``--student`` (default: ``<model_dir>/model.pt``; ``--student init``: the
untrained student as the config initialises it under ``--seed``, to set KD weights before
training), and passes ``--batches``
training batches (the training transforms, crops and augmentation, ``--seed`` fixing them)
through ``DistillationTrainer.measure``, which updates nothing. Prints, as mean ± sd over the
batches:

- per loss term: its weighted value, the norm of its gradient on the student, and the cosine
  between that gradient and the segmentation term's (``reference``);
- for the student and each teacher: Dice on these crops, the fraction of voxels whose argmax
  differs from the label, and the logit margin (mean top-1 minus top-2 logit), overall and where
  the network disagrees with the label.

A term whose gradient is far larger than the segmentation term's and nearly orthogonal to it
pulls the student away from the labels; a teacher that almost never disagrees with the labels
gives a logit term that repeats the segmentation loss.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from monai.utils import set_determinism

from common.engines import DistillationTrainer
from common.teachers import load_state_dict_strict
from tools.bundle.isolation import bundle_scripts
from tools.measure.model_cost import parse_model
from tools.measure.paired import mean_sd

INIT = "init"  # --student value: the untrained student


def parse_set(items: list[str]) -> dict:
    """``["id=value", ...]`` as overrides, values read as JSON when they parse."""
    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"--set takes id=value, got {item!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def audit(bundle: Path, configs: list[str], overrides: dict, student: Path | None, batches: int) -> dict:
    """Each measure of ``DistillationTrainer.measure`` over ``batches`` training batches, by name;
    ``student`` ``init`` keeps the untrained student."""
    with bundle_scripts(bundle), tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as scratch:
        # the trainer's handlers create their log and checkpoint folders: keep them out of the bundle
        # (model_dir stays where the default student is read from)
        elsewhere = {"output_dir": f"{scratch}/runs"} | ({"model_dir": f"{scratch}/models"} if student else {})
        parser = parse_model(bundle, ["train.json", *configs], {"num_workers": 0, **elsewhere, **overrides})
        trainer = parser.get_parsed_content("train#trainer")
        if not isinstance(trainer, DistillationTrainer):
            raise ValueError(
                f"{bundle} trains with {type(trainer).__name__}, not a DistillationTrainer: no terms to audit."
            )
        if str(student) != INIT:
            weights = student or Path(parser.get_parsed_content("model_dir")) / "model.pt"
            load_state_dict_strict(trainer.network, str(weights))
        values: dict[str, list[float]] = defaultdict(list)
        for index, batch in enumerate(trainer.data_loader):
            if index == batches:
                break
            for key, value in trainer.measure(batch).items():
                values[key].append(value)
    return {"reference": trainer.reference_term, "teachers": list(trainer.teachers), "values": dict(values)}


def table(result: dict) -> str:
    values = result["values"]
    terms = [key.removeprefix("loss_") for key in values if key.startswith("loss_")]
    lines = [
        f"loss terms (reference for the cosine: {result['reference']})",
        "| term | weighted value | gradient norm on the student | cosine with the reference |",
        "|---|---:|---:|---:|",
    ]
    for term in terms:
        cosine = "1 (reference)" if term == result["reference"] else mean_sd(values.get(f"grad_cos_{term}"))
        lines.append(
            f"| {term} | {mean_sd(values[f'loss_{term}'])} | {mean_sd(values.get(f'grad_norm_{term}'))} | {cosine} |"
        )
    lines += [
        "",
        "predictions against the label on these crops",
        "| network | Dice | voxels disagreeing | logit margin | margin where disagreeing |",
        "|---|---:|---:|---:|---:|",
    ]
    for network in ["student", *result["teachers"]]:
        cells = [mean_sd(values.get(f"{network}_{key}")) for key in ("dice", "disagreement", "margin", "margin_wrong")]
        lines.append(f"| {network} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--configs", nargs="*", default=[], help="overlays on train.json, e.g. acdc_mri.json")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE", help="a config override")
    parser.add_argument(
        "--student",
        type=Path,
        help=f"student weights (default: <model_dir>/model.pt), or {INIT!r} for the untrained student",
    )
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="fixes the crops and augmentation drawn")
    args = parser.parse_args(argv)
    set_determinism(seed=args.seed)
    result = audit(args.bundle, args.configs, parse_set(args.set), args.student, args.batches)
    print(f"{args.bundle.name}: {args.batches} training batch(es), seed {args.seed}")
    print(table(result))


if __name__ == "__main__":
    main()
