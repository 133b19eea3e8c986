"""The collection's report: every bundle's measured results in one table and one figure.

    python -m tools.measure.collection_report          # writes docs/results.md, docs/results.png, README.md's block
    python -m tools.measure.collection_report --check  # exit 1 if docs/results.md or the README block is out of date
    python -m tools.measure.collection_report --root /some/checkout

Reads ``bundles/*/docs/results.json`` (in sorted order; ``_``-prefixed folders such as the
template bundle are left out), the machine-readable copy of the results tables of each bundle's
``docs/README.md``, and writes

- ``docs/results.md``: one markdown table (method | dataset | model | role | Dice (± sd, seeds) |
  params | CPU s/vol), then one line per method with the KD − baseline difference in Dice (and
  the protocol's teacher gate, where the rows give their validation Dice);
  When a ``results.json`` holds ``latency``, a second table follows: end-to-end CPU inference per
  volume of its teacher, student and exported runtimes, with the speed against the teacher; when
  its baseline and KD rows hold ``per_case``, a table of each test case's paired difference;
- ``docs/results.png``: test Dice against parameters (log scale) and against CPU seconds per
  volume, one colour per method, one marker per role (teacher ▲, baseline ●, KD ★; the shipped
  KD student large, other KD variants small and faded), error bars where the sd over seeds is
  known, an arrow from the baseline student to the shipped KD student;
- the block between ``<!-- collection-report:start -->`` and ``<!-- collection-report:end -->``
  in the top ``README.md``: the KD − baseline line per method, a link to the table and the figure.
  Without those markers the block is added after the bundle table of the "## What this is"
  section (before "### Layout").

Schema of ``results.json`` (every key below is required unless marked optional; no other key is
accepted, so a misspelt key is an error; ``null`` means not measured: the table prints "–" and
the figure leaves the point out)::

    {
      "method": "KD-Net (Hu et al., MICCAI 2020)",          # non-empty string
      "dataset": "BraTS subset, 16 cases (T1 student)",     # non-empty string
      "metric": "test Dice (whole tumour)",                 # non-empty string
      "hardware": "2 CPU cores",                            # where the CPU times were measured
      "rows": [                                             # non-empty list of objects
        {"role": "teacher",          # teacher | baseline | kd | reference
         "model": "SegResNet FLAIR+T1",                     # non-empty string
         "dice": 0.885,              # number in [0, 1]: the mean over seeds
         "dice_sd": null,            # null or number in [0, 1]: sample std over seeds
         "seeds": 1,                 # integer >= 1
         "params": 1176402,          # null or integer > 0
         "cpu_s_per_volume": 1.18,   # null or number > 0
         "per_seed": [0.88, 0.89],   # optional: each seed's value, as many as "seeds", averaging to "dice"
         "validation_dice": 0.81,    # optional: the best validation Dice the model was selected on,
                                     #   mean over seeds (the teacher gate compares teacher and baseline)
         "per_case": {"f0_s0": {"case_a": 0.87, "case_b": 0.91}, "f0_s1": {...}},  # optional: each run's
                                     #   test Dice per case (runs named as tools.measure.cv_study names them:
                                     #   f<fold>_s<seed>), all of them averaging to "dice"
         "shipped": true}            # optional, kd rows only: the student in models/model.pt
      ],
      "paired": {                    # optional: the shipped (or first) KD row against the baseline,
        "difference": 0.012,         #   paired by test case and seed (python -m tools.measure.paired);
        "ci95": [-0.01, 0.034],      #   its 95 % interval, around the difference
        "cases": 16,                 #   integer >= 1: test cases
        "runs": 3,                   #   integer >= 1: run pairs (seeds, times folds)
        "groups": 8,                 #   optional, integer in [1, cases]: the interval's units where cases
                                     #   were grouped (tools.measure.paired --group: a patient's frames)
        "pmd_against_baseline_long": {"difference": ..., "ci95": [...], "cases": ..., "runs": ...},
                                     #   optional: any other pairing of two arms, named <a>_against_<b>
                                     #   (a − b), with the same fields; the report tables every one
        ...},                        #   any further keys of that tool's output are kept as they are;
                                     #   where the baseline and that KD row carry per_case, the difference
                                     #   must be what their runs of the same name give
      "latency": {                   # optional: python -m tools.measure.latency on real volumes
        "volumes": "3 ACDC volumes, the first a warm-up",   # non-empty string: what was timed
        "threads": 2,                #   integer >= 1
        "rows": [                    #   non-empty list; the first row is the teacher
          {"model": "teacher (PyTorch)",  # non-empty string
           "end_to_end_s": 1.37,     # number > 0: median seconds per volume, load to saved label map
           "inferer_s": 1.14,        # number > 0: of which the sliding window and network
           "peak_mib": 228,          # number >= 0: peak memory growth of the process
           "agreement": null}        # null or number in [0, 1]: lowest class Dice of its label maps
        ]}                           #   against the PyTorch student's (--compare_to)
    }

Each file needs at least one teacher row (a method may have several teachers), exactly one
baseline row (the same student trained without distillation), at least one kd row, and at most
one kd row flagged ``"shipped": true``; ``reference`` rows (upper bounds, other variants) are
optional. The KD − baseline difference uses the shipped kd row, or the first kd row when none is
flagged. Rows are listed teacher, baseline, kd, reference, each role in the file's order.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.measure.paired import case_differences

ROLES = ("teacher", "baseline", "kd", "reference")
ROLE_NAMES = {"teacher": "teacher", "baseline": "baseline", "kd": "KD", "reference": "reference"}
START = "<!-- collection-report:start -->"
END = "<!-- collection-report:end -->"
RESULTS_GLOB = "bundles/*/docs/results.json"
RESULTS_MD = "docs/results.md"
RESULTS_PNG = "docs/results.png"
README = "README.md"
MINUS = "\u2212"
NOT_MEASURED = "\u2013"
TOP_KEYS = ("method", "dataset", "metric", "hardware", "rows")
OPTIONAL_TOP_KEYS = ("paired", "latency")
LATENCY_KEYS = ("model", "end_to_end_s", "inferer_s", "peak_mib", "agreement")
ROW_KEYS = ("role", "model", "dice", "dice_sd", "seeds", "params", "cpu_s_per_volume")
OPTIONAL_ROW_KEYS = ("per_seed", "shipped", "validation_dice", "per_case")
TEACHER_MARGIN = 0.05  # docs/protocol.md: the teacher beats the no-KD student on validation by this much
FIGURE_ALT = (
    "Test Dice against parameters and CPU time per volume: teacher, baseline student and KD student of each method"
)
HEADING = "### Measured results across the collection"
PAIRING_KEY = re.compile(r"\w+_against_\w+")  # a further pairing inside ``paired``: <a>_against_<b>, a − b


class ReportError(ValueError):
    """A results file or the README cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Row:
    role: str
    model: str
    dice: float
    dice_sd: float | None
    seeds: int
    params: int | None
    cpu_s_per_volume: float | None
    shipped: bool = False
    per_seed: tuple[float, ...] | None = None
    per_case: dict[str, dict[str, float]] | None = dataclasses.field(default=None, hash=False)  # {run: {case: dice}}
    validation_dice: float | None = None


