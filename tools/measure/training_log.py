"""What runs' TensorBoard logs say about their training, as the tables of a bundle's docs.

    python -m tools.measure.training_log convergence RUN_DIR... [--last 3]
    python -m tools.measure.training_log gradients RUN_DIR... [--json FILE]

``convergence``: per run, the validation Dice (``val_mean_dice``) at its last ``--last`` checks and
its best check (the one the run selected its model on), so a reader sees whether it is level.

``gradients``: the per-term diagnostics a KD run logs with ``--diagnostics_interval``
(``grad_norm_<term>``: the norm of the weighted term's gradient on the student; ``grad_cos_<term>``:
its cosine with the reference term's, :func:`common.diagnostics.term_gradients`), averaged
over the first and the last quarter of the logged iterations. The reference is the one term logged
without a cosine: the segmentation term (``seg``, or HLFD's Dice half ``seg_dice``). A batch
without labels (distillation on unlabelled images) has no segmentation term, so the reference's
norm is 0 there and no cosine is defined: such batches are averaged apart (rows "without labels",
norms only), since mixing them in would dilute both. With several runs (the seeds of one arm) each
cell lists every run's value, in the order given, separated by " / ".
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tools.bundle.files import write_atomic

QUARTERS = ("first quarter", "last quarter")


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of ``run_dir``'s event files (a resumed run writes several), each file read once:
    ``{tag: [(step, value), ...]}`` sorted by step; a step logged twice (a resumed run repeats it) keeps
    the value written last (by each event's wall time: file names do not sort in the order they were written)."""
    events: dict[str, list[tuple[float, int, float]]] = {}
    for path in Path(run_dir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            events.setdefault(tag, []).extend((e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted({step: value for _, step, value in sorted(logged)}.items()) for tag, logged in events.items()}


def scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` in ``run_dir`` (:func:`read_scalars`); empty if it was never logged."""
    return read_scalars(run_dir).get(tag, [])


def convergence(run_dir: str | Path, last: int = 3) -> dict[str, list[tuple[int, float]] | tuple[int, float]]:
    """The last ``last`` validation checks ``[(epoch, dice), ...]`` and the best ``(epoch, dice)`` of a run."""
    if last < 1:
        raise ValueError(f"last must be at least 1, got {last}")
    checks = scalars(run_dir, "val_mean_dice")
    if not checks:
        raise SystemExit(f"{run_dir}: no 'val_mean_dice' in its TensorBoard logs (events.out.tfevents.*)")
    return {"last": checks[-last:], "best": max(checks, key=lambda check: check[1])}


def gradients(run_dir: str | Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(batches, term, "norm" | "cos"): {quarter: mean}}`` of one run (module docstring)."""
    logged_tags = read_scalars(run_dir)
    terms = sorted(tag[len("grad_norm_") :] for tag in logged_tags if tag.startswith("grad_norm_"))
    references = [term for term in terms if f"grad_cos_{term}" not in logged_tags]
    if len(references) != 1:
        raise SystemExit(
            f"{run_dir}: expected one term logged without a cosine, the segmentation reference, found "
            f"{', '.join(references) or 'none'}; train with --diagnostics_interval N to log each term's "
            f"gradient (found: {', '.join(terms) or 'no grad_norm_* tag'})"
        )
    reference = references[0]
    norms = {term: dict(logged_tags[f"grad_norm_{term}"]) for term in terms}
    cosines = {term: dict(logged_tags[f"grad_cos_{term}"]) for term in terms if term != reference}
    steps = sorted(norms[reference])
    quarter = max(1, len(steps) // 4)
    table: dict[tuple[str, str, str], dict[str, float]] = {}
    for name, chosen in zip(QUARTERS, (steps[:quarter], steps[-quarter:]), strict=True):
        labelled = [step for step in chosen if norms[reference][step] > 0]
        unlabelled = [step for step in chosen if norms[reference][step] == 0]
        for term in terms:
            for batches, picked in (("with labels", labelled), ("without labels", unlabelled)):
                logged = [norms[term][step] for step in picked if step in norms[term]]
                if logged and not (batches == "without labels" and term == reference):
                    table.setdefault((batches, term, "norm"), {})[name] = statistics.mean(logged)
            logged = [cosines[term][step] for step in labelled if step in cosines.get(term, {})]
            if logged:
                table.setdefault(("with labels", term, "cos"), {})[name] = statistics.mean(logged)
    return table


def gradient_rows(runs: list[str]) -> list[dict[str, str | list[float | None]]]:
    """One row per (batches, term): each run's quarter means, in the order of ``runs``; the reference
    term (the one without a cosine) first."""
    per_run = [gradients(run) for run in runs]
    cosine_terms = {term for table in per_run for _, term, kind in table if kind == "cos"}
    keys = sorted(
        {key for table in per_run for key in table},
        key=lambda key: (key[0] != "with labels", key[1] in cosine_terms, key),
    )
    rows = []
    for batches, term in dict.fromkeys((key[0], key[1]) for key in keys):
        row = {"batches": batches, "term": term}
        for kind in ("norm", "cos"):
            for quarter in QUARTERS:
                row[f"{kind} {quarter}"] = [table.get((batches, term, kind), {}).get(quarter) for table in per_run]
        rows.append(row)
    return rows


def _cell(values: list[float | None]) -> str:
    if all(value is None for value in values):
        return "–"
    return " / ".join("–" if value is None else f"{value:.2f}" for value in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convergence", help="validation Dice at each run's last checks and its best")
    conv.add_argument("runs", nargs="+")
    conv.add_argument("--last", type=int, default=3, help="how many of the last checks (at least 1)")
    grad = sub.add_parser("gradients", help="each loss term's gradient norm and cosine with seg, first/last quarter")
    grad.add_argument("runs", nargs="+")
    grad.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.command == "convergence" and args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    missing = [run for run in args.runs if not Path(run).is_dir()]
    if missing:
        raise SystemExit(f"not a run folder: {', '.join(missing)}")
    if args.command == "convergence":
        print("| run | validation Dice at the last checks (epoch: Dice) | best (epoch) |")
        print("|---|---|---|")
        for run in args.runs:
            result = convergence(run, args.last)
            last = ", ".join(f"{epoch}: {dice:.3f}" for epoch, dice in result["last"])
            print(f"| {Path(run).name} | {last} | {result['best'][1]:.3f} ({result['best'][0]}) |")
        return
    rows = gradient_rows(args.runs)
    reference = rows[0]["term"]  # gradient_rows puts it first
    print("runs: " + " / ".join(Path(run).name for run in args.runs))
    print(
        f"| batches | term | gradient norm, first quarter | last quarter | cosine with {reference}, first quarter "
        "| last quarter |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        cosine = [_cell(row[f"cos {quarter}"]) for quarter in QUARTERS]
        if row["term"] == reference:
            cosine = ["1 (reference)"] * 2
        norm = [_cell(row[f"norm {quarter}"]) for quarter in QUARTERS]
        print(f"| {row['batches']} | {row['term']} | {norm[0]} | {norm[1]} | {cosine[0]} | {cosine[1]} |")
    if args.json:
        write_atomic(Path(args.json), (json.dumps({"runs": args.runs, "rows": rows}, indent=2) + "\n").encode())
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
