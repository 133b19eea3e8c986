"""Markdown table of test-set metrics from MONAI ``MetricsSaver`` summaries, mean ± std over runs.

    python -m tools.measure.results_table --metric val_mean_dice \
        --row "student, KD" runs/evaluate_models runs/seed1_kd runs/seed2_kd --row ...
    python -m tools.measure.results_table --metric test_mean_dice test_hd95_mm --row ...
    python -m tools.measure.results_table --metric test_mean_dice:class0 test_mean_dice:class1 test_mean_dice --row ...

Each folder holds ``<metric>_summary.csv`` of one evaluation (mean over its test cases); a row
with several folders (seeds) reports, per metric, the mean ± sample std of those per-run means,
and each value; ``metric:classN`` reads one class's row of a multi-class summary.
``--per_case`` prints instead one line per test case and one column per row, from
``<metric>_raw.csv`` of each row's first folder.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from tools.measure.paired import per_case


def summary_mean(folder: Path, metric: str) -> float:
    """Mean over the test cases of ``metric``, or of one class of it with ``metric:classN``."""
    name, _, row_name = metric.partition(":")
    with open(folder / f"{name}_summary.csv") as f:
        return float(next(row for row in csv.reader(f) if row[0] == (row_name or "mean"))[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", nargs="+", default=["val_mean_dice"])
    parser.add_argument("--row", nargs="+", action="append", metavar=("NAME", "FOLDER"), required=True)
    parser.add_argument("--per_case", action="store_true", help="one line per case (first metric, first folders)")
    args = parser.parse_args(argv)
    if args.per_case:
        columns = {name: per_case(Path(folders[0]), args.metric[0]) for name, *folders in args.row}
        print("| case | " + " | ".join(columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for case in next(iter(columns.values())):
            print(f"| {case} | " + " | ".join(f"{values[case]:.3f}" for values in columns.values()) + " |")
        return
    print("| model | runs | " + " | ".join(f"{m}, mean ± std over runs | per run" for m in args.metric) + " |")
    print("|---|---:|" + "---:|---|" * len(args.metric))
    for name, *folders in args.row:
        cells = []
        for metric in args.metric:
            values = [summary_mean(Path(f), metric) for f in folders]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells += [f"{statistics.mean(values):.3f}{spread}", ", ".join(f"{v:.3f}" for v in values)]
        print(f"| {name} | {len(folders)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
