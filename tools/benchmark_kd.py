"""Cost of distillation, measured on the same batches in one run, printed as a table.

For a bundle's ``train.json`` it times (median over ``--steps`` after ``--warmup``):
the plain student training step (the baseline's loss, same engine), the teacher forward pass
(no_grad), and the distillation training step (``DistillationTrainer`` iteration, teacher
included), then the ratio ``KD step / (student step + teacher forward)``: 1.0 is the floor (the
work cannot be avoided), above it is the trainer's own overhead. Each measurement runs in its
own process so its peak memory is its own: CUDA ``max_memory_allocated``, or on CPU the growth of
the process's peak RSS over what model and batches already held.

    python tools/benchmark_kd.py --bundle kdnet_brats_mri --roi 64 --batch 2 --steps 10
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from common.engines import DistillationTrainer
from common.teachers import freeze

REPO = Path(__file__).resolve().parents[1]
MODES = ("student_step", "teacher_forward", "kd_step")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / args.bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / args.bundle), "device": str(device)})
    torch.manual_seed(0)
    student = parser.get_parsed_content("network_def").to(device)
    teacher = freeze(parser.get_parsed_content("teacher_def").to(device))
    n_student, n_teacher = len(parser["student_modalities"]), len(parser["teacher_modalities"])
    shape = (args.batch, n_teacher, *[args.roi] * 3)
    batches = []
    for _ in range(args.warmup + args.steps):
        teacher_image = torch.randn(shape)
        label = (teacher_image[:, :1] > 1.0).float()
        batches.append(
            {"image": teacher_image[:, n_teacher - n_student :].clone(), "teacher_image": teacher_image, "label": label}
        )
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    common = dict(
        device=device,
        max_epochs=1,
        train_data_loader=batches,
        network=student,
        optimizer=optimizer,
        amp=args.amp,
        decollate=False,
    )
    if args.mode == "student_step":
        engine = SupervisedTrainer(loss_function=parser.get_parsed_content("seg_term")["loss"], **common)
        step = lambda b: engine._iteration(engine, b)  # noqa: E731
    elif args.mode == "kd_step":
        parser["teacher"] = teacher
        loss = parser.get_parsed_content("loss").to(device)
        engine = DistillationTrainer(loss_function=loss, teachers=teacher, teacher_input_key="teacher_image", **common)
        step = lambda b: engine._iteration(engine, b)  # noqa: E731
    else:

        def step(b):
            with torch.no_grad(), torch.autocast(device.type, enabled=args.amp and device.type == "cuda"):
                teacher(b["teacher_image"].to(device))

    rss_before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i, batch in enumerate(batches):
        sync(device)
        start = time.perf_counter()
        step(batch)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb() - rss_before
    return {"mode": args.mode, "seconds": statistics.median(times), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="kdnet_brats_mri")
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return
    results = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    s, t, k = (results[m]["seconds"] for m in MODES)
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    print(
        f"{args.bundle}: batch {args.batch}, ROI {args.roi}^3, {args.device}{' AMP' if args.amp else ''}, "
        f"median of {args.steps} steps, {torch.get_num_threads()} threads"
    )
    print(f"{'measurement':18s} {'ms/step':>9s} {memory + ' MiB':>24s}")
    for mode in MODES:
        print(f"{mode:18s} {1000 * results[mode]['seconds']:9.1f} {results[mode]['peak_mb']:24.0f}")
    print(f"{'ratio KD / (student + teacher)':30s} {k / (s + t):.3f}")


if __name__ == "__main__":
    main()