@dataclass(frozen=True)
class Paired:
    """The paired KD − baseline difference with its 95 % interval."""

    difference: float
    low: float
    high: float
    cases: int
    runs: int
    groups: int | None = None  # the interval's units where cases were grouped (a patient's frames)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Timing:
    """One model's end-to-end inference per volume."""

    model: str
    end_to_end_s: float
    inferer_s: float
    peak_mib: float
    agreement: float | None


@dataclass(frozen=True)
class Latency:
    volumes: str
    threads: int
    rows: tuple[Timing, ...]  # the first: the teacher


@dataclass(frozen=True)
class Results:
    bundle: str
    method: str
    dataset: str
    metric: str
    hardware: str
    rows: tuple[Row, ...]
    paired: Paired | None = None
    latency: Latency | None = None
    other_pairings: tuple[tuple[str, Paired], ...] = ()  # (<a>_against_<b>, a − b) in the file's order

    def by_role(self, role: str) -> list[Row]:
        return [r for r in self.rows if r.role == role]

    @property
    def baseline(self) -> Row:
        return self.by_role("baseline")[0]

    @property
    def main_kd(self) -> Row:
        """The shipped kd row, or the first kd row when none is flagged."""
        kd = self.by_role("kd")
        return next((r for r in kd if r.shipped), kd[0])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(data: dict, required: tuple, optional: tuple, where: str, missing: str = "missing") -> None:
    """Every required key present and no other than the optional ones; ``where`` prefixes the field."""
    for key in required:
        if key not in data:
            raise ReportError(f"{where}{key}: {missing}")
    for key in data:
        if key not in required + optional:
            raise ReportError(f"{where}{key}: unknown field (expected {', '.join(required + optional)})")


