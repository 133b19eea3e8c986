"""End-to-end CPU inference per volume, and the network's share of it, for a bundle's teacher, its
student and the student's exported runtimes, measured on the same volumes in one run.

    python -m tools.measure.latency bundles/kdnet_brats_mri --dataset_dir /data/brats --image_pattern "*_t1.nii.gz" \\
        --model teacher inference_teacher.json --model student --model "ONNX Runtime" inference_onnx.json \\
        --model OpenVINO inference_openvino.json

Each ``--model LABEL [OVERLAY ...]`` runs ``inference.json`` plus its overlays in a process of its
own (one at a time, ``--threads`` torch threads) over the volumes the config's ``datalist`` finds
(the first ``--cases``): load → preprocess → infer → postprocess → save, as a user runs it. Per
volume it times the whole iteration (from fetching the volume to its label map saved) and the
inferer call (sliding window and network: the model's share); the first volume is a warm-up and
is left out when there are more. Printed: medians, the peak memory growth of the process over
what it held before the first volume, and each model's speed relative to the first one. With
``--compare_to LABEL`` each model's label maps are also compared with that model's, volume by
volume: the same shape and affine, and the lowest Dice of any class present in either map over
the volumes (the parity of an exported student on real data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events

from tools.bundle.isolation import bundle_scripts
from tools.measure.benchmark_kd import peak_rss_mb
from tools.measure.kd_audit import parse_set
from tools.measure.model_cost import parse_model
from tools.measure.overlap import dice


class TimedInferer:
    """The config's inferer, timing every call."""

    def __init__(self, inferer) -> None:
        self.inferer, self.seconds = inferer, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.inferer(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return result


def measure(bundle: Path, overlays: list[str], overrides: dict, cases: int, out: str) -> dict:
    """Seconds per volume (end to end, inferer) and peak memory growth of one model, in this
    process; its label maps go to ``out``."""
    with bundle_scripts(bundle):
        parser = parse_model(bundle, ["inference.json", *overlays], {**overrides, "output_dir": out})
        parser["datalist"] = parser.get_parsed_content("datalist")[:cases]
        if not parser["datalist"]:
            raise SystemExit(f"{bundle}: no volume matches the datalist of inference.json with {overrides}")
        evaluator = parser.get_parsed_content("evaluator")
        timed = TimedInferer(evaluator.inferer)
        evaluator.inferer = timed
        starts, ends = [], []
        evaluator.add_event_handler(Events.GET_BATCH_STARTED, lambda _: starts.append(time.perf_counter()))
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: ends.append(time.perf_counter()))
        before = peak_rss_mb()
        evaluator.run()
    end_to_end = [e - s for s, e in zip(starts, ends, strict=True)]
    kept = slice(1, None) if len(end_to_end) > 1 else slice(None)
    return {
        "cases": len(end_to_end),
        "end_to_end_s": statistics.median(end_to_end[kept]),
        "inferer_s": statistics.median(timed.seconds[kept]),
        "peak_rss_growth_mib": peak_rss_mb() - before,
    }


def agreement(reference: Path, other: Path) -> str:
    """How ``other``'s label maps match ``reference``'s: the lowest Dice of a class present in
    either map, over the volumes, or what differs (a missing map, another shape or affine)."""
    lowest = 1.0
    for path in sorted(reference.rglob("*.nii.gz")):
        counterpart = other / path.relative_to(reference)
        if not counterpart.is_file():
            return f"no map for {path.name}"
        a, b = nib.load(path), nib.load(counterpart)
        if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=1e-4):
            return f"{path.name}: another grid"
        x, y = np.asarray(a.dataobj), np.asarray(b.dataobj)
        for cls in set(np.unique(x).tolist()) | set(np.unique(y).tolist()):
            lowest = min(lowest, dice(x == cls, y == cls))
    return f"{lowest:.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--model", nargs="+", action="append", metavar=("LABEL", "OVERLAY"), required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--image_pattern", help="as inference.json's id (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE", help="a config override")
    parser.add_argument("--cases", type=int, default=4, help="volumes per model (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare_to", metavar="LABEL", help="compare every model's label maps with this model's")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # measure model number N in this process
    parser.add_argument("--maps", help=argparse.SUPPRESS)  # where model N writes its label maps
    args = parser.parse_args(argv)
    overrides = {"dataset_dir": args.dataset_dir, **parse_set(args.set)}
    if args.image_pattern:
        overrides["image_pattern"] = args.image_pattern
    if args.one is not None:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.bundle, args.model[args.one][1:], overrides, args.cases, args.maps)))
        return
    labels = [label for label, *_ in args.model]
    if args.compare_to is not None and args.compare_to not in labels:
        parser.error(f"--compare_to {args.compare_to!r} is not a --model label; the labels: {labels}")
    rows = []
    with tempfile.TemporaryDirectory() as maps:
        for index, label in enumerate(labels):
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tools.measure.latency",
                    *(argv if argv is not None else sys.argv[1:]),
                    "--one",
                    str(index),
                    "--maps",
                    f"{maps}/{index}",
                ],
                capture_output=True,
                text=True,
            )
            if child.returncode != 0:
                raise SystemExit(f"{label} failed:\n{child.stderr[-3000:]}")
            rows.append((label, json.loads(child.stdout.strip().splitlines()[-1])))
        if args.compare_to is not None:
            reference = Path(maps) / str(labels.index(args.compare_to))
            for index, (_, result) in enumerate(rows):
                result["agreement"] = agreement(reference, Path(maps) / str(index))
    first = rows[0][1]["end_to_end_s"]
    print(
        f"{args.bundle.name}: median over {rows[0][1]['cases']} volume(s) (the first a warm-up), "
        f"CPU, {args.threads} threads"
    )
    compared = f" | label maps vs {args.compare_to}: lowest class Dice" if args.compare_to is not None else ""
    print(
        "| model | end to end, s per volume | inferer (sliding window + network), s | network share "
        f"| peak memory growth, MiB | speed vs first row{compared} |"
    )
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if compared else ""))
    for label, r in rows:
        share = r["inferer_s"] / r["end_to_end_s"]
        print(
            f"| {label} | {r['end_to_end_s']:.2f} | {r['inferer_s']:.2f} | {share:.0%} "
            f"| {r['peak_rss_growth_mib']:.0f} | {first / r['end_to_end_s']:.2f}×"
            + (f" | {r['agreement']}" if compared else "")
            + " |"
        )


if __name__ == "__main__":
    main()
