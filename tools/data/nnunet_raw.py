"""Write an nnU-Net v2 raw dataset from lists of a Decathlon datalist (e.g. a split's teacher cases).

    python -m tools.data.nnunet_raw --datalist runs/la_split.json --dataset_dir /data/la2018 \\
        --key training --key segresnet_training --out $nnUNet_raw/Dataset101_LA

Writes ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz`` as symbolic links to the
datalist's files (nothing is copied) and ``dataset.json`` with the channel names and labels
nnU-Net's own commands read (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``). Channel names
come from the datalist's ``modality`` and labels from its ``labels`` (``{"0": "background", ...}``),
or from ``--channel``/``--label``. One image file per case (nnU-Net's ``_0000`` channel); NIfTI
only. Refuses a missing file, a case name given twice and an output folder that already holds
another dataset, each named.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from monai.data import load_decathlon_datalist

from tools.bundle.files import write_atomic

FILE_ENDING = ".nii.gz"


def case_id(path: str) -> str:
    name = os.path.basename(path)
    if not name.endswith(FILE_ENDING):
        raise ValueError(f"{path}: nnU-Net datasets here are NIfTI ({FILE_ENDING}) files")
    return name[: -len(FILE_ENDING)]


def single_image(item: dict) -> str:
    images = item["image"] if isinstance(item["image"], list) else [item["image"]]
    if len(images) != 1:
        raise ValueError(f"{images}: one image file per case (a single-channel dataset)")
    return images[0]


def dataset_json(channels: dict[str, str], labels: dict[str, int], cases: int) -> dict:
    return {"channel_names": channels, "labels": labels, "numTraining": cases, "file_ending": FILE_ENDING}


def write_raw_dataset(items: list[dict], out: Path, channels: dict[str, str], labels: dict[str, int]) -> list[str]:
    """Link each item's image and label into ``out`` (an nnU-Net raw dataset folder) and write its
    ``dataset.json``; returns the case ids. ``items`` hold absolute ``image`` and ``label`` paths."""
    description = dataset_json(channels, labels, len(items))
    existing = out / "dataset.json"
    if existing.is_file() and json.loads(existing.read_text()) != description:
        raise FileExistsError(f"{out} already holds another dataset (its dataset.json differs): choose another --out")
    pairs = [(single_image(item), item["label"]) for item in items]
    for path in (path for pair in pairs for path in pair):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found")
    ids = [case_id(image) for image, _ in pairs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"case names given more than once: {repeated}")
    images = out / "imagesTr"
    others = (
        sorted({p.name for p in images.iterdir()} - {f"{i}_0000{FILE_ENDING}" for i in ids}) if images.is_dir() else []
    )
    if others:
        raise FileExistsError(f"{out} already holds another dataset (cases {others}): choose another --out")
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for (image, label), cid in zip(pairs, ids, strict=True):
        links = {out / "imagesTr" / f"{cid}_0000{FILE_ENDING}": image, out / "labelsTr" / f"{cid}{FILE_ENDING}": label}
        for link, target in links.items():
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.abspath(target))
    write_atomic(existing, (json.dumps(description, indent=2) + "\n").encode())
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--dataset_dir", required=True, help="the folder the datalist's paths are relative to")
    parser.add_argument("--key", action="append", required=True, help="list(s) of the datalist to take")
    parser.add_argument("--out", required=True, type=Path, help="nnUNet_raw/DatasetXXX_Name")
    parser.add_argument("--channel", action="append", help="channel name (default: the datalist's modality)")
    parser.add_argument("--label", action="append", help="label names in value order (default: the datalist's labels)")
    args = parser.parse_args(argv)
    source = json.loads(Path(args.datalist).read_text())
    lists = [k for k, v in source.items() if isinstance(v, list)]
    missing = [k for k in args.key if k not in lists]
    if missing:
        parser.error(f"{args.datalist} has no list {missing}; its lists: {lists}")
    items = [i for k in args.key for i in load_decathlon_datalist(args.datalist, True, k, args.dataset_dir)]
    modality, names = source.get("modality", {}), source.get("labels", {})
    channel_names = args.channel or [modality.get(str(i)) for i in range(len(modality))]
    label_names = args.label or [names.get(str(i)) for i in range(len(names))]
    if not channel_names or None in channel_names:
        parser.error("the datalist names no modality: give --channel")
    if len(label_names) < 2 or None in label_names:
        parser.error("the datalist's labels are not 0..n named: give --label for each value, background first")
    channels = {str(i): name for i, name in enumerate(channel_names)}
    labels = {name: value for value, name in enumerate(label_names)}
    try:
        ids = write_raw_dataset(items, args.out, channels, labels)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    print(f"{args.out}: {len(ids)} cases, channels {channels}, labels {labels}")


if __name__ == "__main__":
    main()