def _row(data: object, where: str) -> Row:
    """One validated row; ``where`` is ``<file>: rows[i]``."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: must be a JSON object")
    _check_keys(data, ROW_KEYS, OPTIONAL_ROW_KEYS, f"{where}.", "missing (use null for a value that was not measured)")
    role, model, dice, sd = data["role"], data["model"], data["dice"], data["dice_sd"]
    seeds, params, cpu, shipped = data["seeds"], data["params"], data["cpu_s_per_volume"], data.get("shipped", False)
    if role not in ROLES:
        raise ReportError(f"{where}.role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if not isinstance(model, str) or not model.strip():
        raise ReportError(f"{where}.model: must be a non-empty string")
    if not _is_number(dice):
        raise ReportError(f"{where}.dice: must be a number, got {dice!r}")
    if not 0 <= dice <= 1:
        raise ReportError(f"{where}.dice: {dice} is outside [0, 1]")
    if sd is not None and not (_is_number(sd) and 0 <= sd <= 1):
        raise ReportError(f"{where}.dice_sd: must be null or a number in [0, 1], got {sd!r}")
    if not _is_int(seeds) or seeds < 1:
        raise ReportError(f"{where}.seeds: must be an integer >= 1, got {seeds!r}")
    if params is not None and not (_is_int(params) and params > 0):
        raise ReportError(f"{where}.params: must be null or a positive integer, got {params!r}")
    if cpu is not None and not (_is_number(cpu) and cpu > 0):
        raise ReportError(f"{where}.cpu_s_per_volume: must be null or a positive number, got {cpu!r}")
    if not isinstance(shipped, bool):
        raise ReportError(f"{where}.shipped: must be true or false, got {shipped!r}")
    if shipped and role != "kd":
        raise ReportError(f"{where}.shipped: only a kd row can be the shipped student (this row is {role!r})")
    per_seed = data.get("per_seed")
    if per_seed is not None:
        if not isinstance(per_seed, list) or len(per_seed) != seeds or not all(_is_number(v) for v in per_seed):
            raise ReportError(f"{where}.per_seed: must be a list of {seeds} number(s), one per seed, got {per_seed!r}")
        if abs(sum(per_seed) / len(per_seed) - dice) > 5e-4:
            raise ReportError(f"{where}.per_seed: averages {sum(per_seed) / len(per_seed):.4f}, not dice {dice}")
    validation = data.get("validation_dice")
    if validation is not None and not (_is_number(validation) and 0 <= validation <= 1):
        raise ReportError(f"{where}.validation_dice: must be a number in [0, 1], got {validation!r}")
    per_case = data.get("per_case")
    if per_case is not None:
        _check_per_case(per_case, dice, f"{where}.per_case")
    return Row(
        role,
        model,
        float(dice),
        None if sd is None else float(sd),
        seeds,
        params,
        None if cpu is None else float(cpu),
        shipped,
        None if per_seed is None else tuple(float(v) for v in per_seed),
        per_case,
        None if validation is None else float(validation),
    )


def _check_per_case(per_case: object, dice: float, where: str) -> None:
    """``{run: {case: value in [0, 1]}}``, not empty, every value of every run averaging to ``dice``."""
    if not isinstance(per_case, dict) or not per_case:
        raise ReportError(f"{where}: must be a non-empty object {{run: {{case: Dice}}}}, got {per_case!r}")
    values = []
    for run, cases in per_case.items():
        if not isinstance(cases, dict) or not cases:
            raise ReportError(f"{where}.{run}: must be a non-empty object {{case: Dice}}, got {cases!r}")
        for case, value in cases.items():
            if not (_is_number(value) and 0 <= value <= 1):
                raise ReportError(f"{where}.{run}.{case}: must be a number in [0, 1], got {value!r}")
            values.append(value)
    if abs(sum(values) / len(values) - dice) > 5e-4:
        raise ReportError(f"{where}: its {len(values)} values average {sum(values) / len(values):.4f}, not dice {dice}")


def _check_paired_cases(paired: Paired, baseline: Row, kd: Row, where: str) -> None:
    """The paired difference is what the per-case values of the KD row's runs and the baseline's runs
    of the same name give (checked only where both rows carry ``per_case``)."""
    if baseline.per_case is None or kd.per_case is None:
        return
    runs = [run for run in kd.per_case if run in baseline.per_case]
    if not runs:
        raise ReportError(
            f"{where}: the KD row's runs {sorted(kd.per_case)} and the baseline's {sorted(baseline.per_case)} "
            "have no name in common to pair"
        )
    try:
        by_case = case_differences([baseline.per_case[r] for r in runs], [kd.per_case[r] for r in runs])
    except ValueError as e:
        raise ReportError(f"{where}: per_case of the runs {runs}: {e}") from None
    difference = sum(sum(values) / len(values) for values in by_case.values()) / len(by_case)
    if abs(difference - paired.difference) > 5e-4 or (len(by_case), len(runs)) != (paired.cases, paired.runs):
        raise ReportError(
            f"{where}: {paired.difference} over {paired.cases} case(s) × {paired.runs} run(s), but the rows' "
            f"per_case values give {difference:.4f} over {len(by_case)} case(s) × {len(runs)} run(s)"
        )


def _paired(data: object, where: str) -> Paired:
    """The validated ``paired`` object; ``where`` is ``<file>: paired``."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: must be a JSON object")
    for key in ("difference", "ci95", "cases", "runs"):
        if key not in data:
            raise ReportError(f"{where}.{key}: missing")
    difference, interval = data["difference"], data["ci95"]
    if not _is_number(difference):
        raise ReportError(f"{where}.difference: must be a number, got {difference!r}")
    if not (isinstance(interval, list) and len(interval) == 2 and all(_is_number(v) for v in interval)):
        raise ReportError(f"{where}.ci95: must be [low, high], got {interval!r}")
    if not interval[0] <= difference <= interval[1]:
        raise ReportError(f"{where}.ci95: {interval} does not hold the difference {difference}")
    for key in ("cases", "runs"):
        if not _is_int(data[key]) or data[key] < 1:
            raise ReportError(f"{where}.{key}: must be an integer >= 1, got {data[key]!r}")
    groups = data.get("groups")
    if groups is not None and (not _is_int(groups) or not 1 <= groups <= data["cases"]):
        raise ReportError(f"{where}.groups: must be an integer from 1 to cases ({data['cases']}), got {groups!r}")
    return Paired(float(difference), float(interval[0]), float(interval[1]), data["cases"], data["runs"], groups)


