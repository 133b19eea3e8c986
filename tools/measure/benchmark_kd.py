"""Cost of distillation, measured on the same batches in one run, printed as a table.

For a bundle's ``train.json`` (plus ``--configs`` overlays) it times (median over ``--steps`` after
``--warmup``): the plain student training step (the loss of ``train_baseline.json``, same engine,
no teacher), the teacher forward pass
(no_grad), the distillation training step (``DistillationTrainer`` iteration, teacher
included) and the same step measuring every term's gradient (``diagnostics_interval``), then the
ratio ``KD step / (student step + teacher forward)``: 1.0 is the floor (the work cannot be
avoided), above it is the trainer's own overhead; and what the diagnostics add, per measured
iteration and averaged at ``--diagnostics_interval``. The three timings interleave
batch by batch in one process. Peak memory is taken in one process per measurement: CUDA
``max_memory_allocated``, or on CPU the growth of the process's peak RSS over what networks and
batches already held.

    python -m tools.measure.benchmark_kd --bundle kdnet_brats_mri --shape 64 64 64 --batch 2 --steps 10
    python -m tools.measure.benchmark_kd --bundle hlfd_tumour_ct --shape 96 96 --batch 8 --steps 10

Random inputs of ``--shape`` with each network's input channels; a teacher reading another batch
key than the student (KD-Net's ``teacher_image``, all modalities) gets its own input, of which
the student's channels are the last ones.
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
from tools.bundle.isolation import bundle_scripts
from tools.measure.model_cost import input_channels

REPO = Path(__file__).resolve().parents[2]
MODES = ("student_step", "teacher_forward", "kd_step", "kd_step_diagnosed")


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` rather than ``ru_maxrss``, which a child
    process inherits from its parent's peak at fork time on Linux."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_steps(args: argparse.Namespace, device: torch.device) -> tuple[dict, list[dict]]:
    """One callable per measurement (fresh networks of the same initialisation) and the shared batches."""
    configs = REPO / "bundles" / args.bundle / "configs"
    parser, baseline = ConfigParser(), ConfigParser()
    parser.read_config([str(configs / c) for c in ["train.json", *args.configs]])
    baseline.read_config([str(configs / c) for c in ["train.json", "train_baseline.json"]])
    for p in (parser, baseline):
        p.update({"bundle_root": str(REPO / "bundles" / args.bundle), "device": str(device)})
    teacher = freeze(parser.get_parsed_content("teacher_def").to(device))
    parser["teacher"] = teacher
    teacher_key = parser.get("train#trainer#teacher_input_key", "image")
    n_teacher = input_channels(teacher)
    n_student = input_channels(parser.get_parsed_content("network_def"))
    torch.manual_seed(0)
    batches = []
    for _ in range(args.warmup + args.steps):
        teacher_image = torch.randn(args.batch, n_teacher, *args.shape)
        student_image = teacher_image[:, n_teacher - n_student :].clone()
        batch = {"image": student_image, "label": (student_image[:, :1] > 1).float()}
        batches.append(batch | ({teacher_key: teacher_image} if teacher_key != "image" else {}))

    def trainer(engine_class: type, **kwargs) -> SupervisedTrainer:
        torch.manual_seed(1)  # the same student initialisation for both trainers
        student = parser.get_parsed_content("network_def", lazy=False).to(device)
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
        return engine_class(
            device=device,
            max_epochs=1,
            train_data_loader=batches,
            network=student,
            optimizer=optimizer,
            amp=args.amp,
            decollate=False,
            **kwargs,
        )

    def teacher_forward(batch: dict) -> None:
        with torch.no_grad(), torch.autocast(device.type, enabled=args.amp and device.type == "cuda"):
            teacher(batch[teacher_key].to(device))

    plain = trainer(DistillationTrainer, loss_function=baseline.get_parsed_content("loss").to(device), teachers={})
    kd, diagnosed = (
        trainer(
            DistillationTrainer,
            loss_function=parser.get_parsed_content("loss", lazy=False).to(device),
            teachers=teacher,
            teacher_input_key=teacher_key,
            diagnostics_interval=interval,
        )
        for interval in (0, 1)
    )
    steps = {
        "student_step": lambda b: plain._iteration(plain, b),
        "teacher_forward": teacher_forward,
        "kd_step": lambda b: kd._iteration(kd, b),
        "kd_step_diagnosed": lambda b: diagnosed._iteration(diagnosed, b),
    }
    return steps, batches


def measure_times(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step; the three measurements interleave batch by batch so drift hits all alike."""
    device = torch.device(args.device)
    with bundle_scripts(REPO / "bundles" / args.bundle):  # the bundle's own networks
        steps, batches = build_steps(args, device)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i, batch in enumerate(batches):
        for mode in MODES:
            sync(device)
            start = time.perf_counter()
            steps[mode](batch)
            sync(device)
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def measure_memory(args: argparse.Namespace) -> float:
    """Peak memory of ``args.mode`` alone (MiB), run in a process of its own."""
    device = torch.device(args.device)
    with bundle_scripts(REPO / "bundles" / args.bundle):  # the bundle's own networks
        steps, batches = build_steps(args, device)
    rss_before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for batch in batches[: args.warmup + 1]:
        steps[args.mode](batch)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb() - rss_before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="kdnet_brats_mri")
    parser.add_argument("--configs", nargs="*", default=[], help="overlays on train.json, e.g. train_logit_kd.json")
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 64], help="spatial input size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--diagnostics_interval", type=int, default=50, help="the interval the overhead is stated for")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps({"peak_mb": measure_memory(args)}))
        return
    seconds = measure_times(args)
    peaks = {}
    for mode in MODES:
        cmd = [sys.executable, "-m", "tools.measure.benchmark_kd", *(sys.argv[1:] if argv is None else argv)]
        cmd += ["--mode", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
        peaks[mode] = json.loads(out.strip().splitlines()[-1])["peak_mb"]
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    print(
        f"{' + '.join([args.bundle, *args.configs])}: batch {args.batch}, input {'x'.join(map(str, args.shape))}, "
        f"{args.device}{' AMP' if args.amp else ''}, "
        f"median of {args.steps} interleaved steps, {torch.get_num_threads()} threads"
    )
    print(f"{'measurement':18s} {'ms/step':>9s} {memory + ' MiB':>24s}")
    for mode in MODES:
        print(f"{mode:18s} {1000 * seconds[mode]:9.1f} {peaks[mode]:24.0f}")
    ratio = seconds["kd_step"] / (seconds["student_step"] + seconds["teacher_forward"])
    print(f"ratio KD step / (student step + teacher forward) = {ratio:.3f}  (floor 1.0, target <= 1.10)")
    extra = seconds["kd_step_diagnosed"] / seconds["kd_step"] - 1
    print(
        f"diagnostics: a measured iteration costs {extra:+.0%} of a KD step; "
        f"at --diagnostics_interval {args.diagnostics_interval}: {extra / args.diagnostics_interval:+.1%} on average"
    )


if __name__ == "__main__":
    main()
