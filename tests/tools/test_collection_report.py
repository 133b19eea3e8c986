"""tools.measure.collection_report: the table, the deltas, the README block, validation, --check, the figure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.helpers import REPO
from tools.measure import collection_report as cr

ALPHA = {
    "method": "Alpha KD (Doe 2020)",
    "dataset": "toy set A, 10 cases",
    "metric": "test Dice (A)",
    "hardware": "2 CPU cores",
    "rows": [
        {"role": "reference", "model": "upper bound", "dice": 0.95, "dice_sd": None, "seeds": 1,
         "params": 100000, "cpu_s_per_volume": 0.25},
        {"role": "kd", "model": "student, variant", "dice": 0.8, "dice_sd": None, "seeds": 1,
         "params": 100000, "cpu_s_per_volume": 0.25},
        {"role": "teacher", "model": "big net", "dice": 0.9, "dice_sd": None, "seeds": 1,
         "params": 2000000, "cpu_s_per_volume": 1.5},
        {"role": "kd", "model": "student, KD", "dice": 0.75, "dice_sd": 0.01, "seeds": 3,
         "params": 100000, "cpu_s_per_volume": 0.25, "shipped": True, "per_seed": [0.74, 0.75, 0.76]},
        {"role": "baseline", "model": "student | no KD", "dice": 0.7, "dice_sd": 0.02, "seeds": 3,
         "params": 100000, "cpu_s_per_volume": 0.25},
    ],
    "paired": {"difference": 0.05, "ci95": [0.01, 0.09], "cases": 10, "runs": 3, "method": "t over test cases"},
}  # fmt: skip
BETA = {
    "method": "Beta transfer",
    "dataset": "toy set B",
    "metric": "test Dice (B)",
    "hardware": "2 CPU cores",
    "rows": [
        {"role": "teacher", "model": "teacher one", "dice": 0.81, "dice_sd": None, "seeds": 1,
         "params": 1234567, "cpu_s_per_volume": 0.1},
        {"role": "teacher", "model": "teacher two", "dice": 0.8, "dice_sd": None, "seeds": 1,
         "params": None, "cpu_s_per_volume": None},
        {"role": "baseline", "model": "student on labels", "dice": 0.612, "dice_sd": None, "seeds": 2,
         "params": 999, "cpu_s_per_volume": 0.126},
        {"role": "kd", "model": "student on pseudo labels", "dice": 0.6, "dice_sd": 0.005, "seeds": 2,
         "params": 999, "cpu_s_per_volume": None},
        {"role": "kd", "model": "student, other", "dice": 0.7, "dice_sd": None, "seeds": 1,
         "params": 999, "cpu_s_per_volume": None},
    ],
}  # fmt: skip

README_TEXT = """# Title

Intro paragraph.

## What this is

Some words.

| bundle | method |
|---|---|
| a | b |

### Layout
- stays as it is