def _latency(data: object, where: str) -> Latency:
    """The validated ``latency`` object; ``where`` is ``<file>: latency``."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: must be a JSON object")
    _check_keys(data, ("volumes", "threads", "rows"), (), f"{where}.")
    if not isinstance(data["volumes"], str) or not data["volumes"].strip():
        raise ReportError(f"{where}.volumes: must be a non-empty string")
    if not _is_int(data["threads"]) or data["threads"] < 1:
        raise ReportError(f"{where}.threads: must be an integer >= 1, got {data['threads']!r}")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise ReportError(f"{where}.rows: must be a non-empty list")
    rows = []
    for i, row in enumerate(data["rows"]):
        at = f"{where}.rows[{i}]"
        if not isinstance(row, dict):
            raise ReportError(f"{at}: must be a JSON object")
        _check_keys(row, LATENCY_KEYS, (), f"{at}.")
        if not isinstance(row["model"], str) or not row["model"].strip():
            raise ReportError(f"{at}.model: must be a non-empty string")
        for key in ("end_to_end_s", "inferer_s"):
            if not _is_number(row[key]) or row[key] <= 0:
                raise ReportError(f"{at}.{key}: must be a number > 0, got {row[key]!r}")
        if not _is_number(row["peak_mib"]) or row["peak_mib"] < 0:
            raise ReportError(f"{at}.peak_mib: must be a number >= 0, got {row['peak_mib']!r}")
        agreement = row["agreement"]
        if agreement is not None and not (_is_number(agreement) and 0 <= agreement <= 1):
            raise ReportError(f"{at}.agreement: must be null or a number in [0, 1], got {agreement!r}")
        rows.append(Timing(row["model"], row["end_to_end_s"], row["inferer_s"], row["peak_mib"], agreement))
    return Latency(data["volumes"], data["threads"], tuple(rows))


def load_results(path: Path, name: str | None = None) -> Results:
    """Read and validate one ``results.json``; ``name`` (default: the path) is how errors call it."""
    name = name or str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{name}: not valid JSON: {e}") from None
    except OSError as e:
        raise ReportError(f"{name}: cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{name}: the top level must be a JSON object")
    _check_keys(data, TOP_KEYS, OPTIONAL_TOP_KEYS, f"{name}: ")
    for key in TOP_KEYS[:-1]:
        if not isinstance(data[key], str) or not data[key].strip():
            raise ReportError(f"{name}: {key}: must be a non-empty string")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise ReportError(f"{name}: rows: must be a non-empty list")
    rows = [_row(r, f"{name}: rows[{i}]") for i, r in enumerate(data["rows"])]
    counts = {role: sum(r.role == role for r in rows) for role in ROLES}
    if counts["teacher"] < 1:
        raise ReportError(f"{name}: rows: no teacher row")
    if counts["baseline"] != 1:
        raise ReportError(f"{name}: rows: expected exactly one baseline row, found {counts['baseline']}")
    if counts["kd"] < 1:
        raise ReportError(f"{name}: rows: no kd row")
    if sum(r.shipped for r in rows) > 1:
        raise ReportError(f"{name}: rows: more than one row is flagged shipped")
    rows.sort(key=lambda r: ROLES.index(r.role))  # stable: each role keeps the file's order
    bundle = path.parent.parent.name
    paired = _paired(data["paired"], f"{name}: paired") if "paired" in data else None
    if paired is not None:
        kd = [r for r in rows if r.role == "kd"]
        shipped = next((r for r in kd if r.shipped), kd[0])
        _check_paired_cases(paired, next(r for r in rows if r.role == "baseline"), shipped, f"{name}: paired")
    others = tuple(
        (key, _paired(value, f"{name}: paired.{key}"))
        for key, value in data.get("paired", {}).items()
        if PAIRING_KEY.fullmatch(key)
    )
    latency = _latency(data["latency"], f"{name}: latency") if "latency" in data else None
    return Results(
        bundle, data["method"], data["dataset"], data["metric"], data["hardware"], tuple(rows), paired, latency, others
    )


def collect(root: Path) -> list[Results]:
    """Every ``bundles/*/docs/results.json`` under ``root``, validated, in sorted path order."""
    paths = sorted(p for p in root.glob(RESULTS_GLOB) if not p.parts[-3].startswith("_"))
    if not paths:
        raise ReportError(f"{root}: no {RESULTS_GLOB} found")
    return [load_results(p, p.relative_to(root).as_posix()) for p in paths]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_dice(row: Row) -> str:
    sd = "" if row.dice_sd is None else f" ± {row.dice_sd:.3f}"
    seeds = f"{row.seeds} seed{'' if row.seeds == 1 else 's'}"
    if row.per_seed is not None and row.seeds > 1:
        seeds += ": " + ", ".join(f"{v:.3f}" for v in row.per_seed)
    return f"{row.dice:.3f}{sd} ({seeds})"


def format_params(params: int | None) -> str:
    return NOT_MEASURED if params is None else f"{params:,}"


def format_seconds(seconds: float | None) -> str:
    return NOT_MEASURED if seconds is None else f"{seconds:.2f}"


def format_delta(value: float) -> str:
    value = round(value, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:+.3f}".replace("-", MINUS)


def format_bound(value: float) -> str:
    """An interval's bound to 3 decimals with the sign of its value (−0.000 for a bound just below 0),
    so the side of 0 an interval ends on stays visible where it only just excludes 0."""
    return f"{MINUS if value < 0 else '+'}{abs(value):.3f}"


def role_cell(row: Row) -> str:
    return ROLE_NAMES[row.role] + (", shipped" if row.shipped else "")


def markdown_table(results: list[Results]) -> str:
    """One table, all methods; method and dataset are written on each method's first row only."""
    lines = [
        "| method | dataset | model | role | Dice (± sd, seeds) | params | CPU s/vol |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for res in results:
        for i, row in enumerate(res.rows):
            method, dataset = (_cell(res.method), _cell(res.dataset)) if i == 0 else ("", "")
            cells = [
                method,
                dataset,
                _cell(row.model),
                role_cell(row),
                format_dice(row),
                format_params(row.params),
                format_seconds(row.cpu_s_per_volume),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delta_lines(results: list[Results]) -> str:
    """One line per method: the KD − baseline difference in Dice (shipped, else first, KD row)."""
    lines = []
    for res in results:
        kd, base = res.main_kd, res.baseline
        which = "shipped KD student" if kd.shipped else "first KD row"
        line = f"- {res.method} (`bundles/{res.bundle}`, {res.metric}): KD {MINUS} baseline = "
        if res.paired is None:
            line += (
                f"{format_delta(kd.dice - base.dice)} ({which} {kd.dice:.3f} vs baseline {base.dice:.3f}; "
                "no paired interval measured yet)"
            )
        else:
            paired = res.paired
            verdict = "excludes 0" if paired.excludes_zero else "includes 0: no difference shown"
            line += (
                f"{format_delta(paired.difference)}, paired over {paired.cases} test cases"
                f"{f' in {paired.groups} groups' if paired.groups else ''} × {paired.runs} run(s), "
                f"95 % CI {format_bound(paired.low)} to {format_bound(paired.high)}: the interval {verdict} "
                f"({which} {kd.dice:.3f} vs baseline {base.dice:.3f})"
            )
        lines.append(line + teacher_gate(res))
    return "\n".join(lines)


def teacher_gate(res: Results) -> str:
    """``; teacher gate on validation: ...`` when the best teacher and the baseline give their
    validation Dice, else ""."""
    teachers = [r.validation_dice for r in res.by_role("teacher") if r.validation_dice is not None]
    if not teachers or res.baseline.validation_dice is None:
        return ""
    teacher, base = max(teachers), res.baseline.validation_dice
    verdict = "passed" if teacher - base >= TEACHER_MARGIN else "NOT passed"
    return (
        f"; teacher gate on validation {verdict}: teacher {teacher:.3f} vs baseline {base:.3f} "
        f"({format_delta(teacher - base)}, the protocol asks ≥ {TEACHER_MARGIN})"
    )


def latency_table(results: list[Results]) -> str:
    """End-to-end CPU inference per volume of every method that measured it ("" when none did)."""
    measured = [res for res in results if res.latency is not None]
    if not measured:
        return ""
    lines = [
        "## End-to-end CPU inference per volume",
        "",
        "Measured by `python -m tools.measure.latency` on real volumes of each method's data set (load, "
        "preprocess, sliding window and network, postprocess, save; median per volume, one process per model). "
        "Speed is relative to the method's teacher; the network share is the sliding window's and network's "
        "part of the whole; agreement is the lowest Dice of any class between a model's label maps and the "
        "PyTorch student's.",
        "",
        "| method | volumes | model | end to end, s | network share | peak MiB | speed vs teacher | agreement |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for res in measured:
        teacher = res.latency.rows[0].end_to_end_s
        for i, row in enumerate(res.latency.rows):
            method, volumes = (
                (_cell(res.method), _cell(f"{res.latency.volumes}, {res.latency.threads} threads"))
                if i == 0
                else ("", "")
            )
            agreement = NOT_MEASURED if row.agreement is None else f"{row.agreement:.4f}"
            cells = [
                method,
                volumes,
                _cell(row.model),
                f"{row.end_to_end_s:.2f}",
                f"{row.inferer_s / row.end_to_end_s:.0%}",
                f"{row.peak_mib:.0f}",
                f"{teacher / row.end_to_end_s:.2f}×",
                agreement,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_case_table(results: list[Results]) -> str:
    """Each test case of every method whose baseline and main KD rows carry per-case values: both
    students' Dice averaged over the paired runs that tested it, and the difference the paired
    interval is built from ("" when no method has them)."""
    measured = [res for res in results if res.baseline.per_case is not None and res.main_kd.per_case is not None]
    if not measured:
        return ""
    lines = [
        "## KD against baseline, per test case",
        "",
        "Each test case's Dice for the baseline and the shipped KD student (else the first KD row), averaged over "
        "the runs (fold and seed) both trained; the paired interval above is taken over these differences.",
        "",
        "| method | test case | runs | baseline | KD | KD − baseline |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for res in measured:
        base, kd = res.baseline.per_case, res.main_kd.per_case
        runs = [run for run in kd if run in base]
        cases = sorted({case for run in runs for case in kd[run]})
        for i, case in enumerate(cases):
            tested = [run for run in runs if case in kd[run]]
            base_mean = sum(base[run][case] for run in tested) / len(tested)
            kd_mean = sum(kd[run][case] for run in tested) / len(tested)
            cells = [
                _cell(res.method) if i == 0 else "",
                _cell(case),
                str(len(tested)),
                f"{base_mean:.3f}",
                f"{kd_mean:.3f}",
                format_delta(kd_mean - base_mean),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pairings_table(results: list[Results]) -> str:
    """Every further pairing of the results files (``paired.<a>_against_<b>``): the arms the bundle docs
    compare besides the shipped student and its baseline ("" when no method has one)."""
    measured = [res for res in results if res.other_pairings]
    if not measured:
        return ""
    lines = [
        "## Every other paired comparison",
        "",
        "Further arms each bundle's `docs/README.md` compares, as `docs/results.json` names them "
        f"(`a_against_b`: a {MINUS} b, paired by test case and run as the KD {MINUS} baseline lines above are; "
        "the arms are described in the bundle's docs).",
        "",
        f"| method | pairing | a {MINUS} b | 95 % CI | test cases × runs | the interval |",
        "|---|---|---:|---|---|---|",
    ]
    for res in measured:
        for i, (key, paired) in enumerate(res.other_pairings):
            cases = f"{paired.cases}{f' in {paired.groups} groups' if paired.groups else ''} × {paired.runs}"
            cells = [
                _cell(res.method) if i == 0 else "",
                f"`{key}`",
                format_delta(paired.difference),
                f"{format_bound(paired.low)} to {format_bound(paired.high)}",
                cases,
                "excludes 0" if paired.excludes_zero else "includes 0",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_md(results: list[Results]) -> str:
    """The whole text of ``docs/results.md``."""
    tables = (latency_table(results), per_case_table(results), pairings_table(results))
    sections = [section for section in tables if section]
    return "\n".join(
        [
            "# Measured results of the collection",
            "",
            "Generated by `python -m tools.measure.collection_report` from `bundles/*/docs/results.json` "
            "(the numbers of each bundle's `docs/README.md`); do not edit by hand. Each method is measured on its "
            "own data set and metric, so compare rows within a method, not across methods. CPU s/vol: inference "
            "time of one test volume; \u2013: not measured.",
            "",
            markdown_table(results),
            "",
            delta_lines(results),
            "",
            f"![{FIGURE_ALT}](results.png)",
            "",
        ]
        + sections
    )


def readme_block(results: list[Results]) -> str:
    """The README block, markers included."""
    return "\n".join(
        [
            START,
            "What distillation gave each method's student (each on its own data set and metric); every row, "
            "with parameters and CPU time, is in [`docs/results.md`](docs/results.md). Regenerate both and the "
            "figure with `python -m tools.measure.collection_report` (`--check` tells whether they are up to date).",
            "",
            delta_lines(results),
            "",
            f"![{FIGURE_ALT}](docs/results.png)",
            END,
        ]
    )


def update_readme(text: str, block: str, name: str = README) -> str:
    """``text`` with the marked block replaced by ``block``, or ``block`` inserted (see the module doc)."""
    n_start, n_end = text.count(START), text.count(END)
    if n_start or n_end:
        if n_start != 1 or n_end != 1 or text.index(START) > text.index(END):
            raise ReportError(f"{name}: expected one {START} followed by one {END}")
        begin, end = text.index(START), text.index(END) + len(END)
        return text[:begin] + block + text[end:]
    lines = text.splitlines(keepends=True)
    insert = _insertion_line(lines)
    if insert is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + f"\n{HEADING}\n\n{block}\n"
    if lines[insert - 1] and not lines[insert - 1].endswith("\n"):
        lines[insert - 1] += "\n"
    return "".join(lines[:insert]) + f"\n{HEADING}\n\n{block}\n" + "".join(lines[insert:])


def _insertion_line(lines: list[str]) -> int | None:
    """Index of the line after the first table of "## What this is" (before "### Layout"), else the
    index of "### Layout", else None (append)."""
    stripped = [line.rstrip("\n") for line in lines]
    layout = next((i for i, line in enumerate(stripped) if line.strip() == "### Layout"), None)
    section = next((i for i, line in enumerate(stripped) if line.strip() == "## What this is"), None)
    if section is not None:
        stop = layout if layout is not None and layout > section else len(lines)
        for i in range(section + 1, stop):
            if stripped[i].startswith("## "):
                break
            if stripped[i].startswith("|"):
                while i < stop and stripped[i].startswith("|"):
                    i += 1
                return i
    return layout


def draw_figure(results: list[Results], out: Path) -> None:
    """Dice against parameters (log x) and against CPU seconds per volume; see the module doc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.4), sharey=True)
    colours = plt.get_cmap("tab10").colors
    style = {
        "teacher": {"marker": "^", "s": 110},
        "baseline": {"marker": "o", "s": 90},
        "kd": {"marker": "*", "s": 150, "alpha": 0.4},
        "reference": {"marker": "D", "s": 55, "alpha": 0.6},
    }
    shipped_style = {"marker": "*", "s": 380, "edgecolors": "black", "linewidths": 0.9, "zorder": 4}
    side = {"teacher": 0, "reference": 0, "baseline": -1, "kd": 1}  # baseline left, KD right of their x
    for ax, field in zip(axes, ("params", "cpu_s_per_volume"), strict=True):
        xs = [getattr(r, field) for res in results for r in res.rows if getattr(r, field) is not None]
        shift = 0.012 * max(xs, default=1.0)

        def dodge(x: float, role: str, log: bool = field == "params", shift: float = shift) -> float:
            return x * 10 ** (0.03 * side[role]) if log else x + shift * side[role]

        for res, colour in zip(results, colours, strict=False):
            points: dict[int, tuple[float, float]] = {}
            for row in res.rows:
                x = getattr(row, field)
                if x is None:
                    continue
                x = dodge(x, row.role)
                points[id(row)] = (x, row.dice)
                kwargs = shipped_style if row is res.main_kd else {"zorder": 3, **style[row.role]}
                ax.scatter([x], [row.dice], color=colour, **kwargs)
                if row.dice_sd is not None:
                    ax.errorbar(
                        [x],
                        [row.dice],
                        yerr=[row.dice_sd],
                        fmt="none",
                        ecolor=colour,
                        capsize=3,
                        alpha=kwargs.get("alpha", 1.0),
                        zorder=2,
                    )
            base, kd = res.baseline, res.main_kd
            if id(base) in points and id(kd) in points:
                ax.annotate(
                    "",
                    xy=points[id(kd)],
                    xytext=points[id(base)],
                    zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.6, "shrinkA": 7, "shrinkB": 11},
                )
        ax.grid(True, which="both", alpha=0.25)
    hardware = sorted({res.hardware for res in results})
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters (log scale)")
    axes[0].set_title("Dice against model size")
    axes[1].set_xlabel("CPU inference time (s per volume" + (f", {hardware[0]})" if len(hardware) == 1 else ")"))
    axes[1].set_title("Dice against CPU inference time")
    axes[1].set_xlim(left=0)
    axes[0].set_ylabel("test Dice (each method's own data set and metric)")
    fig.suptitle("Teacher vs baseline student vs KD student, per method", fontsize=14, y=0.985)
    method_handles = [
        Line2D([], [], color=c, marker="s", linestyle="none", markersize=9, label=res.method)
        for res, c in zip(results, colours, strict=False)
    ]
    grey = "0.35"
    role_handles = [
        Line2D([], [], color=grey, marker="^", linestyle="none", markersize=9, label="teacher"),
        Line2D([], [], color=grey, marker="o", linestyle="none", markersize=8, label="baseline student (no KD)"),
        Line2D(
            [],
            [],
            color=grey,
            marker="*",
            linestyle="none",
            markersize=17,
            markeredgecolor="black",
            label="KD student (shipped)",
        ),
        Line2D([], [], color=grey, marker="*", linestyle="none", markersize=11, alpha=0.4, label="other KD variants"),
    ]
    if any(r.role == "reference" for res in results for r in res.rows):
        role_handles.append(Line2D([], [], color=grey, marker="D", linestyle="none", alpha=0.6, label="reference"))
    role_handles.append(
        Line2D(
            [],
            [],
            color=grey,
            marker=r"$\rightarrow$",
            linestyle="none",
            markersize=16,
            label="baseline \u2192 shipped KD",
        )
    )
    for handles, x, title, columns in (
        (method_handles, 0.06, "method (colour)", 1),
        (role_handles, 0.58, "role (marker)", 2),
    ):
        legend = {"loc": "lower left", "bbox_to_anchor": (x, 0.0), "frameon": False, "fontsize": 9.5}
        fig.legend(handles=handles, title=title, ncol=columns, **legend)
    fig.text(
        0.5,
        0.915,
        "error bars: sd over seeds, where known; students of one size and time drawn slightly apart "
        "(baseline left, KD right); Dice is each method's own metric on its own data set",
        ha="center",
        va="bottom",
        fontsize=9,
        color=grey,
    )
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.25, wspace=0.06)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def check(root: Path, results: list[Results]) -> list[str]:
    """What is out of date under ``root`` (empty when everything is current); writes nothing."""
    problems = []
    md = root / RESULTS_MD
    if not md.is_file() or md.read_text(encoding="utf-8") != results_md(results):
        problems.append(f"{RESULTS_MD} is out of date")
    readme = root / README
    if not readme.is_file():
        problems.append(f"{README} is missing")
    else:
        text = readme.read_text(encoding="utf-8")
        if update_readme(text, readme_block(results)) != text:
            problems.append(f"the {README} block between {START} and {END} is out of date")
    if not (root / RESULTS_PNG).is_file():
        problems.append(f"{RESULTS_PNG} is missing")
    return problems


def write(root: Path, results: list[Results]) -> None:
    readme = root / README
    if not readme.is_file():
        raise ReportError(f"{readme}: not found")
    (root / RESULTS_MD).parent.mkdir(parents=True, exist_ok=True)
    (root / RESULTS_MD).write_text(results_md(results), encoding="utf-8")
    draw_figure(results, root / RESULTS_PNG)
    text = readme.read_text(encoding="utf-8")
    new = update_readme(text, readme_block(results))
    if new != text:
        readme.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="repository root (default: the one holding this script)",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an output is out of date")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        results = collect(root)
        if args.check:
            problems = check(root, results)
            for problem in problems:
                print(f"{problem}: run python -m tools.measure.collection_report", file=sys.stderr)
            if problems:
                return 1
            print(f"{RESULTS_MD}, {RESULTS_PNG} and the {README} block are up to date ({len(results)} bundles)")
            return 0
        write(root, results)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {RESULTS_MD}, {RESULTS_PNG} and the {README} block ({len(results)} bundles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
