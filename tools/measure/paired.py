"""The paired KD − baseline difference over test cases and seeds, with its 95 % interval.

    python -m tools.measure.paired --metric test_mean_dice \\
        --baseline runs/seed0_baseline runs/seed1_baseline runs/seed2_baseline \\
        --kd runs/seed0_kd runs/seed1_kd runs/seed2_kd [--json paired.json]

Each folder holds ``<metric>_raw.csv`` (MONAI's ``MetricsSaver``: one row per test case, the last
column its value). Folders pair up in the order given (the same seed, and for cross-validation
the same fold, at the same position in both lists), and within a pair cases pair up by file name.
For every case the KD − baseline difference is averaged over the seeds that tested it; the
interval is Student's t over those per-case differences (the cases are the unit a new hospital
draws from; seeds are averaged inside each case), and a percentile bootstrap over cases and seeds
is printed beside it as a check. The answer says plainly whether the interval excludes zero.

Where several test cases come from one patient (ACDC's two frames of each patient), they are not
independent draws: ``--group 'patient\\d+'`` makes the patient the unit (the cases whose names
give the same match are averaged before the interval, and the bootstrap draws patients).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats


def per_case(folder: Path, metric: str) -> dict[str, float]:
    """``{case: value}`` from ``<folder>/<metric>_raw.csv`` (the case named by its file name).

    ``MetricsSaver`` writes file names unquoted, so a name holding a line break spans several
    lines: a row ends at the line whose last fields are the numbers the header announces."""
    path = folder / f"{metric}_raw.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evaluate that run first (evaluate.json writes it).")
    header, *lines = path.read_text().splitlines()
    values = len(header.split(",")) - 1
    cases, pending = {}, []
    for line in lines:
        pending.append(line)
        name, *fields = "\n".join(pending).rsplit(",", values)
        if len(fields) == values and all(_is_number(field) for field in fields):
            cases[Path(name.split()[-1]).name.split(".nii")[0]] = float(fields[-1])
            pending = []
    if pending:
        raise ValueError(f"{path}: its last row has no {values} values: {pending[-1]!r}")
    return cases


def mean_sd(values: list[float] | None) -> str:
    """``mean ± sd`` of ``values`` to 3 decimals (the mean alone for one value, "–" for none)."""
    if not values:
        return "\u2013"
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def case_differences(baseline: list[dict[str, float]], kd: list[dict[str, float]]) -> dict[str, list[float]]:
    """``{case: [KD − baseline of each run pair that tested it]}``; runs pair up by position and
    the two runs of a pair must have tested the same cases.

    Example::

        >>> case_differences([{"a": 0.5}, {"a": 0.25}], [{"a": 0.75}, {"a": 0.25}])  # one case, two seeds
        {'a': [0.25, 0.0]}
    """
    if len(baseline) != len(kd) or not baseline:
        raise ValueError(f"{len(baseline)} baseline run(s) and {len(kd)} KD run(s): give them in pairs.")
    by_case: dict[str, list[float]] = defaultdict(list)
    for index, (base_run, kd_run) in enumerate(zip(baseline, kd, strict=True)):
        if set(base_run) != set(kd_run):
            raise ValueError(
                f"run pair {index}: the baseline tested {sorted(base_run)}, the KD student {sorted(kd_run)}; "
                "pair runs of the same fold."
            )
        for case in base_run:
            by_case[case].append(kd_run[case] - base_run[case])
    return dict(by_case)


def units_of(cases: list[str], group: str | None) -> dict[str, list[str]]:
    """``{unit: [its cases]}``: each case alone, or with ``group`` (a regular expression) the cases
    whose names give the same first match together (e.g. ``patient\\d+``: the frames of a patient).

    Example::

        >>> units_of(["p1_f1", "p1_f2", "p2_f1"], r"p\\d+")
        {'p1': ['p1_f1', 'p1_f2'], 'p2': ['p2_f1']}
    """
    if group is None:
        return {case: [case] for case in cases}
    units: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        match = re.search(group, case)
        if match is None:
            raise ValueError(f"test case {case!r} does not match the group pattern {group!r}")
        units[match.group(0)].append(case)
    return dict(units)


def paired_difference(
    baseline: list[dict[str, float]],
    kd: list[dict[str, float]],
    resamples: int = 10_000,
    seed: int = 0,
    group: str | None = None,
) -> dict:
    """The mean KD − baseline difference over cases (each case's difference averaged over the runs
    that tested it), its 95 % t interval over cases, a bootstrap interval over cases and runs, and
    the mean difference of each run pair. With ``group`` (see :func:`units_of`) the interval's unit
    is the group: its cases are averaged first (the mean is the same where groups are equal in size).

    Example::

        >>> base = [{"a": 0.5, "b": 0.6, "c": 0.7}]
        >>> paired_difference(base, [{"a": 0.6, "b": 0.6, "c": 0.9}])["difference"]  # (0.1 + 0 + 0.2) / 3
        0.1
    """
    by_case = case_differences(baseline, kd)
    per_run = [
        statistics.mean(kd_run[case] - base_run[case] for case in base_run)
        for base_run, kd_run in zip(baseline, kd, strict=True)
    ]
    cases = {case: statistics.mean(values) for case, values in sorted(by_case.items())}
    units = units_of(list(by_case), group)
    values = [statistics.mean(cases[case] for case in members) for members in units.values()]
    mean = statistics.mean(values)
    if len(values) > 1:
        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        interval = [float(mean - half), float(mean + half)]
    else:
        interval = [math.nan, math.nan]
    rng = random.Random(seed)
    names, runs = list(units), len(baseline)
    boot = []
    for _ in range(resamples):  # units drawn with replacement, then one run pair per case
        drawn = [rng.choice(names) for _ in names]
        boot.append(
            statistics.mean(
                statistics.mean(by_case[case][rng.randrange(len(by_case[case]))] for case in units[unit])
                for unit in drawn
            )
        )
    boot.sort()
    return {
        "difference": round(mean, 6),
        "ci95": [round(v, 6) for v in interval],
        "method": "t over test cases (each averaged over seeds)"
        if group is None
        else f"t over groups {group!r} of test cases (each case averaged over seeds, then over its group)",
        "bootstrap_ci95": [round(boot[int(0.025 * resamples)], 6), round(boot[int(0.975 * resamples) - 1], 6)],
        "excludes_zero": bool(interval[0] > 0 or interval[1] < 0),
        "cases": len(cases),
        **({} if group is None else {"group": group, "groups": len(values)}),
        "runs": runs,
        "per_run": [round(v, 6) for v in per_run],
        "per_case": {case: round(v, 6) for case, v in cases.items()},
    }


def sentence(result: dict, baseline: str = "baseline") -> str:
    """The result in one line; ``baseline`` names what the KD student was compared with."""
    low, high = result["ci95"]
    verdict = "excludes 0" if result["excludes_zero"] else "includes 0: no difference shown"
    units = f" in {result['groups']} groups" if "groups" in result else ""
    return (
        f"KD − {baseline} = {result['difference']:+.3f} (95 % CI {low:+.3f} to {high:+.3f}; "
        f"{result['cases']} test cases{units} × {result['runs']} run pair(s); the interval {verdict})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metric", default="test_mean_dice")
    parser.add_argument("--baseline", nargs="+", required=True, type=Path, help="evaluation folders, one per run")
    parser.add_argument("--kd", nargs="+", required=True, type=Path, help="the same runs' KD students, same order")
    parser.add_argument("--group", help="regular expression: cases with the same match form one unit (a patient)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = paired_difference(
        [per_case(f, args.metric) for f in args.baseline],
        [per_case(f, args.metric) for f in args.kd],
        group=args.group,
    )
    print(sentence(result))
    print(f"bootstrap over cases and runs: {result['bootstrap_ci95'][0]:+.3f} to {result['bootstrap_ci95'][1]:+.3f}")
    print("per run pair: " + ", ".join(f"{v:+.3f}" for v in result["per_run"]))
    if args.json:
        args.json.write_text(json.dumps(result | {"metric": args.metric}, indent=2) + "\n")


if __name__ == "__main__":
    main()
