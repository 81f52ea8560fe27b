"""Several runs in one report: kept apart by default, pooled only with --pool and equal settings (issue #18)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import main
from reports import load_metric_info, load_results, summary_table, to_markdown, write_report
from reports.html import write_html
from reports.pooling import PoolingError, plan_pooling, run_settings, setting_differences
from tests.reports.test_report_tables import make_run


def _set_config(run: Path, **changes) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path, "run_a")
    b = tmp_path / "run_b"
    shutil.copytree(a, b)
    for run, steps in ((a, 20), (b, 20)):
        _set_config(run, steps=steps, profile="quick", seed=0, run_dir=str(run), device="cpu")
    _set_config(b, seed=1, run_dir=str(b), batch_size=4)  # ignored differences
    return a, b


def _md_rows(md: str, metric: str) -> dict[str, list[str]]:
    block = md.split(f"### {metric} ", 1)[1].split("###", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|") and not ln.startswith("|:--")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


def test_runs_are_kept_apart_by_default(two_runs) -> None:
    df = load_results(list(two_runs))
    summary = summary_table(df)
    assert list(summary.columns)[0] == "run"
    single = summary_table(load_results(two_runs[0]))
    assert summary["n"].sum() == 2 * single["n"].sum() and len(summary) == 2 * len(single)
    assert summary["n"].max() == single["n"].max()  # no cell holds rows of both runs
    rows = _md_rows(to_markdown(summary, load_metric_info(list(two_runs))), "psnr")
    assert list(rows)[1:] == ["fwplus16 [run_a]", "fwplus16 [run_b]", "im2s [run_a]", "im2s [run_b]"]


def test_default_report_says_runs_are_apart_and_shows_settings(two_runs, tmp_path: Path) -> None:
    paths = write_report(list(two_runs), tmp_path / "rep")
    md = paths["table.md"].read_text()
    assert "2 runs kept apart (run_a, run_b)" in md and "--pool" in md
    assert "settings: profile quick, steps 20" in md
    assert "| fwplus16 [run_a] | identity | 4 |" in md  # timing per run too
    assert set(pd.read_csv(paths["table.csv"])["run"]) == {"run_a", "run_b"}


def test_pool_merges_runs_with_equal_settings_and_says_so(two_runs, tmp_path: Path) -> None:
    paths = write_report(list(two_runs), tmp_path / "rep", pool=True)
    md = paths["table.md"].read_text()
    assert "Pooled 2 runs (run_a, run_b)" in md and "settings agree" in md
    assert "items × seeds × 2 pooled runs" in md
    # the copy repeats every (item, method, transform, seed): the note says those items count twice
    assert "rows repeat an (item, method, transform, seed) of another run" in md
    rows = _md_rows(md, "psnr")
    assert "fwplus16" in rows and "fwplus16 [run_a]" not in rows
    assert "run" not in pd.read_csv(paths["table.csv"]).columns


@pytest.mark.parametrize(("where", "key", "value", "shown"), [
    ("config.json", "steps", 10, "steps: run_a 20, run_b 10"),
    ("config.json", "profile", "paper", "profile: run_a quick, run_b paper"),
    ("config.json", "method_params", {"im2s": {"lr": 0.02}}, "method_params.im2s.lr: run_a not recorded, run_b 0.02"),
    ("versions.json", "generator", "another StyleGAN2", "versions.generator: run_a embedded"),
    ("versions.json", "perceptual", "lpips-vgg", "versions.perceptual: run_a stand-in"),
    ("versions.json", "data", "folder:x: 2 images", "versions.data: run_a not recorded, run_b folder:x"),
])
def test_pool_refuses_runs_whose_settings_differ(two_runs, tmp_path: Path, where, key, value, shown) -> None:
    a, b = two_runs
    raw = json.loads((b / where).read_text())
    (b / where).write_text(json.dumps({**raw, key: value}))
    with pytest.raises(PoolingError, match="--pool: runs run_a, run_b differ in") as err:
        write_report([a, b], tmp_path / "rep", pool=True)
    assert shown in str(err.value) and "--force" in str(err.value)
    paths = write_report([a, b], tmp_path / "rep", pool=True, force=True)
    md = paths["table.md"].read_text()
    assert "Pooled with --force although these settings differ: " + shown in md
    html = write_html([a, b], tmp_path / "rep" / "r.html", pool=True, force=True).read_text()
    assert "Pooled with --force although" in html


def test_settings_ignore_where_and_how_much(two_runs) -> None:
    a, b = two_runs
    assert setting_differences([a, b], ["run_a", "run_b"]) == []
    assert "seed" not in run_settings(b) and "run_dir" not in run_settings(b) and "steps" in run_settings(b)
    plan = plan_pooling([a], ["run_a"], pool=True)
    assert not plan.pooled and plan.note() == ""


def test_cli_report_pool_and_force(two_runs, tmp_path: Path) -> None:
    a, b = two_runs
    _set_config(b, steps=10)
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(a), str(b), "--out", str(tmp_path / "r1"), "--no-html"])
    assert result.exit_code == 0, result.output
    assert "fwplus16 [run_b]" in (tmp_path / "r1" / "table.md").read_text()
    result = runner.invoke(main, ["report", str(a), str(b), "--out", str(tmp_path / "r2"), "--pool"])
    assert result.exit_code == 1 and "steps: run_a 20, run_b 10" in result.output
    result = runner.invoke(main, ["report", str(a), str(b), "--out", str(tmp_path / "r3"), "--pool", "--force"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(a), "--force"])
    assert result.exit_code == 2 and "--force goes with --pool" in result.output


def test_method_settings_compare_only_methods_both_runs_have(two_runs) -> None:
    a, b = two_runs
    settings = {"im2s": {"params": {"steps": 20, "lr": 0.01}, "batch_size": 8, "precision": "fp32"}}
    _set_config(a, method_settings=settings)
    _set_config(b, method_settings={**settings, "w": {"params": {"steps": 5}},
                                    "im2s": {**settings["im2s"], "batch_size": 2}})
    assert setting_differences([a, b], ["run_a", "run_b"]) == []  # w only in run_b; batch size never counts
    _set_config(b, method_settings={"im2s": {**settings["im2s"], "params": {"steps": 300, "lr": 0.01}}})
    assert setting_differences([a, b], ["run_a", "run_b"]) == ["method_settings.im2s.params.steps: run_a 20, run_b 300"]
