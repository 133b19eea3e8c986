"""One process against ``torchrun --nproc_per_node=N`` with a bundle's ``multi_gpu_train.json``: is
the result the same within seed noise? Prints a table of the best validation metric per seed.

    python -m tools.measure.compare_ddp bundles/mtms_contrastive_cardiac_mri --epochs 4 --seeds 0 1 \\
        --out /tmp/ddp -- --dataset_dir /data/acdc --datalist /data/acdc_split.json

Both runs see the same global batch: each of the N processes gets ``batch_size / N`` (the
``--batch_size_id`` config id), so an epoch has the same number of optimiser steps and the
learning-rate schedule is the same. Everything after ``--`` is passed to both runs (data, extra
overrides); ``--configs`` are the bundle's training configs (``multi_gpu_train.json`` is appended
for the distributed run). Checkpoints, models and logs go under ``--out``, never into the bundle.
On CPU the processes use gloo (one thread each); on GPUs NCCL, one GPU per process.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BEST = re.compile(r"Key metric: (\S+) best value: ([0-9.]+) at epoch: (\d+)")


def best_metric(log: str) -> tuple[str, float, int]:
    """The evaluator's last 'Key metric ... best value' line: (name, value, epoch)."""
    found = BEST.findall(log)
    if not found:
        raise RuntimeError(f"no 'Key metric ... best value' line in the log:\n{log[-3000:]}")
    name, value, epoch = found[-1]
    return name, float(value), int(epoch)


def train(command: list[str], log_file: Path) -> tuple[str, float, int, float]:
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}); log: {log_file}")
    return (*best_metric(result.stdout + result.stderr), time.time() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--configs", nargs="+", default=["train.json"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=2, help="global batch size (divisible by --nproc)")
    parser.add_argument("--batch_size_id", default="batch_size")
    parser.add_argument("--out", type=Path, required=True)
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:split]), argv[split + 1 :]
    if args.batch_size % args.nproc:
        sys.exit(f"--batch_size {args.batch_size} is not divisible by --nproc {args.nproc}")
    configs = [str(args.bundle / "configs" / c) for c in args.configs]
    distributed = [*configs, str(args.bundle / "configs" / "multi_gpu_train.json")]
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in args.seeds:
        results = {}
        for nproc in (1, args.nproc):
            name = f"seed{seed}_{nproc}proc"
            common = ["run", "--bundle_root", str(args.bundle), "--seed", str(seed), "--epochs", str(args.epochs)]
            common += ["--output_dir", str(args.out / name / "run"), "--model_dir", str(args.out / name)]
            common += [f"--{args.batch_size_id}", str(args.batch_size // nproc), *overrides]
            if nproc == 1:
                command = [sys.executable, "-m", "monai.bundle", *common, "--config_file", repr(configs)]
            else:
                torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                command = [*torchrun, "-m", "monai.bundle", *common, "--config_file", repr(distributed)]
            results[nproc] = train(command, args.out / f"{name}.log")
            print(f"seed {seed}, {nproc} process(es): {results[nproc]}", flush=True)
        rows.append((seed, results[1], results[args.nproc]))

    metric = rows[0][1][0]
    print(f"\nbest validation {metric} within {args.epochs} epoch(s), global batch {args.batch_size}")
    header = f"{'seed':>4} {'1 process':>16} {f'{args.nproc} processes':>16} {'difference':>10}"
    print(f"{header} {'wall 1':>8} {'wall N':>8}")
    for seed, single, multi in rows:
        print(
            f"{seed:>4} {single[1]:>9.4f} (ep {single[2]}) {multi[1]:>9.4f} (ep {multi[2]}) "
            f"{multi[1] - single[1]:>+10.4f} {single[3]:>7.0f}s {multi[3]:>7.0f}s"
        )
    singles, multis = [r[1][1] for r in rows], [r[2][1] for r in rows]
    if len(rows) > 1:
        print(
            f"mean {statistics.mean(singles):.4f} ± {statistics.stdev(singles):.4f} (1 process) vs "
            f"{statistics.mean(multis):.4f} ± {statistics.stdev(multis):.4f} ({args.nproc} processes); "
            f"mean difference {statistics.mean(m - s for s, m in zip(singles, multis, strict=True)):+.4f}"
        )


if __name__ == "__main__":
    main()
