"""Kill a long command at random points and run it again: does it go on from what it had finished,
with nothing half-written, and end where an uninterrupted run ends?

    python -m tools.measure.fault_injection --kills 5 --seed 0 --window 3 30 \\
        --checkpoints bundles/X/runs/student --epochs 10 -- \\
        python -m monai.bundle run --config_file bundles/X/configs/train.json --bundle_root bundles/X --epochs 10 ...
    python -m tools.measure.fault_injection --kills 3 --window 8 14 --annotation OUT_DIR -- \\
        python -m monai.bundle run --config_file "['.../train.json','.../annotate.json']" --pseudo_label_dir OUT_DIR ...
    python -m tools.measure.fault_injection --kills 3 --window 2 4 --export dist/X_v1.0.0.zip -- \\
        python -m tools.bundle.export export bundles/X --out dist

Each of ``--kills`` attempts starts the command (in a process group of its own) and, after a
seeded random delay drawn from ``--window`` seconds, kills the whole group with SIGKILL (a run
that ends before its delay stops the tool with a request for a shorter window: a finished run
cannot be killed). Finally the command runs to its end. What is checked depends on the job:

- ``--checkpoints DIR --epochs N`` (training): before every start the tool notes the newest
  checkpoint that loads (``torch.load(weights_only=True)``); the run must say it resumed from
  exactly that file (or started from scratch when there was none; a start killed before it looked
  for a checkpoint is not judged); no checkpoint under its final name may be unreadable; the last
  checkpoint must be of epoch N.
- ``--annotation DIR`` (the transfer bundle's annotate stage): after every start each label and
  probability map under DIR must load whole and ``manifest.json`` must parse, with every case it
  lists present under the hash it records; the final run must skip exactly the cases complete
  before it and write ``datalist.json`` naming every case.
- ``--export ZIP``: after every start a file under ZIP's name must be the whole export (its
  checksum file matches, :func:`tools.bundle.export.verify` finds nothing), and the final run
  leaves one.

Prints a table, one row per start, and exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import torch

from common.handlers import checkpoint_epoch, epoch_checkpoints
from tools.bundle.export import sha256, verify


@dataclass
class Attempt:
    number: int
    killed_after: float | None  # seconds; None: ran to its end
    before: str  # what was complete before the start
    resumed_as_expected: bool
    damaged: list[str]  # files under their final names that are not whole
    exit_code: int


class Checkpoints:
    """Training: resume from the newest complete checkpoint, never from a truncated one."""

    def __init__(self, directory: Path, epochs: int) -> None:
        self.directory, self.epochs = directory, epochs

    def newest_readable(self) -> tuple[str | None, list[str]]:
        """The newest checkpoint that loads, and every checkpoint that does not."""
        newest, unreadable = None, []
        for path in epoch_checkpoints(str(self.directory)):
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # truncated or corrupt: exactly what this tool looks for
                unreadable.append(os.path.basename(path))
                continue
            newest = newest or path
        return newest, unreadable

    def before(self) -> str | None:
        return self.newest_readable()[0]

    @staticmethod
    def describe(state: str | None) -> str:
        return os.path.basename(state) if state else "no checkpoint (from scratch)"

    @staticmethod
    def resumed_as_expected(state: str | None, output: str, killed: bool) -> bool:
        if "resuming from " not in output and "no checkpoint to resume from" not in output:
            return killed  # killed while starting, before the run looked for a checkpoint: nothing to judge
        return f"resuming from {state}" in output if state else "no checkpoint to resume from" in output

    def damaged(self) -> list[str]:
        return self.newest_readable()[1]

    def finished(self) -> tuple[bool, str]:
        final, _ = self.newest_readable()
        epoch = checkpoint_epoch(final) if final else None
        return epoch == self.epochs, f"final checkpoint epoch {epoch} of {self.epochs}"


class Annotation:
    """The annotate stage: whole labels only, a manifest that matches them, done cases skipped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def complete_cases(self) -> list[str]:
        """The manifest's cases whose files exist under the recorded hashes."""
        manifest = self.directory / "manifest.json"
        if not manifest.is_file():
            return []
        cases = json.loads(manifest.read_text())["cases"]
        done = []
        for case, entry in cases.items():
            files = [(entry["label"], entry["label_sha256"])]
            if "probabilities" in entry:
                files.append((entry["probabilities"], entry["probabilities_sha256"]))
            if all((self.directory / f).is_file() and sha256((self.directory / f).read_bytes()) == h for f, h in files):
                done.append(case)
        return done

    def before(self) -> int:
        return len(self.complete_cases())

    @staticmethod
    def describe(state: int) -> str:
        return f"{state} case(s) annotated"

    @staticmethod
    def resumed_as_expected(state: int, output: str, killed: bool) -> bool:
        summary = re.search(r"(\d+) case\(s\) annotated, (\d+) already done", output)
        return killed if summary is None else int(summary.group(2)) == state

    def damaged(self) -> list[str]:
        damaged = []
        for path in sorted(self.directory.glob("*/*.nii.gz")):
            if path.name.startswith("."):  # a temporary name, renamed only once whole
                continue
            try:
                nib.load(path).get_fdata()
            except Exception:  # a half-written label is what this check looks for
                damaged.append(str(path.relative_to(self.directory)))
        try:
            listed = json.loads((self.directory / "manifest.json").read_text())["cases"]
        except FileNotFoundError:
            return damaged
        except (json.JSONDecodeError, KeyError):
            return [*damaged, "manifest.json"]
        complete = set(self.complete_cases())
        return damaged + [f"manifest.json: {case}" for case in listed if case not in complete]

    def finished(self) -> tuple[bool, str]:
        datalist = self.directory / "datalist.json"
        listed = len(json.loads(datalist.read_text())["training"]) if datalist.is_file() else 0
        cases = self.before()
        return datalist.is_file() and listed == cases > 0, f"{cases} case(s) in the manifest, {listed} in datalist.json"


