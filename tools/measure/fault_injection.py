"""Kill a training run at random points and run it again: does it resume from its last complete
checkpoint and end where an uninterrupted run ends?

    python -m tools.measure.fault_injection --kills 5 --seed 0 --window 3 30 \\
        --checkpoints bundles/X/runs/student --epochs 10 -- \\
        python -m monai.bundle run --config_file bundles/X/configs/train.json --bundle_root bundles/X --epochs 10 ...

Each of ``--kills`` attempts starts the command (in a process group of its own) and, after a
seeded random delay drawn from ``--window`` seconds, kills the whole group with SIGKILL (a run
that ends before its delay stops the tool with a request for a shorter window: a finished run
cannot be killed). Before every start the tool notes
the newest checkpoint of ``--checkpoints`` that loads (``torch.load(weights_only=True)``), and
after it checks that the run said it resumed from exactly that file (or started from scratch when
there was none; a start killed before it looked for a checkpoint is not judged) and that no
checkpoint file under its final name is unreadable. Finally the
command runs to its end: its newest checkpoint must be of epoch ``--epochs``. Prints a table, one
row per start, and exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.handlers import checkpoint_epoch, epoch_checkpoints


@dataclass
class Attempt:
    number: int
    killed_after: float | None  # seconds; None: ran to its end
    resumable: str | None  # the newest readable checkpoint before the start
    resumed_as_expected: bool
    unreadable: list[str]
    exit_code: int


def newest_readable(directory: Path) -> tuple[str | None, list[str]]:
    """The newest checkpoint that loads, and every checkpoint that does not."""
    newest, unreadable = None, []
    for path in epoch_checkpoints(str(directory)):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or corrupt: exactly what this tool looks for
            unreadable.append(os.path.basename(path))
            continue
        newest = newest or path
    return newest, unreadable


def attempt(command: list[str], directory: Path, delay: float | None, number: int) -> Attempt:
    """One start of ``command``, killed after ``delay`` seconds (None: let it finish)."""
    resumable, _ = newest_readable(directory)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    killed_after = None
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        killed_after = delay
    output = process.stdout.read() if process.stdout else ""
    decided = "resuming from " in output or "no checkpoint to resume from" in output
    if not decided:  # killed while starting, before the run looked for a checkpoint: nothing to judge
        expected = killed_after is not None
    elif resumable is None:
        expected = "no checkpoint to resume from" in output
    else:
        expected = f"resuming from {resumable}" in output
    _, unreadable = newest_readable(directory)
    if killed_after is None and not expected and process.returncode != 0:
        print(output[-3000:], file=sys.stderr)
    return Attempt(number, killed_after, resumable, expected, unreadable, process.returncode)


def run(command: list[str], directory: Path, kills: int, window: tuple[float, float], seed: int) -> list[Attempt]:
    rng = random.Random(seed)
    attempts: list[Attempt] = []
    while sum(a.killed_after is not None for a in attempts) < kills:
        result = attempt(command, directory, rng.uniform(*window), len(attempts) + 1)
        attempts.append(result)
        if result.killed_after is None:  # the run ended before its kill: nothing left to interrupt
            raise SystemExit(
                f"attempt {result.number} finished before its kill (exit {result.exit_code}); lower --window."
            )
    attempts.append(attempt(command, directory, None, len(attempts) + 1))
    return attempts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, nargs=2, default=(3.0, 30.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--checkpoints", type=Path, required=True, help="the run's checkpoint folder (runs/<run_name>)")
    parser.add_argument("--epochs", type=int, required=True, help="the epoch an uninterrupted run ends with")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the training command after --")
    start = time.monotonic()
    attempts = run(command, args.checkpoints, args.kills, tuple(args.window), args.seed)
    print("| start | killed after s | newest complete checkpoint before it | resumed from it | unreadable files |")
    print("|---:|---:|---|---|---|")
    for a in attempts:
        killed = f"{a.killed_after:.1f}" if a.killed_after is not None else "ran to its end"
        resumable = os.path.basename(a.resumable) if a.resumable else "none (from scratch)"
        print(
            f"| {a.number} | {killed} | {resumable} | {'yes' if a.resumed_as_expected else 'NO'} "
            f"| {', '.join(a.unreadable) or 'none'} |"
        )
    final, _ = newest_readable(args.checkpoints)
    final_epoch = checkpoint_epoch(final) if final else None
    lost = [a for a in attempts if not a.resumed_as_expected or a.unreadable]
    ok = not lost and final_epoch == args.epochs and attempts[-1].exit_code == 0
    kills = sum(a.killed_after is not None for a in attempts)
    print(
        f"{kills} kill(s) in {time.monotonic() - start:.0f} s; final checkpoint epoch {final_epoch} of {args.epochs}; "
        + ("nothing lost" if ok else f"LOST: {len(lost)} start(s) did not resume as expected or left unreadable files")
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