## Later section
Text after.
"""

EXPECTED_TABLE = [
    "| method | dataset | model | role | Dice (± sd, seeds) | params | CPU s/vol |",
    "|---|---|---|---|---:|---:|---:|",
    "| Alpha KD (Doe 2020) | toy set A, 10 cases | big net | teacher | 0.900 (1 seed) | 2,000,000 | 1.50 |",
    "|  |  | student \\| no KD | baseline | 0.700 ± 0.020 (3 seeds) | 100,000 | 0.25 |",
    "|  |  | student, variant | KD | 0.800 (1 seed) | 100,000 | 0.25 |",
    "|  |  | student, KD | KD, shipped | 0.750 ± 0.010 (3 seeds: 0.740, 0.750, 0.760) | 100,000 | 0.25 |",
    "|  |  | upper bound | reference | 0.950 (1 seed) | 100,000 | 0.25 |",
    "| Beta transfer | toy set B | teacher one | teacher | 0.810 (1 seed) | 1,234,567 | 0.10 |",
    "|  |  | teacher two | teacher | 0.800 (1 seed) | – | – |",
    "|  |  | student on labels | baseline | 0.612 (2 seeds) | 999 | 0.13 |",
    "|  |  | student on pseudo labels | KD | 0.600 ± 0.005 (2 seeds) | 999 | – |",
    "|  |  | student, other | KD | 0.700 (1 seed) | 999 | – |",
]
EXPECTED_DELTAS = [
    "- Alpha KD (Doe 2020) (`bundles/alpha_kd`, test Dice (A)): KD − baseline = +0.050, paired over 10 test "
    "cases × 3 run(s), 95 % CI +0.010 to +0.090: the interval excludes 0 (shipped KD student 0.750 vs baseline "
    "0.700)",
    "- Beta transfer (`bundles/beta_transfer`, test Dice (B)): KD − baseline = −0.012 "
    "(first KD row 0.600 vs baseline 0.612; no paired interval measured yet)",
]


def write_results(root: Path, bundle: str, data: dict | str) -> Path:
    path = root / "bundles" / bundle / "docs" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """A repository-like tree: a README and two fake bundles (written out of sorted order)."""
    write_results(tmp_path, "beta_transfer", BETA)
    write_results(tmp_path, "alpha_kd", ALPHA)
    write_results(tmp_path, "_template", ALPHA)  # a template folder: never part of the report
    (tmp_path / "README.md").write_text(README_TEXT)
    return tmp_path


def report(root: Path, *args: str) -> int:
    return cr.main(["--root", str(root), *args])


def test_table_rows_sorted_by_bundle_then_role(tree):
    assert cr.markdown_table(cr.collect(tree)).splitlines() == EXPECTED_TABLE


def test_delta_lines_use_shipped_else_first_kd_row(tree):
    assert cr.delta_lines(cr.collect(tree)).splitlines() == EXPECTED_DELTAS


def test_delta_line_names_the_groups_an_interval_was_taken_over(tree):
    data = json.loads(json.dumps(ALPHA))
    data["paired"]["groups"] = 5  # e.g. two frames of each of 5 patients
    write_results(tree, "alpha_kd", data)
    line = cr.delta_lines(cr.collect(tree)).splitlines()[0]
    assert "paired over 10 test cases in 5 groups × 3 run(s), 95 % CI +0.010 to +0.090" in line


def test_format_delta_has_no_negative_zero():
    assert cr.format_delta(0.7 - 0.7000000001) == "+0.000"
    assert cr.format_delta(-0.0764) == "−0.076"


def test_writes_results_md_figure_and_readme_block(tree):
    assert report(tree) == 0
    md = (tree / "docs" / "results.md").read_text()
    assert "\n".join(EXPECTED_TABLE) in md and "\n".join(EXPECTED_DELTAS) in md
    assert "](results.png)" in md
    png = tree / "docs" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    readme = (tree / "README.md").read_text()
    before, rest = readme.split(cr.START)
    block, after = rest.split(cr.END)
    # inserted after the bundle table of "## What this is", before "### Layout", nothing else changed
    assert before == README_TEXT.split("\n### Layout")[0] + f"\n{cr.HEADING}\n\n"
    assert after == "\n\n### Layout" + README_TEXT.split("\n### Layout")[1]
    assert "python -m tools.measure.collection_report" in block.splitlines()[1]
    assert "(docs/results.md)" in block.splitlines()[1]  # the full table lives there, not in the README
    assert EXPECTED_TABLE[0] not in block and "\n".join(EXPECTED_DELTAS) in block
    assert "](docs/results.png)" in block


def test_readme_block_is_idempotent_and_text_outside_untouched(tree):
    assert report(tree) == 0
    first = (tree / "README.md").read_text()
    assert report(tree) == 0
    assert (tree / "README.md").read_text() == first
    # edit outside the markers and a result: only the block changes
    edited = first.replace("Intro paragraph.", "Intro paragraph, edited.").replace("Text after.", "Other text.")
    (tree / "README.md").write_text(edited)
    data = copy.deepcopy(ALPHA)
    data["rows"][3] |= {"dice": 0.71, "per_seed": [0.70, 0.71, 0.72]}
    del data["paired"]
    write_results(tree, "alpha_kd", data)
    assert report(tree) == 0
    new = (tree / "README.md").read_text()
    assert new.split(cr.START)[0] == edited.split(cr.START)[0]
    assert new.split(cr.END)[1] == edited.split(cr.END)[1]
    assert "KD − baseline = +0.010 (shipped KD student 0.710 vs baseline 0.700; no paired interval" in new
    assert "+0.050" not in new and new.count(cr.START) == 1 and new.count(cr.HEADING) == 1


def test_existing_markers_replaced_in_place(tree):
    text = "# T\n\nabove\n" + cr.START + "\nstale table\n" + cr.END + "\nbelow\n"
    (tree / "README.md").write_text(text)
    assert report(tree) == 0
    new = (tree / "README.md").read_text()
    assert new.startswith("# T\n\nabove\n" + cr.START) and new.endswith(cr.END + "\nbelow\n")
    assert "stale table" not in new and cr.HEADING not in new


def test_unbalanced_markers_are_an_error(tree, capsys):
    (tree / "README.md").write_text("# T\n" + cr.START + "\n")
    assert report(tree) == 2
    assert "README.md: expected one" in capsys.readouterr().err


def test_check_fails_after_edit_and_passes_after_regeneration(tree, capsys):
    assert report(tree, "--check") == 1  # nothing generated yet
    err = capsys.readouterr().err
    assert "docs/results.md is out of date" in err and "README.md block" in err and "docs/results.png is missing" in err
    assert report(tree) == 0
    assert report(tree, "--check") == 0
    capsys.readouterr()

    data = copy.deepcopy(BETA)
    data["rows"][2]["dice"] = 0.65
    write_results(tree, "beta_transfer", data)
    md_before = (tree / "docs" / "results.md").read_text()
    assert report(tree, "--check") == 1
    err = capsys.readouterr().err
    assert "docs/results.md is out of date" in err and "README.md block" in err
    assert (tree / "docs" / "results.md").read_text() == md_before  # --check writes nothing
    assert report(tree) == 0
    assert report(tree, "--check") == 0

    # only the README block stale: only it is named
    readme = tree / "README.md"
    readme.write_text(readme.read_text().replace("vs baseline", "against baseline", 1))
    assert report(tree, "--check") == 1
    err = capsys.readouterr().err
    assert "README.md block" in err and "docs/results.md" not in err
    assert report(tree) == 0

    (tree / "docs" / "results.png").unlink()
    assert report(tree, "--check") == 1
    assert (
        capsys.readouterr().err.strip() == "docs/results.png is missing: run python -m tools.measure.collection_report"
    )


def test_figure_leaves_out_unmeasured_points(tmp_path):
    data = copy.deepcopy(BETA)
    for row in data["rows"]:
        row["cpu_s_per_volume"] = None
    path = write_results(tmp_path, "beta_transfer", data)
    out = tmp_path / "fig" / "f.png"
    cr.draw_figure([cr.load_results(path)], out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def mutate(change):
    data = copy.deepcopy(ALPHA)
    change(data)
    return data


def set_row(i, key, value):
    return lambda d: d["rows"][i].__setitem__(key, value)


def drop_role(role):
    return lambda d: d.__setitem__("rows", [r for r in d["rows"] if r["role"] != role])


FILE = "bundles/alpha_kd/docs/results.json"
LATENCY = {
    "volumes": "3 toy volumes, the first a warm-up",
    "threads": 2,
    "rows": [
        {"model": "teacher (PyTorch)", "end_to_end_s": 1.5, "inferer_s": 1.2, "peak_mib": 300, "agreement": None},
        {"model": "student (PyTorch)", "end_to_end_s": 0.5, "inferer_s": 0.2, "peak_mib": 90.4, "agreement": 1.0},
        {"model": "student (ONNX Runtime)", "end_to_end_s": 0.4, "inferer_s": 0.1, "peak_mib": 80, "agreement": 0.995},
    ],
}


def with_latency(change):
    """A mutation adding ``LATENCY`` to the results, then applying ``change`` to it."""

    def apply(data: dict) -> None:
        data["latency"] = copy.deepcopy(LATENCY)
        change(data["latency"])

    return apply


# two test cases, two seeds: baseline mean 0.7, KD mean 0.75; case c1 +0.1 in both seeds, c2 0 -> +0.05
PER_CASE = {
    4: {"f0_s0": {"c1": 0.6, "c2": 0.8}, "f0_s1": {"c1": 0.7, "c2": 0.7}},  # the baseline row
    3: {"f0_s0": {"c1": 0.7, "c2": 0.8}, "f0_s1": {"c1": 0.8, "c2": 0.7}},  # the shipped KD row
}


def with_per_case(change=lambda data: None):
    """A mutation giving the baseline and shipped KD rows ``PER_CASE`` (and ``paired`` its counts),
    then applying ``change``."""

    def apply(data: dict) -> None:
        for row, runs in PER_CASE.items():
            data["rows"][row]["per_case"] = copy.deepcopy(runs)
        data["paired"].update(cases=2, runs=2)
        change(data)

    return apply


def section_rows(text: str, heading: str) -> list[str]:
    """The table lines (header row included, separator left out) of ``results.md``'s section ``heading``,
    up to the next section."""
    section = text[text.index(heading) :].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_per_case_values_are_tabled_and_give_the_paired_difference(tree):
    write_results(tree, "alpha_kd", mutate(with_per_case()))
    text = cr.results_md(cr.collect(tree))
    rows = section_rows(text, "## KD against baseline, per test case")
    assert rows[1:] == [
        "| Alpha KD (Doe 2020) | c1 | 2 | 0.650 | 0.750 | +0.100 |",
        "|  | c2 | 2 | 0.750 | 0.750 | +0.000 |",
    ]
    write_results(tree, "alpha_kd", ALPHA)  # no per-case values: no section
    assert "per test case" not in cr.results_md(cr.collect(tree))


def test_every_other_pairing_is_tabled_with_the_sign_of_its_bounds(tree):
    def pairings(data):
        data["paired"]["variant_against_baseline"] = {
            "difference": -0.039,
            "ci95": [-0.0773, -0.0004],
            "cases": 4,
            "runs": 3,
            "per_case": {"c1": -0.04},
        }
        data["paired"]["variant_against_teacher"] = {
            "difference": 0.002,
            "ci95": [-0.01, 0.014],
            "cases": 20,
            "groups": 10,
            "runs": 1,
        }

    write_results(tree, "alpha_kd", mutate(pairings))
    text = cr.results_md(cr.collect(tree))
    rows = section_rows(text, "## Every other paired comparison")
    assert rows[1:] == [
        "| Alpha KD (Doe 2020) | `variant_against_baseline` | −0.039 | −0.077 to −0.000 | 4 × 3 | excludes 0 |",
        "|  | `variant_against_teacher` | +0.002 | −0.010 to +0.014 | 20 in 10 groups × 1 | includes 0 |",
    ]
    write_results(tree, "alpha_kd", ALPHA)  # the shipped student's pairing alone: no section
    assert "Every other paired comparison" not in cr.results_md(cr.collect(tree))


def test_the_teacher_gate_is_judged_on_validation_where_the_rows_give_it(tree):
    def gate(teacher: float, baseline: float) -> str:
        data = mutate(set_row(2, "validation_dice", teacher))  # row 2: the teacher
        data["rows"][4]["validation_dice"] = baseline  # row 4: the baseline
        write_results(tree, "alpha_kd", data)
        return cr.delta_lines(cr.collect(tree)).splitlines()[0].removeprefix(EXPECTED_DELTAS[0])

    assert gate(0.8, 0.78) == (
        "; teacher gate on validation NOT passed: teacher 0.800 vs baseline 0.780 (+0.020, the protocol asks ≥ 0.05)"
    )
    assert gate(0.8, 0.7).startswith("; teacher gate on validation passed: teacher 0.800 vs baseline 0.700 (+0.100")
    write_results(tree, "alpha_kd", ALPHA)  # no validation Dice: nothing said
    assert cr.delta_lines(cr.collect(tree)).splitlines()[0] == EXPECTED_DELTAS[0]


def test_the_latency_table_gives_each_model_s_speed_against_its_teacher(tree):
    write_results(tree, "alpha_kd", {**ALPHA, "latency": LATENCY})
    text = cr.results_md(cr.collect(tree))
    rows = section_rows(text, "## End-to-end CPU inference per volume")
    assert rows[1:] == [
        "| Alpha KD (Doe 2020) | 3 toy volumes, the first a warm-up, 2 threads | teacher (PyTorch) | 1.50 | 80% "
        "| 300 | 1.00× | – |",
        "|  |  | student (PyTorch) | 0.50 | 40% | 90 | 3.00× | 1.0000 |",
        "|  |  | student (ONNX Runtime) | 0.40 | 25% | 80 | 3.75× | 0.9950 |",
    ]
    write_results(tree, "alpha_kd", ALPHA)  # no method measured it: no section
    assert "End-to-end CPU inference" not in cr.results_md(cr.collect(tree))


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"method": "x", "rows": [', f"{FILE}: not valid JSON: "),
        ("[1, 2]", f"{FILE}: the top level must be a JSON object"),
        (mutate(lambda d: d.pop("metric")), f"{FILE}: metric: missing"),
        (mutate(lambda d: d.__setitem__("note", "x")), f"{FILE}: note: unknown field"),
        (mutate(lambda d: d.__setitem__("rows", [])), f"{FILE}: rows: must be a non-empty list"),
        (mutate(drop_role("teacher")), f"{FILE}: rows: no teacher row"),
        (mutate(drop_role("baseline")), f"{FILE}: rows: expected exactly one baseline row, found 0"),
        (mutate(set_row(0, "role", "baseline")), f"{FILE}: rows: expected exactly one baseline row, found 2"),
        (mutate(drop_role("kd")), f"{FILE}: rows: no kd row"),
        (mutate(set_row(1, "role", "student")), f"{FILE}: rows[1].role: unknown role 'student'"),
        (mutate(set_row(2, "dice", 1.2)), f"{FILE}: rows[2].dice: 1.2 is outside [0, 1]"),
        (mutate(set_row(2, "dice", -0.1)), f"{FILE}: rows[2].dice: -0.1 is outside [0, 1]"),
        (mutate(set_row(2, "dice", "0.9")), f"{FILE}: rows[2].dice: must be a number"),
        (mutate(set_row(4, "params", 0)), f"{FILE}: rows[4].params: must be null or a positive integer, got 0"),
        (mutate(set_row(4, "params", -5)), f"{FILE}: rows[4].params: must be null or a positive integer, got -5"),
        (mutate(set_row(4, "cpu_s_per_volume", 0)), f"{FILE}: rows[4].cpu_s_per_volume: must be null or a positive"),
        (mutate(set_row(4, "seeds", 0)), f"{FILE}: rows[4].seeds: must be an integer >= 1"),
        (mutate(set_row(4, "dice_sd", -0.01)), f"{FILE}: rows[4].dice_sd: must be null or a number in [0, 1]"),
        (mutate(lambda d: d["rows"][0].pop("params")), f"{FILE}: rows[0].params: missing"),
        (mutate(set_row(0, "dice_std", 0.1)), f"{FILE}: rows[0].dice_std: unknown field"),
        (mutate(set_row(2, "shipped", True)), f"{FILE}: rows[2].shipped: only a kd row can be the shipped student"),
        (mutate(set_row(1, "shipped", True)), f"{FILE}: rows: more than one row is flagged shipped"),
        (mutate(set_row(3, "per_seed", [0.75, 0.75])), f"{FILE}: rows[3].per_seed: must be a list of 3 number(s)"),
        (mutate(set_row(3, "per_seed", [0.7, 0.7, 0.7])), f"{FILE}: rows[3].per_seed: averages 0.7000, not dice"),
        (mutate(lambda d: d["paired"].pop("runs")), f"{FILE}: paired.runs: missing"),
        (mutate(lambda d: d["paired"].__setitem__("ci95", [0.06, 0.09])), f"{FILE}: paired.ci95: [0.06, 0.09] does"),
        (mutate(lambda d: d["paired"].__setitem__("cases", 0)), f"{FILE}: paired.cases: must be an integer >= 1"),
        (mutate(lambda d: d["paired"].__setitem__("groups", 11)), f"{FILE}: paired.groups: must be an integer from 1"),
        (
            mutate(lambda d: d["paired"].__setitem__("variant_against_baseline", {"difference": 0.1, "cases": 10})),
            f"{FILE}: paired.variant_against_baseline.ci95: missing",
        ),
        (mutate(set_row(2, "validation_dice", 1.5)), f"{FILE}: rows[2].validation_dice: must be a number in [0, 1]"),
        (mutate(set_row(4, "per_case", {})), f"{FILE}: rows[4].per_case: must be a non-empty object"),
        (
            mutate(with_per_case(lambda d: d["rows"][4]["per_case"]["f0_s0"].__setitem__("c1", 1.2))),
            f"{FILE}: rows[4].per_case.f0_s0.c1: must be a number in [0, 1], got 1.2",
        ),
        (
            mutate(with_per_case(lambda d: d["rows"][4]["per_case"]["f0_s0"].__setitem__("c1", 0.5))),
            f"{FILE}: rows[4].per_case: its 4 values average 0.6750, not dice 0.7",
        ),
        (
            mutate(with_per_case(lambda d: d["paired"].__setitem__("difference", 0.06))),
            f"{FILE}: paired: 0.06 over 2 case(s) × 2 run(s), but the rows' per_case values give 0.0500 over 2",
        ),
        (
            mutate(with_per_case(lambda d: d["rows"][3].__setitem__("per_case", {"f1_s0": {"c1": 0.75}}))),
            f"{FILE}: paired: the KD row's runs ['f1_s0'] and the baseline's ['f0_s0', 'f0_s1'] have no name",
        ),
        (
            mutate(
                with_per_case(
                    lambda d: d["rows"][3]["per_case"]["f0_s0"].update(c3=d["rows"][3]["per_case"]["f0_s0"].pop("c2"))
                )
            ),
            f"{FILE}: paired: per_case of the runs ['f0_s0', 'f0_s1']: run pair 0: the baseline tested ['c1', 'c2']",
        ),
        (mutate(with_latency(lambda t: t.pop("volumes"))), f"{FILE}: latency.volumes: missing"),
        (mutate(with_latency(lambda t: t.__setitem__("rows", []))), f"{FILE}: latency.rows: must be a non-empty list"),
        (
            mutate(with_latency(lambda t: t["rows"][1].__setitem__("inferer_s", 0))),
            f"{FILE}: latency.rows[1].inferer_s: must be a number > 0, got 0",
        ),
        (
            mutate(with_latency(lambda t: t["rows"][1].__setitem__("agreement", 1.5))),
            f"{FILE}: latency.rows[1].agreement: must be null or a number in [0, 1], got 1.5",
        ),
    ],
)
def test_validation_errors_name_file_and_field(tree, capsys, data, message):
    write_results(tree, "alpha_kd", data)
    with pytest.raises(cr.ReportError) as err:
        cr.collect(tree)
    assert str(err.value).startswith(message)
    # the command reports it and writes nothing
    assert report(tree) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tree / "docs").exists() and (tree / "README.md").read_text() == README_TEXT


def test_no_results_files_is_an_error(tmp_path, capsys):
    (tmp_path / "README.md").write_text(README_TEXT)
    assert report(tmp_path) == 2
    assert "no bundles/*/docs/results.json found" in capsys.readouterr().err


def test_real_bundles_are_valid_and_docs_in_sync():
    results = cr.collect(REPO)
    bundles = {p.name for p in (REPO / "bundles").iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert {r.bundle for r in results} == bundles
    assert all(sum(row.shipped for row in r.rows) == 1 for r in results)
    assert cr.main(["--check"]) == 0
