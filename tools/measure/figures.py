"""Figures for a bundle's docs: training curves from TensorBoard logs, and prediction overlays.

    python -m tools.measure.figures curves --runs bundles/X/runs/teacher bundles/X/runs/kd_student \
        --labels teacher "KD student" --out bundles/X/docs/training_curves.png
    python -m tools.measure.figures overlay --bundle bundles/X --dataset_dir DATA --datalist SPLIT --key test \
        --model teacher train.json,train_teacher.json --model "KD student" train.json --out overlay.png

CONFIGS may end with ``key=value`` overrides, e.g. ``train.json,train_teacher.json,teacher_name=segresnet``.

``overlay`` runs each model as its configs define it (``validate#preprocessing``, ``network_def``,
``validate#inferer``, weights ``<model_dir>/model.pt``) on the first ``--cases`` cases of the
list, brings every prediction back to the image file's own grid (models may use different
spacings), prints their Dice there, and draws for each case the axial slice with the most
foreground: the image (its last channel), the ground truth, and each model's prediction, one
colour per class; the Dice printed is the mean over the foreground classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.transforms import Invertd, LoadImage  # noqa: E402

from common.teachers import load_state_dict_strict  # noqa: E402
from tools.bundle.isolation import bundle_scripts  # noqa: E402
from tools.measure.model_cost import model_spec, parse_model  # noqa: E402
from tools.measure.overlap import mean_dice  # noqa: E402
from tools.measure.training_log import read_scalars  # noqa: E402


def _steps_and_values(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray([step for step, _ in points]), np.asarray([value for _, value in points])


def plot_curves(runs: list[str], labels: list[str], out: str) -> plt.Figure:
    """Each run's segmentation loss term (smoothed; the whole loss if no term is logged) and validation Dice."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in zip(runs, labels, strict=True):
        logged = read_scalars(run)  # every tag in one pass over the run's event files
        for tag in ("loss_seg", "loss_seg_dice", "loss", "train_loss"):  # a segmentation term, else the whole loss
            steps, loss = _steps_and_values(logged.get(tag, []))
            if len(loss):
                break
        if len(loss):
            window = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax_loss.plot(steps[: len(smooth)], smooth, label=label)
        epochs, dice = _steps_and_values(logged.get("val_mean_dice", []))
        ax_dice.plot(epochs, dice, marker=".", label=label)
    ax_loss.set(xlabel="iteration", ylabel="segmentation loss term, smoothed", title="training")
    ax_dice.set(xlabel="epoch", ylabel="mean Dice", title="validation (model selection)")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return fig


def plot_overlay(args: argparse.Namespace) -> None:
    bundle = Path(args.bundle)
    overrides = {"dataset_dir": args.dataset_dir, "datalist": args.datalist}
    models = []
    for name, spec in args.model:
        configs, model_overrides = model_spec(spec)
        parser = parse_model(bundle, configs, overrides | model_overrides)
        net = parser.get_parsed_content("network_def")
        load_state_dict_strict(net, str(Path(parser.get_parsed_content("model_dir")) / "model.pt"))
        models.append((name, parser, net.eval()))
    reader = parse_model(bundle, model_spec(args.model[0][1])[0], overrides)
    reader["validate#dataset#data#data_list_key"] = args.key
    items = reader.get_parsed_content("validate#dataset#data")
    rows = []
    load = LoadImage(image_only=True, ensure_channel_first=True)
    target_labels = reader.get("target_labels")  # a bundle segmenting some labels of a multi-label map
    num_classes = 2 if target_labels is not None else int(reader.get_parsed_content("num_classes"))
    for case_index, item in enumerate(items):
        row = {"case": Path(str(item["label"])).name.split()[-1].replace("_seg.nii.gz", "").replace(".nii.gz", "")}
        label = np.asarray(load(item["label"])[0])
        row["label"] = (np.isin(label, target_labels) if target_labels is not None else label).astype(int)
        row["image"] = np.asarray(load(item["image"])[-1])
        for name, parser, net in models:
            preprocessing = parser.get_parsed_content("validate#preprocessing")
            data = preprocessing(dict(item))
            with torch.no_grad():
                data["pred"] = parser.get_parsed_content("validate#inferer")(data["image"][None], net)[0].softmax(0)
            pred = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)(data)["pred"]
            row[name] = np.asarray(pred.argmax(0)).astype(int)
            row[f"dice {name}"] = mean_dice(row[name], row["label"], num_classes)
        rows.append(row)
        print(row["case"], " ".join(f"{n}={row[f'dice {n}']:.3f}" for n, _, _ in models), flush=True)
        if case_index + 1 >= args.cases:
            break
    names = [n for n, _, _ in models]
    fig, axes = plt.subplots(len(rows), 2 + len(names), figsize=(3 * (2 + len(names)), 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        z = int((row["label"] > 0).sum(axis=(0, 1)).argmax())
        image = np.rot90(row["image"][:, :, z])
        panels = [("image", None), ("ground truth", row["label"])] + [(n, row[n]) for n in names]
        for c, (title, mask) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray")
            if mask is not None:
                classes = np.rot90(mask[:, :, z])  # one colour per class
                ax.imshow(np.ma.masked_where(classes == 0, classes), cmap="tab10", vmin=0, vmax=9, alpha=0.5)
            suffix = f"\nDice {row[f'dice {title}']:.3f}" if title in names else ""
            ax.set_title(f"{row['case']}" if c == 0 else f"{title}{suffix}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves")
    curves.add_argument("--runs", nargs="+", required=True)
    curves.add_argument("--labels", nargs="+", required=True)
    curves.add_argument("--out", required=True)
    overlay = sub.add_parser("overlay")
    overlay.add_argument("--bundle", required=True)
    overlay.add_argument("--dataset_dir", required=True)
    overlay.add_argument("--datalist", required=True)
    overlay.add_argument("--key", default="test")
    overlay.add_argument("--model", nargs=2, action="append", metavar=("NAME", "CONFIGS"), required=True)
    overlay.add_argument("--cases", type=int, default=4)
    overlay.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "curves":
        plot_curves(args.runs, args.labels, args.out)
    else:
        with bundle_scripts(args.bundle):  # the bundle's own networks and transforms
            plot_overlay(args)


if __name__ == "__main__":
    main()
