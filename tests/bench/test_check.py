"""Regression checks (bench.check and ``bench check``) on a fake run directory.

The fake run has two methods, two transforms, four items and metrics of both directions; tests move the
values of one cell by known amounts and check the verdict against hand-computed tolerances.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bench.check import (
    DEFAULT_TOLERANCES,
    FORMAT,
    BaselineError,
    Tolerance,
    check,
    format_table,
    load_baseline,
    make_baseline,
    resolve_tolerance,
    write_baseline,
)
from bench.cli import main

METHODS = ["fwplus16", "im2s"]
TRANSFORMS = ["identity", "rotate:20"]
ITEMS = ["000", "001", "002", "003"]
METRICS = {
    "psnr": {"higher_is_better": True, "range": [0, 100], "available": True},
    "psnr@valid": {"higher_is_better": True, "range": [0, 100], "available": True},
    "ssim": {"higher_is_better": True, "range": [-1, 1], "available": True},
    "mse": {"higher_is_better": False, "range": [0, 1], "available": True},
    "attrnet-lpips": {"higher_is_better": False, "available": True},
    "lpips-alex": {"higher_is_better": False, "available": False, "reason": "AlexNet weights not in the torch cache"},
}
AVAILABLE = [m for m, v in METRICS.items() if v["available"]]
HOW = "bench run --methods fwplus16,im2s --transform rotate:20 --n 4 --steps 3 --seed 0 --device cpu"
CELL = ("im2s", "rotate:20")  # the cell the tests move


def make_run(root: Path, name: str = "run") -> Path:
    run = root / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for method in METHODS:
        for transform in TRANSFORMS:
            for item in ITEMS:
                psnr = (26.0 if method == "fwplus16" else 22.0) + rng.normal(0, 0.5)
                values = {"psnr": psnr, "psnr@valid": psnr + 0.3, "ssim": 0.8 + rng.normal(0, 0.02),
                          "mse": 10 ** (-psnr / 10), "attrnet-lpips": 0.2 + rng.normal(0, 0.01)}
                rows += [{"item": item, "method": method, "transform": transform, "seed": 7, "metric": m,
                          "value": v, "status": "ok"} for m, v in values.items()]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "config.json").write_text(json.dumps({"methods": "fwplus16,im2s", "steps": 3, "run_dir": str(run)}))
    (run / "versions.json").write_text(json.dumps({"packages": {"torch": "2.14.1"}, "git_commit": "abc1234"}))
    return run


def edit_cell(run: Path, metric: str, change, cell=CELL) -> None:
    """Apply ``change(values)`` to the values of one (method, transform, metric) cell."""
    df = pd.read_csv(run / "results.csv", dtype={"item": str})
    sel = (df["method"] == cell[0]) & (df["transform"] == cell[1]) & (df["metric"] == metric)
    df.loc[sel, "value"] = change(df.loc[sel, "value"].to_numpy())
    df.to_csv(run / "results.csv", index=False)


def cell_mean(run: Path, metric: str, cell=CELL) -> float:
    df = pd.read_csv(run / "results.csv")
    sel = (df["method"] == cell[0]) & (df["transform"] == cell[1]) & (df["metric"] == metric)
    return float(np.mean(df.loc[sel, "value"]))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


@pytest.fixture
def baseline(run: Path, tmp_path: Path) -> Path:
    return write_baseline(run, tmp_path / "baseline.json", HOW)


def status_of(result, metric: str, cell=CELL) -> str:
    (row,) = [r for r in result.rows if (r.method, r.transform, r.metric) == (*cell, metric)]
    return row.status


# --- tolerances ----------------------------------------------------------------------------------------


def test_tolerance_is_max_of_abs_and_rel() -> None:
    tol = Tolerance(abs=0.005, rel=0.25)
    assert tol.allowed(0.1) == pytest.approx(0.025)
    assert tol.allowed(-0.004) == pytest.approx(0.005)  # the floor near zero
    assert Tolerance(abs=0.5).describe() == "abs 0.5" and tol.describe() == "abs 0.005|rel 25%"
    with pytest.raises(ValueError, match="'rel' must be a finite number >= 0"):
        Tolerance(rel=-0.1)


def test_default_tolerances_by_metric_family() -> None:
    assert resolve_tolerance("psnr") == Tolerance(abs=0.5)
    assert resolve_tolerance("psnr@valid") == Tolerance(abs=0.5)
    assert resolve_tolerance("ssim").abs == 0.02 and resolve_tolerance("ms-ssim").abs == 0.02
    assert resolve_tolerance("mse").rel == 0.25 and resolve_tolerance("attrnet-lpips").rel == 0.25
    assert resolve_tolerance("edit-attr-drift") == DEFAULT_TOLERANCES["*"]


def test_override_order_exact_then_pattern_then_base_then_defaults() -> None:
    over = {"*": Tolerance(rel=0.5), "psnr": Tolerance(abs=2.0)}
    assert resolve_tolerance("psnr", over) == Tolerance(abs=2.0)  # exact beats an earlier pattern
    assert resolve_tolerance("psnr@valid", over) == Tolerance(abs=2.0)  # masked falls back to its base
    assert resolve_tolerance("ssim", over) == Tolerance(rel=0.5)  # any override beats the defaults
    assert resolve_tolerance("ssim", {"psnr": Tolerance(abs=2.0)}) == Tolerance(abs=0.02)


# --- baseline file -------------------------------------------------------------------------------------


def test_baseline_records_how_means_and_tolerances(run: Path, baseline: Path) -> None:
    raw = json.loads(baseline.read_text())
    assert raw["format"] == FORMAT and raw["how"] == HOW and raw["date"]
    assert raw["config"]["steps"] == 3 and raw["versions"]["git_commit"] == "abc1234"
    assert raw["tolerances"]["psnr"] == {"abs": 0.5} and raw["tolerances"]["mse"] == {"abs": 1e-6, "rel": 0.25}
    entries = {(e["method"], e["transform"], e["metric"]): e for e in raw["entries"]}
    assert len(entries) == len(METHODS) * len(TRANSFORMS) * len(AVAILABLE)  # the unavailable metric is left out
    for (method, transform, metric), e in entries.items():
        assert e["mean"] == pytest.approx(cell_mean(run, metric, (method, transform)), rel=1e-12)
        assert e["n"] == len(ITEMS) and e["higher_is_better"] == METRICS[metric]["higher_is_better"]
    assert load_baseline(baseline).how["how"] == HOW


def test_baseline_passes_against_its_own_run(run: Path, baseline: Path) -> None:
    result = check(run, baseline)
    assert result.passed and {r.status for r in result.rows} == {"ok"}
    assert all(r.delta == 0 for r in result.rows) and result.config_diff == []
    assert format_table(result).splitlines()[-1].startswith("PASS: 20 cells compared (20 ok)")


def test_rewrite_keeps_tolerance_overrides(run: Path, baseline: Path) -> None:
    raw = json.loads(baseline.read_text())
    raw["tolerances"] = {"psnr": {"abs": 2.0}, "edit-*": {"rel": 0.3}}
    raw["entries"][0]["tolerance"] = {"abs": 9.0}
    baseline.write_text(json.dumps(raw))
    again = json.loads(write_baseline(run, baseline, HOW).read_text())
    assert again["tolerances"]["psnr"] == {"abs": 2.0} and again["tolerances"]["edit-*"] == {"rel": 0.3}
    assert again["tolerances"]["psnr@valid"] == {"abs": 2.0}  # resolved through the kept override
    assert again["entries"][0]["tolerance"] == {"abs": 9.0}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw.update(format="something-else"), "format"),
        (lambda raw: raw.update(tolerances={"psnr": {"abs": -1}}), r"tolerances\['psnr'\].*'abs' must be"),
        (lambda raw: raw.update(tolerances={"psnr": {"absolute": 1}}), r"expected \{\"abs\""),
        (lambda raw: raw["entries"][0].pop("mean"), r"entries\[0\]: missing key\(s\) \['mean'\]"),
        (lambda raw: raw["entries"][1].update(mean="high"), r"entries\[1\]: 'mean' must be a finite number"),
        (lambda raw: raw["entries"].append(raw["entries"][0]), "appears twice"),
    ],
)
def test_malformed_baseline_names_file_and_problem(baseline: Path, edit, message: str) -> None:
    raw = json.loads(baseline.read_text())
    edit(raw)
    baseline.write_text(json.dumps(raw))
    with pytest.raises(BaselineError, match=message) as err:
        load_baseline(baseline)
    assert str(baseline) in str(err.value)


def test_unreadable_baseline_and_empty_run(tmp_path: Path, run: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BaselineError, match="bad.json: cannot read"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(BaselineError, match="needs --how"):
        make_baseline(run, "  ")
    empty = make_run(tmp_path, "empty")
    (empty / "results.csv").write_text("item,method,transform,seed,metric,value,status\n")
    with pytest.raises(BaselineError, match="no ok values"):
        make_baseline(empty, HOW)


# --- verdicts ------------------------------------------------------------------------------------------


def test_psnr_lowered_by_1db_is_a_regression(run: Path, baseline: Path) -> None:
    before = cell_mean(run, "psnr")
    edit_cell(run, "psnr", lambda v: v - 1.0)
    result = check(run, baseline)
    assert not result.passed
    assert [(r.method, r.transform, r.metric) for r in result.failures] == [(*CELL, "psnr")]
    (row,) = result.failures
    assert row.status == "REGRESSED" and row.delta == pytest.approx(-1.0) and row.allowed == 0.5
    assert row.baseline == pytest.approx(before) and row.now == pytest.approx(before - 1.0)
    line = next(ln for ln in format_table(result).splitlines() if "REGRESSED" in ln)
    assert line.split()[:3] == ["im2s", "rotate:20", "psnr"] and "-1" in line and "±0.5 (abs 0.5)" in line
    assert format_table(result).splitlines()[-1] == "FAIL: 20 cells compared (19 ok, 1 REGRESSED)"
    assert len(format_table(result, changed_only=True).splitlines()) == 2 + 1 + 1  # head, rule, row, verdict


def test_moves_within_tolerance_pass_and_direction_matters(run: Path, baseline: Path) -> None:
    edit_cell(run, "psnr", lambda v: v - 0.4)  # inside abs 0.5
    edit_cell(run, "mse", lambda v: v * 1.2)  # inside rel 25 %
    assert check(run, baseline).passed
    edit_cell(run, "mse", lambda v: v * 1.1)  # 1.32 x baseline: worse (lower is better) by more than 25 %
    result = check(run, baseline)
    assert [r.metric for r in result.failures] == ["mse"] and status_of(result, "psnr") == "ok"


def test_improvements_are_reported_and_pass(run: Path, baseline: Path) -> None:
    edit_cell(run, "psnr", lambda v: v + 1.0)
    edit_cell(run, "mse", lambda v: v * 0.5)
    edit_cell(run, "attrnet-lpips", lambda v: v * 0.5)
    result = check(run, baseline)
    assert result.passed
    assert [status_of(result, m) for m in ("psnr", "mse", "attrnet-lpips", "ssim")] == [
        "improved", "improved", "improved", "ok"]
    assert "3 improved" in format_table(result)


def test_missing_cell_and_unavailable_metric_fail(run: Path, baseline: Path) -> None:
    df = pd.read_csv(run / "results.csv", dtype={"item": str})
    df[~((df["method"] == CELL[0]) & (df["transform"] == CELL[1]))].to_csv(run / "results.csv", index=False)
    metrics = {**METRICS, "ssim": {**METRICS["ssim"], "available": False, "reason": "window larger than image"}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = check(run, baseline)
    assert not result.passed
    missing = {(r.method, r.transform, r.metric): r for r in result.failures}
    assert {k for k in missing if k[:2] == CELL} == {(*CELL, m) for m in AVAILABLE}
    assert all(r.status == "MISSING" and math.isnan(r.now) for r in missing.values())
    assert missing[("fwplus16", "identity", "ssim")].note == "metric unavailable: window larger than image"
    assert "MISSING (no ok value in the run)" in format_table(result)


def test_fewer_ok_rows_fail_even_if_the_mean_holds(run: Path, baseline: Path) -> None:
    df = pd.read_csv(run / "results.csv", dtype={"item": str})
    sel = (df["item"] == "002") & (df["method"] == CELL[0]) & (df["transform"] == CELL[1])
    df.loc[sel, "status"] = "failed: NaN loss"
    df.to_csv(run / "results.csv", index=False)
    result = check(run, baseline)
    assert {r.status for r in result.failures} <= {"FEWER-ROWS", "REGRESSED"}
    assert {(r.method, r.transform) for r in result.failures} == {CELL}
    assert "n 4 -> 3" in format_table(result)


def test_new_cells_are_listed_but_pass(run: Path, baseline: Path) -> None:
    raw = json.loads(baseline.read_text())
    raw["entries"] = [e for e in raw["entries"] if e["metric"] != "ssim"]
    baseline.write_text(json.dumps(raw))
    result = check(run, baseline)
    assert result.passed and sum(r.status == "new" for r in result.rows) == len(METHODS) * len(TRANSFORMS)


def test_tolerance_override_in_baseline_file(run: Path, baseline: Path) -> None:
    edit_cell(run, "psnr", lambda v: v - 1.0)
    edit_cell(run, "psnr@valid", lambda v: v - 1.0)
    raw = json.loads(baseline.read_text())
    raw["tolerances"] = {"psnr": {"abs": 1.5}}  # psnr@valid falls back to it
    baseline.write_text(json.dumps(raw))
    assert check(run, baseline).passed
    entry = next(e for e in raw["entries"] if (e["method"], e["transform"], e["metric"]) == (*CELL, "psnr"))
    entry["tolerance"] = {"abs": 0.1}  # a per-entry tolerance beats the file's
    baseline.write_text(json.dumps(raw))
    assert [(r.metric, r.status) for r in check(run, baseline).failures] == [("psnr", "REGRESSED")]


def test_changed_direction_and_config_are_reported(run: Path, baseline: Path) -> None:
    (run / "config.json").write_text(json.dumps({"methods": "fwplus16,im2s", "steps": 5}))
    assert check(run, baseline).config_diff == ["steps"]
    assert "differs from the baseline's in ['steps']" in format_table(check(run, baseline))
    (run / "metrics.json").write_text(json.dumps({**METRICS, "mse": {**METRICS["mse"], "higher_is_better": True}}))
    with pytest.raises(BaselineError, match="'mse' changed direction"):
        check(run, baseline)


# --- command line --------------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)], catch_exceptions=False)


def test_cli_write_check_and_fail(run: Path, tmp_path: Path) -> None:
    path = tmp_path / "ci" / "baseline.json"
    no_how = invoke(run, "--baseline", path, "--write-baseline")
    assert no_how.exit_code == 2 and "--how" in no_how.output and not path.exists()
    written = invoke(run, "--baseline", path, "--write-baseline", "--how", HOW)
    assert written.exit_code == 0 and json.loads(path.read_text())["how"] == HOW
    ok = invoke(run, "--baseline", path)
    assert ok.exit_code == 0 and "PASS" in ok.output
    assert ok.output.splitlines()[0].split() == [
        "method", "transform", "metric", "baseline", "now", "delta", "tolerance", "status"]
    edit_cell(run, "psnr", lambda v: v - 1.0)
    bad = invoke(run, "--baseline", path, "--changed-only")
    assert bad.exit_code == 1 and "FAIL" in bad.output
    regressed = [ln.split()[:3] for ln in bad.output.splitlines() if ln.endswith("REGRESSED")]
    assert regressed == [["im2s", "rotate:20", "psnr"]]


def test_cli_bad_inputs_are_clear_errors(run: Path, tmp_path: Path) -> None:
    missing = invoke(run, "--baseline", tmp_path / "nope.json")
    assert missing.exit_code == 1 and "nope.json: cannot read" in missing.output
    not_run = invoke(tmp_path / "empty", "--baseline", tmp_path / "nope.json", "--write-baseline", "--how", HOW)
    assert not_run.exit_code == 1 and "does not exist" in not_run.output
    stray = invoke(run, "--baseline", tmp_path / "b.json", "--how", HOW)
    assert stray.exit_code == 2 and "--write-baseline" in stray.output