class Export:
    """Export: a zip under its final name is always the whole, verified export."""

    def __init__(self, zip_path: Path) -> None:
        self.zip_path = zip_path

    def before(self) -> bool:
        return self.zip_path.is_file()

    @staticmethod
    def describe(state: bool) -> str:
        return "a zip" if state else "no zip"

    @staticmethod
    def resumed_as_expected(state: bool, output: str, killed: bool) -> bool:
        return True  # an export starts over; only what it leaves behind is judged

    def damaged(self) -> list[str]:
        return [f"{self.zip_path.name}: {p}" for p in verify(self.zip_path)] if self.zip_path.exists() else []

    def finished(self) -> tuple[bool, str]:
        return self.zip_path.is_file(), f"{self.zip_path.name} {'written' if self.zip_path.is_file() else 'missing'}"


Job = Checkpoints | Annotation | Export


def attempt(command: list[str], job: Job, delay: float | None, number: int) -> Attempt:
    """One start of ``command``, killed after ``delay`` seconds (None: let it finish)."""
    state = job.before()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    killed_after = None
    try:
        output, _ = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        killed_after = delay
    expected = job.resumed_as_expected(state, output, killed_after is not None)
    if killed_after is None and (not expected or process.returncode != 0):
        print(output[-3000:], file=sys.stderr)
    return Attempt(number, killed_after, job.describe(state), expected, job.damaged(), process.returncode)


def run(command: list[str], job: Job, kills: int, window: tuple[float, float], seed: int) -> list[Attempt]:
    rng = random.Random(seed)
    attempts: list[Attempt] = []
    while sum(a.killed_after is not None for a in attempts) < kills:
        result = attempt(command, job, rng.uniform(*window), len(attempts) + 1)
        attempts.append(result)
        if result.killed_after is None:  # the run ended before its kill: nothing left to interrupt
            raise SystemExit(
                f"attempt {result.number} finished before its kill (exit {result.exit_code}); lower --window."
            )
    attempts.append(attempt(command, job, None, len(attempts) + 1))
    return attempts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, nargs=2, default=(3.0, 30.0), metavar=("MIN_S", "MAX_S"))
    jobs = parser.add_mutually_exclusive_group(required=True)
    jobs.add_argument("--checkpoints", type=Path, help="training: the run's checkpoint folder (runs/<run_name>)")
    jobs.add_argument("--annotation", type=Path, help="annotation: the pseudo-label folder (pseudo_label_dir)")
    jobs.add_argument("--export", type=Path, metavar="ZIP", help="export: the zip the command writes")
    parser.add_argument("--epochs", type=int, help="training: the epoch an uninterrupted run ends with")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    if args.checkpoints and args.epochs is None:
        parser.error("--checkpoints needs --epochs (the epoch an uninterrupted run ends with)")
    job: Job
    if args.checkpoints:
        job = Checkpoints(args.checkpoints, args.epochs)
    elif args.annotation:
        job = Annotation(args.annotation)
    else:
        job = Export(args.export)
    start = time.monotonic()
    attempts = run(command, job, args.kills, tuple(args.window), args.seed)
    print("| start | killed after s | complete before it | went on from it | damaged files |")
    print("|---:|---:|---|---|---|")
    for a in attempts:
        killed = f"{a.killed_after:.1f}" if a.killed_after is not None else "ran to its end"
        print(
            f"| {a.number} | {killed} | {a.before} | {'yes' if a.resumed_as_expected else 'NO'} "
            f"| {', '.join(a.damaged) or 'none'} |"
        )
    finished, final = job.finished()
    lost = [a for a in attempts if not a.resumed_as_expected or a.damaged]
    ok = not lost and finished and attempts[-1].exit_code == 0
    kills = sum(a.killed_after is not None for a in attempts)
    print(
        f"{kills} kill(s) in {time.monotonic() - start:.0f} s; {final}; "
        + ("nothing lost" if ok else f"LOST: {len(lost)} start(s) did not go on as expected or left damaged files")
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
